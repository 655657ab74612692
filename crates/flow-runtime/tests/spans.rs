//! Every log line of a component names it: the runtime runs `build`, `update` and `run` inside the
//! component's span (`component_id`), so a task or blocking thread started from `run` with the
//! span carried along (`in_current_span`, entering `Span::current()`) logs with the ID too. The
//! lines are captured by a global `fmt` subscriber writing into memory (global, so that the
//! runtime's worker threads and the blocking pool log into it as well).

#[path = "support/common.rs"]
mod common;

use common::*;
use flow_runtime::util::lock;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Everything the global subscriber wrote.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Capture(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("the only global subscriber of this test binary");
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured line containing `needle`, if one was logged.
fn line_with(needle: &str) -> Option<String> {
    let text = String::from_utf8_lossy(&lock(captured())).into_owned();
    text.lines()
        .find(|l| l.contains(needle))
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_from_build_update_and_tasks_spawned_by_run_name_the_component() {
    captured();
    let rt = runtime_with(storage(), None);
    rt.load(r#"test.spawn_log "alpha" { message = "first" }"#)
        .await
        .unwrap();
    wait_for(
        "the spawned task's and the blocking thread's lines",
        || async {
            line_with("test.spawn_log task: first").is_some()
                && line_with("test.spawn_log thread: first").is_some()
        },
    )
    .await;
    rt.load(r#"test.spawn_log "alpha" { message = "second" }"#)
        .await
        .unwrap();
    for needle in [
        "test.spawn_log built: first",
        "test.spawn_log task: first",
        "test.spawn_log thread: first",
        "test.spawn_log updated: second",
    ] {
        let line = line_with(needle).unwrap_or_else(|| panic!("no line {needle:?}"));
        assert!(
            line.contains("component_id=test.spawn_log.alpha"),
            "{needle:?} logged without its component: {line}"
        );
    }
    // A task spawned without the span carries no component: the check above can fail.
    tokio::spawn(async { tracing::info!("plain task line") })
        .await
        .unwrap();
    let plain = line_with("plain task line").unwrap();
    assert!(!plain.contains("component_id="), "{plain}");
    rt.shutdown().await;
}
