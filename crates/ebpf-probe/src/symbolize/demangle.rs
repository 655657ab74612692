//! Demangling of C++ (Itanium ABI) and Rust (legacy and v0) symbol names.
//!
//! `none` keeps the mangled name; `simplified` drops parameters, return types, template
//! arguments and the Rust hash; `templates` keeps template arguments; `full` keeps everything
//! (including the Rust hash).

use std::str::FromStr;

/// The `demangle` argument of `pyroscope.ebpf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Demangle {
    /// Mangled names as in the symbol table.
    None,
    /// Function names without parameters or template arguments (the default).
    #[default]
    Simplified,
    /// Like `simplified` but with template arguments.
    Templates,
    /// The whole demangled signature.
    Full,
}

impl FromStr for Demangle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "simplified" => Ok(Self::Simplified),
            "templates" => Ok(Self::Templates),
            "full" => Ok(Self::Full),
            _ => Err(format!(
                "invalid demangle value {s:?}: expected one of none, simplified, templates, full"
            )),
        }
    }
}

fn is_rust_legacy(name: &str) -> bool {
    // `_ZN...17h<16 hex>E`, possibly followed by `.llvm.NNN` style suffixes.
    let core = name.split('.').next().unwrap_or(name);
    core.starts_with("_ZN")
        && core.len() > 20
        && core.ends_with('E')
        && core[core.len() - 20..].starts_with("17h")
        && core[core.len() - 17..core.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
}

/// Removes balanced `<...>` groups, leaving `operator<`/`operator<<`/`operator<=>` alone.
fn strip_templates(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if depth == 0 && out.ends_with("operator") && (c == b'<' || c == b'>') {
            // copy the operator token as is
            while i < bytes.len() && matches!(bytes[i], b'<' | b'>' | b'=') {
                out.push(bytes[i] as char);
                i += 1;
            }
            continue;
        }
        match c {
            b'<' => depth += 1,
            b'>' if depth > 0 => depth -= 1,
            _ if depth == 0 => {
                // push the full UTF-8 character
                let ch = s[i..].chars().next().unwrap_or('?');
                out.push(ch);
                i += ch.len_utf8();
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Demangles `name` per `mode`; names that are not mangled come back unchanged.
pub fn demangle(name: &str, mode: Demangle) -> String {
    if mode == Demangle::None {
        return name.to_string();
    }
    if name.starts_with("_R") || is_rust_legacy(name) {
        if let Ok(d) = rustc_demangle::try_demangle(name) {
            return match mode {
                Demangle::Full => d.to_string(),
                Demangle::Templates => format!("{d:#}"),
                _ => strip_templates(&format!("{d:#}")),
            };
        }
    }
    if name.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(name) {
            let opts = match mode {
                Demangle::Full => cpp_demangle::DemangleOptions::new(),
                _ => cpp_demangle::DemangleOptions::new()
                    .no_params()
                    .no_return_type(),
            };
            if let Ok(d) = sym.demangle(&opts) {
                return match mode {
                    Demangle::Simplified => strip_templates(&d),
                    _ => d,
                };
            }
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        let cpp = "_ZN2ns6VectorIiE4pushERKi";
        assert_eq!(demangle(cpp, Demangle::None), cpp);
        assert_eq!(demangle(cpp, Demangle::Simplified), "ns::Vector::push");
        assert_eq!(demangle(cpp, Demangle::Templates), "ns::Vector<int>::push");
        assert_eq!(
            demangle(cpp, Demangle::Full),
            "ns::Vector<int>::push(int const&)"
        );
        let op = "_ZN3FoolsERKS_";
        assert_eq!(demangle(op, Demangle::Simplified), "Foo::operator<<");
        let rust = "_ZN4core3ptr13drop_in_place17h0123456789abcdefE";
        assert_eq!(
            demangle(rust, Demangle::Simplified),
            "core::ptr::drop_in_place"
        );
        assert_eq!(
            demangle(rust, Demangle::Full),
            "core::ptr::drop_in_place::h0123456789abcdef"
        );
        assert_eq!(demangle("main.hotLeaf", Demangle::Full), "main.hotLeaf");
        assert_eq!(demangle("_Zgarbage", Demangle::Full), "_Zgarbage");
        assert_eq!("templates".parse::<Demangle>(), Ok(Demangle::Templates));
        assert!("x".parse::<Demangle>().is_err());
    }
}
