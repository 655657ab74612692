//! The counters and gauges of `pyroscope.ebpf`: samples, losses, profiles sent, and how the
//! in-kernel table walks of user stacks ended (`pyroscope_ebpf_unwind_*`).

use ebpf_probe::probe::WalkEnd;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// The component's own counters.
#[derive(Debug, Clone, Default)]
pub(super) struct Metrics {
    pub(super) samples: Counter,
    pub(super) lost_samples: Counter,
    pub(super) profiles: Counter,
    pub(super) unwind: UnwindMetrics,
    pub(super) off_cpu: super::offcpu::OffCpuMetrics,
}

/// `pyroscope_ebpf_unwind_*`: how the in-kernel table walks of user stacks ended, and what the
/// kernel holds for them.
#[derive(Debug, Clone, Default)]
pub(super) struct UnwindMetrics {
    walks: Family<Vec<(String, String)>, Counter>,
    frame_pointer_walks: Counter,
    stack_collisions: Counter,
    stack_map_full: Counter,
    reread_requests: Counter,
    python_frames: Counter,
    python_errors: Family<Vec<(String, String)>, Counter>,
    python_processes: Gauge,
    processes: Gauge,
    tables: Gauge,
    rows: Gauge,
    mappings_frame_pointer: Gauge,
}

impl UnwindMetrics {
    pub(super) fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "pyroscope_ebpf_unwind_python_frames",
            "Python frames recorded by the table walk (CPython function, file, line)",
            self.python_frames.clone(),
        );
        r.register(
            "pyroscope_ebpf_unwind_python_errors",
            "Walks whose Python frames stopped early, by reason (thread state not found, frame unreadable)",
            self.python_errors.clone(),
        );
        r.register(
            "pyroscope_ebpf_unwind_python_processes",
            "CPython processes whose Python frames the kernel records",
            self.python_processes.clone(),
        );
        r.register(
            "pyroscope_ebpf_unwind_walks",
            "User stacks walked in the kernel with unwind tables, by how the walk ended (reason)",
            self.walks.clone(),
        );
        r.register(
            "pyroscope_ebpf_unwind_frame_pointer_walks",
            "Table walks that took at least one frame-pointer step (code without unwind tables)",
            self.frame_pointer_walks.clone(),
        );
        r.register(
            "pyroscope_ebpf_unwind_stack_collisions",
            "Walked user stacks whose hash was taken by another stack (sent whole instead)",
            self.stack_collisions.clone(),
        );
        r.register(
            "pyroscope_ebpf_unwind_stack_map_full",
            "Walked user stacks that did not fit in the stack store (sent whole instead)",
            self.stack_map_full.clone(),
        );
        r.register(
            "pyroscope_ebpf_unwind_reread_requests",
            "Requests from the kernel to re-read a process's mappings (a pc outside all of them)",
            self.reread_requests.clone(),
        );
        r.register(
            "pyroscope_ebpf_unwind_processes",
            "Processes whose mappings the kernel walks with unwind tables",
            self.processes.clone(),
        );
        r.register(
            "pyroscope_ebpf_unwind_tables",
            "Unwind tables (one per executable file) loaded in the kernel",
            self.tables.clone(),
        );
        r.register(
            "pyroscope_ebpf_unwind_rows",
            "Unwind table rows in use in the kernel (8 bytes each)",
            self.rows.clone(),
        );
        r.register(
            "pyroscope_ebpf_unwind_mappings_frame_pointer",
            "Executable mappings walked with frame pointers (no file, no unwind tables, no room)",
            self.mappings_frame_pointer.clone(),
        );
    }

    pub(super) fn observe(&self, c: &ebpf_probe::probe::Collection) {
        for end in WalkEnd::ALL {
            let n = c.unwind.ended(end);
            if n > 0 {
                self.walks
                    .get_or_create(&vec![("reason".to_string(), end.name().to_string())])
                    .inc_by(n);
            }
        }
        self.frame_pointer_walks.inc_by(c.unwind.frame_pointer_used);
        self.stack_collisions.inc_by(c.unwind.ustack_collisions);
        self.stack_map_full.inc_by(c.unwind.ustack_full);
        self.reread_requests.inc_by(c.unwind.reread_requests);
        self.python_frames.inc_by(c.unwind.python_frames);
        for (reason, n) in [
            ("no_thread_state", c.unwind.python_no_thread),
            ("read_failed", c.unwind.python_read_failed),
        ] {
            if n > 0 {
                self.python_errors
                    .get_or_create(&vec![("reason".to_string(), reason.to_string())])
                    .inc_by(n);
            }
        }
        let gauge = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.processes, c.unwind_maps.processes);
        gauge(&self.python_processes, c.unwind_maps.python_processes);
        gauge(&self.tables, c.unwind_maps.tables);
        gauge(&self.rows, c.unwind_maps.rows_used);
        gauge(
            &self.mappings_frame_pointer,
            c.unwind_maps.mappings_frame_pointer,
        );
    }
}

impl Metrics {
    pub(super) fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "pyroscope_ebpf_samples",
            "CPU samples collected from the kernel",
            self.samples.clone(),
        );
        r.register(
            "pyroscope_ebpf_lost_samples",
            "CPU samples lost or degraded in the kernel (full maps, stack collisions, stack errors)",
            self.lost_samples.clone(),
        );
        r.register(
            "pyroscope_ebpf_profiles",
            "Profiles sent to the receivers in forward_to",
            self.profiles.clone(),
        );
        self.unwind.register(r);
        self.off_cpu.register(r);
    }
}
