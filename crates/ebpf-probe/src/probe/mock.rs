//! An in-memory [`SampleSource`] for tests of the user side (no root, no kernel). It mimics the
//! BPF program's rules: a sample of an unknown pid marks it pending and reports it once; pending
//! and not-profiled pids are not counted; stacks the pid's configuration does not ask for are
//! dropped; an exit is reported only for pids the source knows. Tests drive it through the
//! cloneable [`MockHandle`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::{
    stack_samples, Collection, LostCounters, OffCpuCollection, OffCpuThreshold, PidConfig,
    ProbeError, ProbeEvent, SampleCounters, SampleSource, StackCounts,
};

#[derive(Debug, Default)]
struct State {
    configs: HashMap<u32, PidConfig>,
    pending: HashSet<u32>,
    counts: StackCounts,
    lost: LostCounters,
    counters: SampleCounters,
    collects: usize,
    fail_next_collect: Option<String>,
    /// Off-CPU values of the interval (estimated nanoseconds, as the probe reports them).
    off_cpu: StackCounts,
    off_cpu_threshold: OffCpuThreshold,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    events: UnboundedSender<ProbeEvent>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The [`SampleSource`] half, handed to the code under test.
#[derive(Debug)]
pub struct MockSource {
    inner: Arc<Inner>,
    events: Option<UnboundedReceiver<ProbeEvent>>,
}

/// The test's half: feeds samples and exits, inspects what the code under test configured.
#[derive(Debug, Clone)]
pub struct MockHandle {
    inner: Arc<Inner>,
}

impl MockSource {
    /// A new source and the handle that drives it.
    pub fn new() -> (MockSource, MockHandle) {
        let (tx, rx) = unbounded_channel();
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            events: tx,
        });
        (
            MockSource {
                inner: Arc::clone(&inner),
                events: Some(rx),
            },
            MockHandle { inner },
        )
    }
}

impl SampleSource for MockSource {
    fn set_pid_config(&mut self, pid: u32, config: PidConfig) -> Result<(), ProbeError> {
        let mut state = self.inner.state();
        state.pending.remove(&pid);
        state.configs.insert(pid, config);
        Ok(())
    }

    fn remove_pid(&mut self, pid: u32) -> Result<(), ProbeError> {
        let mut state = self.inner.state();
        state.pending.remove(&pid);
        state.configs.remove(&pid);
        Ok(())
    }

    fn collect(&mut self) -> Result<Collection, ProbeError> {
        let mut state = self.inner.state();
        state.collects += 1;
        if let Some(message) = state.fail_next_collect.take() {
            return Err(ProbeError::Map {
                map: "counts0",
                source: message.into(),
            });
        }
        let samples = stack_samples(std::mem::take(&mut state.counts));
        let off_cpu = OffCpuCollection {
            threshold: state.off_cpu_threshold,
            samples: stack_samples(std::mem::take(&mut state.off_cpu)),
            ..OffCpuCollection::default()
        };
        Ok(Collection {
            samples,
            off_cpu,
            lost: std::mem::take(&mut state.lost),
            counters: std::mem::take(&mut state.counters),
            duration: Duration::ZERO,
            ..Collection::default()
        })
    }

    fn take_events(&mut self) -> Option<UnboundedReceiver<ProbeEvent>> {
        self.events.take()
    }

    fn pending_pids(&self) -> Result<Vec<u32>, ProbeError> {
        Ok(MockHandle {
            inner: Arc::clone(&self.inner),
        }
        .pending())
    }

    fn set_off_cpu_threshold(&mut self, threshold: OffCpuThreshold) -> Result<(), ProbeError> {
        self.inner.state().off_cpu_threshold = threshold;
        Ok(())
    }
}

impl MockHandle {
    /// `count` samples of `pid` with these stacks (leaf first), treated as the kernel would.
    pub fn sample(&self, pid: u32, user: &[u64], kernel: &[u64], count: u64) {
        let mut state = self.inner.state();
        match state.configs.get(&pid).copied() {
            None => {
                state.counters.pending += count;
                if state.pending.insert(pid) {
                    let _ = self.inner.events.send(ProbeEvent::UnknownPid(pid));
                }
            }
            Some(config) if !config.profile => state.counters.ignored += count,
            Some(config) => {
                let user = if config.user {
                    user.to_vec()
                } else {
                    Vec::new()
                };
                let kernel = if config.kernel {
                    kernel.to_vec()
                } else {
                    Vec::new()
                };
                state.counters.counted += count;
                *state.counts.entry((pid, user, kernel, None)).or_default() += count;
            }
        }
    }

    /// `nanos` of off-CPU time of `pid` with these stacks, counted only for a profiled pid
    /// (with the stacks its configuration asks for) while the threshold is above 0; an
    /// unknown pid is reported as by [`MockHandle::sample`].
    pub fn off_cpu(&self, pid: u32, user: &[u64], kernel: &[u64], nanos: u64) {
        let mut state = self.inner.state();
        if state.off_cpu_threshold.is_off() {
            return;
        }
        match state.configs.get(&pid).copied() {
            None => {
                if state.pending.insert(pid) {
                    let _ = self.inner.events.send(ProbeEvent::UnknownPid(pid));
                }
            }
            Some(config) if config.profile => {
                let user = if config.user {
                    user.to_vec()
                } else {
                    Vec::new()
                };
                let kernel = if config.kernel {
                    kernel.to_vec()
                } else {
                    Vec::new()
                };
                *state.off_cpu.entry((pid, user, kernel, None)).or_default() += nanos;
            }
            Some(_) => {}
        }
    }

