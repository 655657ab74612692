//! `kill -9` of a process writing to `pyroscope.store` continuously: every interval the child
//! reported as stored is in the database afterwards, at most the one being written is lost,
//! and `PRAGMA integrity_check` is `ok`. The child is this test binary run again (an
//! environment variable makes the `child_writer` test do the writing).

#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use components::pyroscope::appendable::{from_value, RawProfile};
use components::pyroscope::store::query::{Reader, TimeRange};
use components::pyroscope::store::synth::{Rng, StackPool};
use components::pyroscope::store::{Arguments, Store, StoreOptions};
use flow_runtime::{CancellationToken, Component, ExportsHandle, MetricsRegistry, Options};

const DIR_VAR: &str = "RILL_STORE_CRASH_CHILD_DIR";
/// Interval `i` is stamped `T0 + i * 15 s`; T0 (ms) is an hour before the parent started,
/// within the default retention.
const T0_VAR: &str = "RILL_STORE_CRASH_T0";

/// The child: appends intervals through the component's receiver as fast as the store takes
/// them and prints `stored N` once interval N is committed. Does nothing in a normal run.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let t0: i64 = std::env::var(T0_VAR).unwrap().parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let exports = ExportsHandle::new();
        let opts = Options {
            id: "pyroscope.store.crash".into(),
            span: tracing::Span::none(),
            data_path: dir.into(),
            exports: exports.clone(),
            metrics: MetricsRegistry::for_component("pyroscope.store.crash"),
        };
        let store = Arc::new(
            Store::build_with(opts, Arguments::default(), StoreOptions::default()).unwrap(),
        );
        let Some(river_parser::Value::Object(map)) = exports.get() else {
            panic!("no exports")
        };
        let receiver = from_value(&map["receiver"]).unwrap();
        let cancel = CancellationToken::new();
        tokio::spawn(store.clone().run(cancel.clone()));
        let pool = StackPool::new(3, 2000, 6, 1500);
        let mut rng = Rng::new(4);
        let labels = BTreeMap::from([
            ("service_name".to_string(), "crash".to_string()),
            ("__name__".to_string(), "process_cpu".to_string()),
        ]);
        for i in 0i64.. {
            let picks = pool.interval(&mut rng, 1200);
            let raw = pool.pprof(&picks, 97, (t0 + i * 15_000) * 1_000_000, 15_000_000_000);
            receiver
                .append(
                    labels.clone(),
                    vec![RawProfile {
                        raw,
                        id: String::new(),
                    }],
                )
                .unwrap();
            let s = store.clone();
            let ok = tokio::task::spawn_blocking(move || s.flush(Duration::from_secs(30)))
                .await
                .unwrap();
            assert!(ok);
            println!("stored {i}");
        }
    });
}

#[test]
fn kill_9_loses_at_most_the_interval_being_written() {
    if std::env::var(DIR_VAR).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, dir.path())
            .env(T0_VAR, t0.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut last: Option<i64> = None;
        let started = Instant::now();
        // Kill at a different point each round.
        let kill_after = 15 + round * 7;
        for line in out.lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("stored ") {
                last = Some(n.trim().parse().unwrap());
                if last >= Some(kill_after) {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "child too slow"
            );
        }
        // SIGKILL, with the next interval on its way.
        child.kill().unwrap();
        child.wait().unwrap();
        let last = last.expect("the child stored intervals");

        let conn = rusqlite::Connection::open(dir.path().join("profiles.db")).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "round {round}");
        drop(conn);
        let mut r = Reader::open(dir.path()).unwrap();
        let series = r.series().unwrap();
        assert_eq!(series.len(), 1);
        let range = TimeRange::new(t0, t0 + 86_400_000).unwrap();
        let times: Vec<i64> = r
            .totals(&series, range)
            .unwrap()
            .into_iter()
            .map(|t| t.0)
            .collect();
        // Each round restarts at interval 0: round k holds k+1 copies of the early ones.
        let distinct: std::collections::BTreeSet<i64> = times.iter().copied().collect();
        let newest = (*distinct.iter().next_back().unwrap() - t0) / 15_000;
        assert!(
            newest == last || newest == last + 1,
            "round {round}: child reported {last} stored, database has up to {newest}"
        );
        for i in 0..=last {
            assert!(distinct.contains(&(t0 + i * 15_000)), "interval {i} lost");
        }
        // The merge reads every stored interval back.
        assert!(r.merge(&series, range).unwrap().total() > 0);
    }
}
