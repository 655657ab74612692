//! `/tmp/perf-PID.map` files written by JIT runtimes (node `--perf-basic-prof`, Java agents):
//! lines `START SIZE NAME` with hex numbers (a `0x` prefix is accepted).

use super::table::{SymbolTable, SymbolTableBuilder};

/// Parses perf map content into a table of absolute addresses.
pub fn parse_perf_map(content: &str) -> SymbolTable {
    let mut b = SymbolTableBuilder::default();
    for line in content.lines() {
        let mut it = line.splitn(3, ' ');
        let (Some(start), Some(size), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        let (Some(start), Some(size)) = (hex(start), hex(size)) else {
            continue;
        };
        b.push(start, size.max(1), name.trim_end());
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let t = parse_perf_map(
            "7f1c4a000000 40 LazyCompile:~hot /app/index.js:3\n0x7f1c4a000100 0x20 Interpreter\nbad line\n",
        );
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.lookup(0x7f1c4a00003f).as_deref(),
            Some("LazyCompile:~hot /app/index.js:3")
        );
        assert_eq!(t.lookup(0x7f1c4a000040), None);
        assert_eq!(t.lookup(0x7f1c4a000110).as_deref(), Some("Interpreter"));
    }
}