    /// The off-CPU threshold the code under test set.
    pub fn off_cpu_threshold(&self) -> OffCpuThreshold {
        self.inner.state().off_cpu_threshold
    }

    /// The process exits: reported if the source knew it (configured or pending).
    pub fn exit(&self, pid: u32) {
        let mut state = self.inner.state();
        let known = state.configs.remove(&pid).is_some() | state.pending.remove(&pid);
        if known {
            let _ = self.inner.events.send(ProbeEvent::PidExit(pid));
        }
    }

    /// The process calls exec: reported if the source knows it.
    pub fn exec(&self, pid: u32) {
        let state = self.inner.state();
        if state.configs.contains_key(&pid) || state.pending.contains(&pid) {
            let _ = self.inner.events.send(ProbeEvent::PidExec(pid));
        }
    }

    /// Adds losses to the next collection.
    pub fn lose(&self, lost: LostCounters) {
        let mut state = self.inner.state();
        let total = &mut state.lost;
        total.counts_map_full += lost.counts_map_full;
        total.stack_collisions += lost.stack_collisions;
        total.user_stack_errors += lost.user_stack_errors;
        total.kernel_stack_errors += lost.kernel_stack_errors;
        total.missing_stacks += lost.missing_stacks;
        total.events += lost.events;
        total.pid_map_full += lost.pid_map_full;
    }

    /// Makes the next `collect` fail with a map error carrying `message`.
    pub fn fail_next_collect(&self, message: &str) {
        self.inner.state().fail_next_collect = Some(message.to_string());
    }

    /// The configuration the code under test gave `pid`.
    pub fn pid_config(&self, pid: u32) -> Option<PidConfig> {
        self.inner.state().configs.get(&pid).copied()
    }

    /// Pids reported as unknown and not answered yet, sorted.
    pub fn pending(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.inner.state().pending.iter().copied().collect();
        pids.sort_unstable();
        pids
    }

    /// How many times `collect` was called.
    pub fn collects(&self) -> usize {
        self.inner.state().collects
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::StackSample;

    const PROFILE_ALL: PidConfig = PidConfig {
        profile: true,
        user: true,
        kernel: true,
    };

    #[test]
    fn mimics_the_kernel_rules() {
        let (mut source, handle) = MockSource::new();
        let mut events = source.take_events().unwrap();
        assert!(source.take_events().is_none());

        handle.sample(10, &[1, 2], &[0xffff_ffff_8100_0000], 3);
        handle.sample(10, &[1, 2], &[], 2);
        assert_eq!(events.try_recv().unwrap(), ProbeEvent::UnknownPid(10));
        assert!(events.try_recv().is_err(), "reported once");
        assert_eq!(handle.pending(), vec![10]);
        assert_eq!(source.pending_pids().unwrap(), vec![10]);
        let c = source.collect().unwrap();
        assert!(c.samples.is_empty());
        assert_eq!(c.counters.pending, 5);

        source
            .set_pid_config(
                10,
                PidConfig {
                    profile: true,
                    user: true,
                    kernel: false,
                },
            )
            .unwrap();
        source
            .set_pid_config(
                11,
                PidConfig {
                    profile: false,
                    ..PROFILE_ALL
                },
            )
            .unwrap();
        assert!(handle.pending().is_empty());
        handle.sample(10, &[1, 2], &[0xffff_ffff_8100_0000], 3);
        handle.sample(10, &[1, 2], &[], 2);
        handle.sample(11, &[5], &[], 4);
        let c = source.collect().unwrap();
        assert_eq!(
            c.samples,
            vec![StackSample {
                pid: 10,
                user: vec![1, 2],
                kernel: vec![],
                count: 5,
                user_end: None,
            }]
        );
        assert_eq!(c.counters.ignored, 4);
        assert!(
            source.collect().unwrap().samples.is_empty(),
            "collect clears"
        );

        handle.exec(10);
        handle.exec(98);
        assert_eq!(events.try_recv().unwrap(), ProbeEvent::PidExec(10));
        assert!(events.try_recv().is_err(), "unknown pid 98 execs silently");
        handle.exit(10);
        handle.exit(99);
        assert_eq!(events.try_recv().unwrap(), ProbeEvent::PidExit(10));
        assert!(events.try_recv().is_err(), "unknown pid 99 exits silently");
        assert_eq!(handle.pid_config(10), None);
        assert_eq!(handle.pid_config(11).map(|c| c.profile), Some(false));

        source.remove_pid(11).unwrap();
        handle.sample(11, &[5], &[], 1);
        assert_eq!(events.try_recv().unwrap(), ProbeEvent::UnknownPid(11));

        handle.lose(LostCounters {
            counts_map_full: 2,
            ..Default::default()
        });
        handle.fail_next_collect("boom");
        let err = source.collect().unwrap_err();
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert!(cause.is_some_and(|c| c.contains("boom")), "{err:?}");
        assert_eq!(source.collect().unwrap().lost.counts_map_full, 2);
        assert_eq!(handle.collects(), 5);
    }
}
