//! Small helpers every component uses: a poison-tolerant mutex lock and an error's whole cause
//! chain on one line. The one home of both (components and the `rill` binary import them from
//! here).

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, recovering the data if a panicking thread poisoned it: a component's state stays
/// usable after a panic in another task, which the scheduler reports on its own.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An error and its sources joined with `: ` (the cause of TLS, connection and syscall errors is
/// usually several levels down). A source whose text the line already contains is skipped, since
/// many errors repeat their source in their own message.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner: {0}")]
    struct Inner(&'static str);

    #[test]
    fn error_chain_joins_sources_and_skips_repeats() {
        assert_eq!(error_chain(&Outer(Inner("eof"))), "outer: inner: eof");
        let io = std::io::Error::other(Inner("x"));
        // io::Error displays its inner error, whose text is then not repeated.
        assert_eq!(error_chain(&io), "inner: x");
    }

    #[test]
    fn lock_recovers_a_poisoned_mutex() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
