//! `pyroscope.ebpf` logs, once per load, the deprecated Alloy arguments set, those without
//! effect (probe profiling, trace correlation) and the enabled languages rill shows as native
//! frames. Alone in its test binary: tracing caches whether a
//! callsite is enabled, and a load on another test's thread (without a subscriber) racing with
//! this test's scoped subscriber made the captured log miss events.
#![allow(
    clippy::unwrap_used,
    reason = "test code outside #[test] functions (helpers, setup): a failure panics the test"
)]

#[path = "support/ebpf_mock.rs"]
mod ebpf_mock;

use std::sync::{Arc, Mutex};

use components::pyroscope::ebpf::Arguments;
use ebpf_mock::*;
use ebpf_probe::probe::mock::MockSource;
use flow_runtime::Component;

/// A log sink for `tracing_subscriber::fmt`.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

#[test]
fn deprecated_arguments_and_native_only_languages_are_logged_once_per_load() {
    let fx = Fixture::new();
    let log = LogBuf::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        // Another test may have met the log's callsites first, with no subscriber on its
        // thread, and cached them as never enabled: recompute with this subscriber set.
        tracing::callsite::rebuild_interest_cache();
        let mut args = Arguments::new(Vec::new());
        args.cache_rounds = Some(3);
        args.symbols_map_size = Some(16384);
        args.php_enabled = false;
        let c = components::pyroscope::ebpf::Ebpf::build_with(
            options("pyroscope.ebpf.log"),
            args.clone(),
            fx.options(MockSource::new().0),
        )
        .unwrap();
        let text = log.take();
        assert_eq!(
            text.matches("deprecated arguments are ignored").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("arguments=cache_rounds, symbols_map_size"),
            "{text}"
        );
        assert_eq!(text.matches("shown as native frames").count(), 1, "{text}");
        assert!(
            text.contains("languages=hotspot, perl, ruby, v8, dotnet"),
            "{text}"
        );

        // A reload logs again, once; without deprecated arguments or those languages: nothing.
        args.cache_rounds = None;
        c.update(args.clone()).unwrap();
        let text = log.take();
        assert_eq!(
            text.matches("deprecated arguments are ignored").count(),
            1,
            "{text}"
        );
        assert!(text.contains("arguments=symbols_map_size"), "{text}");
        let mut quiet = Arguments::new(Vec::new());
        for on in [
            &mut quiet.hotspot_enabled,
            &mut quiet.perl_enabled,
            &mut quiet.php_enabled,
            &mut quiet.ruby_enabled,
            &mut quiet.v8_enabled,
            &mut quiet.dotnet_enabled,
        ] {
            *on = false;
        }
        c.update(quiet.clone()).unwrap();
        assert_eq!(log.take(), "");

        // Probe profiling and trace correlation: one warning per load naming what was set.
        quiet.load_probe = true;
        quiet.probe_links = vec!["kprobe:do_wp_page".into()];
        c.update(quiet).unwrap();
        let text = log.take();
        assert_eq!(
            text.matches("rill has no probe profiling and no trace correlation")
                .count(),
            1,
            "{text}"
        );
        assert!(text.contains("arguments=load_probe, probe_links"), "{text}");
    });
}
