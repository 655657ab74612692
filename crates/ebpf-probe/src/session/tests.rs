//! The session driven by the mock source: decisions, exits and execs before a collect, pid
//! reuse, target changes and the resync after lost events.

use std::collections::HashMap;

use super::*;
use crate::probe::mock::{MockHandle, MockSource};
use crate::probe::LostCounters;

/// A policy with a fixed pid -> target table that records every call.
#[derive(Debug, Default)]
struct Table {
    targets: HashMap<u32, &'static str>,
    inspected: Vec<u32>,
    started: Vec<u32>,
    forgotten: Vec<(u32, Forget)>,
}

impl Table {
    fn with(targets: &[(u32, &'static str)]) -> Self {
        Table {
            targets: targets.iter().copied().collect(),
            ..Table::default()
        }
    }
}

impl Policy for Table {
    type Target = &'static str;
    /// How many times the pid was inspected when this was read.
    type Process = usize;

    fn inspect(&mut self, pid: u32) -> usize {
        self.inspected.push(pid);
        self.inspected.iter().filter(|&&p| p == pid).count()
    }

    fn decide(&mut self, pid: u32, _process: &usize) -> Decision<&'static str> {
        Decision {
            target: self.targets.get(&pid).copied(),
            user: true,
            kernel: false,
        }
    }

    fn started(&mut self, pid: u32) {
        self.started.push(pid);
    }

    fn forget(&mut self, pid: u32, what: Forget) {
        self.forgotten.push((pid, what));
    }
}

struct Setup {
    session: Session<Table>,
    source: MockSource,
    mock: MockHandle,
    policy: Table,
}

fn setup(targets: &[(u32, &'static str)]) -> Setup {
    let (mut source, mock) = MockSource::new();
    let mut session = Session::new();
    session.attach(&mut source);
    Setup {
        session,
        source,
        mock,
        policy: Table::with(targets),
    }
}

/// (pid, target, retired, count) of every attributed sample, sorted, and the unattributed
/// count. Also checks that nothing is forgotten while samples are handed out.
type Attributed = Vec<(u32, &'static str, bool, u64)>;

impl Setup {
    fn events(&mut self) -> bool {
        self.session
            .handle_events(&mut self.source, &mut self.policy)
    }

    fn collect(&mut self) -> (Attributed, u64) {
        let forgotten_before = self.policy.forgotten.len();
        let mut out = Vec::new();
        let collected = self
            .session
            .collect(
                &mut self.source,
                &mut self.policy,
                |policy, _, sample, owner| {
                    assert_eq!(
                        policy.forgotten.len(),
                        forgotten_before,
                        "forgotten before its samples were handed out"
                    );
                    let retired = matches!(owner, Owner::Retired(_));
                    out.push((sample.pid, *owner.target(), retired, sample.count));
                },
            )
            .unwrap();
        out.sort_unstable();
        (out, collected.unattributed)
    }
}

#[test]
fn unknown_pids_are_decided_once_with_the_policy() {
    let mut s = setup(&[(10, "a")]);
    s.mock.sample(10, &[1], &[2], 3);
    s.mock.sample(11, &[5], &[], 1);
    assert!(s.events());
    assert!(!s.events(), "nothing new");
    let config = s.mock.pid_config(10).unwrap();
    assert!(
        config.profile && config.user && !config.kernel,
        "{config:?}"
    );
    assert!(!s.mock.pid_config(11).unwrap().profile);
    assert_eq!(s.policy.inspected, vec![10, 11]);
    assert_eq!(s.policy.started, vec![10]);
    assert_eq!((s.session.known(), s.session.profiled()), (2, 1));
    assert_eq!(s.session.target(10), Some(&"a"));

    s.mock.sample(10, &[1], &[2], 4);
    s.mock.sample(11, &[5], &[], 1);
    assert_eq!(s.collect(), (vec![(10, "a", false, 4)], 0));
    assert!(s.policy.forgotten.is_empty());
}

#[test]
fn an_exit_before_the_collect_keeps_the_samples_then_forgets_the_process() {
    let mut s = setup(&[(10, "a")]);
    s.mock.sample(10, &[1], &[], 1);
    s.events();
    s.mock.sample(10, &[1], &[], 5);
    s.mock.exit(10);
    s.events();
    assert_eq!(s.session.target(10), Some(&"a"), "kept until the collect");
    assert!(s.policy.forgotten.is_empty());
    assert_eq!(s.collect(), (vec![(10, "a", false, 5)], 0));
    assert_eq!(s.policy.forgotten, vec![(10, Forget::Process)]);
    assert_eq!(s.session.known(), 0);
    // The exit is seen by the collect itself when no event handling ran before it.
    s.mock.sample(12, &[1], &[], 1);
    s.events();
    s.mock.exit(12);
    s.collect();
    assert_eq!(s.policy.forgotten.last(), Some(&(12, Forget::Process)));
}

#[test]
fn an_exec_forgets_the_program_after_the_collect_and_keeps_the_target() {
    let mut s = setup(&[(10, "a")]);
    s.mock.sample(10, &[1], &[], 1);
    s.events();
    s.mock.sample(10, &[1], &[], 2);
    s.mock.exec(10);
    s.events();
    assert!(
        s.policy.forgotten.is_empty(),
        "the interval's samples are older"
    );
    assert_eq!(s.collect(), (vec![(10, "a", false, 2)], 0));
    assert_eq!(s.policy.forgotten, vec![(10, Forget::Program)]);
    assert_eq!(s.session.target(10), Some(&"a"));
    s.collect();
    assert_eq!(s.policy.forgotten.len(), 1, "forgotten once");
}

#[test]
fn a_reused_pid_is_forgotten_and_inspected_again() {
    let mut s = setup(&[(10, "a")]);
    s.mock.sample(10, &[1], &[], 1);
    s.events();
    s.mock.exit(10);
    s.events();
    // A new process with the same pid is sampled before the collect.
    s.mock.sample(10, &[7], &[], 1);
    s.events();
    assert_eq!(s.policy.forgotten, vec![(10, Forget::Process)]);
    assert_eq!(s.policy.inspected, vec![10, 10]);
    assert_eq!(s.policy.started, vec![10, 10]);
    s.mock.sample(10, &[7], &[], 2);
    assert_eq!(s.collect(), (vec![(10, "a", false, 2)], 0));
    assert_eq!(
        s.policy.forgotten.len(),
        1,
        "the new process is not forgotten"
    );
    assert_eq!(s.session.known(), 1);
}

#[test]
fn lost_events_are_recovered_from_the_pending_pids() {
    let (mut source, mock) = MockSource::new();
    // The test takes the receiver and drops the events: they are lost for the session.
    let events = source.take_events().unwrap();
    let mut s = Setup {
        session: Session::new(),
        source,
        mock,
        policy: Table::with(&[(20, "a")]),
    };
    s.session.attach(&mut s.source);
    s.mock.sample(20, &[1], &[], 1);
    s.mock.sample(21, &[1], &[], 1);
    drop(events);
    assert!(!s.events());
    assert_eq!(s.mock.pending(), vec![20, 21]);
    // No loss reported: nothing to resync.
    s.collect();
    assert_eq!(s.mock.pending(), vec![20, 21]);
    s.mock.lose(LostCounters {
        events: 1,
        ..LostCounters::default()
    });
    s.collect();
    assert!(s.mock.pending().is_empty());
    assert!(s.mock.pid_config(20).unwrap().profile);
    assert!(!s.mock.pid_config(21).unwrap().profile);
    assert_eq!(s.policy.started, vec![20]);
    s.mock.sample(20, &[1], &[], 3);
    assert_eq!(s.collect(), (vec![(20, "a", false, 3)], 0));
    // A full pid map resyncs too.
    s.mock.sample(22, &[1], &[], 1);
    s.mock.lose(LostCounters {
        pid_map_full: 1,
        ..LostCounters::default()
    });
    s.collect();
    assert!(s.mock.pending().is_empty());
}

#[test]
fn a_lost_target_is_kept_until_the_next_collect() {
    let mut s = setup(&[(10, "a"), (11, "b"), (12, "a")]);
    for pid in [10, 11, 12] {
        s.mock.sample(pid, &[1], &[], 1);
    }
    s.events();
    for pid in [10, 11, 12] {
        s.mock.sample(pid, &[1], &[], 2);
    }
    s.mock.exit(12);
    s.events();
    // The targets change: 10 loses its target, 11 moves, 12 (exited) is not decided again.
    s.policy.targets = [(11, "c"), (12, "c")].into_iter().collect();
    s.session.redecide(&mut s.source, &mut s.policy);
    assert!(!s.mock.pid_config(10).unwrap().profile);
    assert!(
        s.mock.pid_config(12).is_none(),
        "an exited pid is not configured again"
    );
    assert_eq!(s.session.profiled(), 1);
    assert_eq!(
        s.collect(),
        (
            vec![(10, "a", true, 2), (11, "c", false, 2), (12, "a", true, 2)],
            0
        )
    );
    // Retired only for that interval.
    let profile = PidConfig {
        profile: true,
        ..s.mock.pid_config(10).unwrap()
    };
    s.source.set_pid_config(10, profile).unwrap();
    s.mock.sample(10, &[1], &[], 4);
    assert_eq!(s.collect(), (vec![], 4), "unattributed now");
}

#[test]
fn a_failed_collect_forgets_nothing() {
    let mut s = setup(&[(10, "a")]);
    s.mock.sample(10, &[1], &[], 1);
    s.events();
    s.mock.sample(10, &[1], &[], 2);
    s.mock.exit(10);
    s.mock.fail_next_collect("boom");
    let err = s
        .session
        .collect(&mut s.source, &mut s.policy, |_, _, _, _| {
            panic!("no samples on error")
        })
        .unwrap_err();
    assert!(err.to_string().contains("counts0"), "{err}");
    assert!(s.policy.forgotten.is_empty());
    assert_eq!(s.collect(), (vec![(10, "a", false, 2)], 0));
    assert_eq!(s.policy.forgotten, vec![(10, Forget::Process)]);
}

#[test]
fn a_new_source_starts_without_decisions() {
    let mut s = setup(&[(10, "a")]);
    s.mock.sample(10, &[1], &[], 1);
    s.events();
    s.mock.exit(10);
    s.events();
    let (mut source, mock) = MockSource::new();
    s.session.detach();
    assert_eq!(s.session.known(), 0);
    s.session.attach(&mut source);
    (s.source, s.mock) = (source, mock);
    s.mock.sample(10, &[1], &[], 1);
    s.events();
    assert_eq!(
        s.policy.forgotten,
        vec![(10, Forget::Process)],
        "the exit seen on the old source still counts"
    );
    assert!(s.mock.pid_config(10).unwrap().profile);
}

#[test]
fn off_cpu_samples_come_with_their_kind_and_owner() {
    let mut s = setup(&[(10, "a"), (12, "b")]);
    s.source
        .set_off_cpu_threshold(crate::probe::OffCpuThreshold::ALL)
        .unwrap();
    for pid in [10, 11, 12] {
        s.mock.sample(pid, &[1], &[], 1);
    }
    assert!(s.events());
    s.mock.sample(10, &[1], &[], 2);
    s.mock.off_cpu(10, &[7], &[], 5_000);
    s.mock.off_cpu(11, &[7], &[], 9); // no target: not profiled, dropped by the "kernel"
    s.mock.off_cpu(12, &[8], &[], 1_000);
    // 12 loses its target before the collect: its off-CPU time goes to the retired one.
    s.policy.targets.remove(&12);
    s.session.redecide(&mut s.source, &mut s.policy);
    let mut got = Vec::new();
    let collected = s
        .session
        .collect_profiles(&mut s.source, &mut s.policy, |_, _, kind, sample, owner| {
            let retired = matches!(owner, Owner::Retired(_));
            got.push((kind, sample.pid, *owner.target(), retired, sample.count));
        })
        .unwrap();
    got.sort_by_key(|g| (g.1, g.0 == ProfileKind::OffCpu));
    assert_eq!(
        got,
        vec![
            (ProfileKind::Cpu, 10, "a", false, 2),
            (ProfileKind::OffCpu, 10, "a", false, 5_000),
            (ProfileKind::OffCpu, 12, "b", true, 1_000),
        ]
    );
    assert_eq!(collected.unattributed, 0);
    assert_eq!(collected.unattributed_off_cpu_nanos, 0);
    // `collect` hands out the CPU samples only.
    s.mock.sample(10, &[1], &[], 4);
    s.mock.off_cpu(10, &[7], &[], 6_000);
    let (cpu, _) = s.collect();
    assert_eq!(cpu, vec![(10, "a", false, 4)]);
}
