//! Arguments of `pyroscope.store`: `path`, `retention` (a Go duration, River's own decoding)
//! and `max_size` (bytes: a number, or a string with a unit such as `"1GiB"` or `"512MB"`; as
//! in Alloy, `KB`/`MB`/`GB`/`TB` are powers of 1024 like `KiB`/`MiB`/`GiB`/`TiB`), with their
//! validation.

use std::fmt;
use std::time::Duration;

use river_parser::decode::Invalid;
use river_parser::Validate;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Default `retention`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Default `max_size`.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;
/// Smallest `retention` accepted.
pub const MIN_RETENTION: Duration = Duration::from_secs(60);
/// Smallest `max_size` accepted.
pub const MIN_MAX_SIZE: u64 = 1 << 20;

/// The component's block body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arguments {
    /// Directory of the database (default: the component's folder under `--storage.path`).
    #[serde(default)]
    pub path: Option<String>,
    /// How long profiles are kept.
    #[serde(default = "default_retention")]
    pub retention: river_parser::decode::Duration,
    /// Bytes the database may use.
    #[serde(default = "default_max_size")]
    pub max_size: ByteSize,
}

impl Default for Arguments {
    fn default() -> Self {
        Arguments {
            path: None,
            retention: default_retention(),
            max_size: default_max_size(),
        }
    }
}

fn default_retention() -> river_parser::decode::Duration {
    DEFAULT_RETENTION.into()
}

fn default_max_size() -> ByteSize {
    ByteSize(DEFAULT_MAX_SIZE)
}

impl Validate for Arguments {
    fn validate(&self) -> Result<(), Invalid> {
        if self.path.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err(Invalid::attr("path", "path must not be empty"));
        }
        if self.retention.as_std() < MIN_RETENTION {
            return Err(Invalid::attr(
                "retention",
                format!("retention must be at least 1m, got {}", self.retention),
            ));
        }
        if self.max_size.0 < MIN_MAX_SIZE {
            return Err(Invalid::attr(
                "max_size",
                format!("max_size must be at least 1MiB, got {}", self.max_size),
            ));
        }
        Ok(())
    }
}

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

const UNITS: &[(&str, u64)] = &[
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("TB", 1 << 40),
    ("GB", 1 << 30),
    ("MB", 1 << 20),
    ("KB", 1 << 10),
    ("B", 1),
];

impl ByteSize {
    /// Parses `"1GiB"`, `"512MB"`, `"1.5GB"`, `"4096"`, `"100 KiB"`.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let s = text.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = (&s[..split], s[split..].trim());
        let mult = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(u, _)| u.eq_ignore_ascii_case(unit))
                .map(|(_, m)| *m)
                .ok_or_else(|| {
                    format!(
                        "invalid size {text:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, TiB)"
                    )
                })?
        };
        let value: f64 = num.parse().map_err(|_| {
            format!("invalid size {text:?}: expected a number and a unit such as 1GiB")
        })?;
        let bytes = value * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(format!("invalid size {text:?}: out of range"));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &(unit, mult) in &UNITS[..4] {
            if self.0 >= mult && self.0.is_multiple_of(mult) {
                return write!(f, "{}{unit}", self.0 / mult);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"1GiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
                if v >= 0.0 && v.is_finite() {
                    Ok(ByteSize(v as u64))
                } else {
                    Err(E::custom("a size cannot be negative"))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use river_parser::decode::PathSegment;

    #[test]
    fn sizes_parse_with_units() {
        for (text, want) in [
            ("1GiB", 1u64 << 30),
            ("1GB", 1 << 30),
            ("512MiB", 512 << 20),
            ("1.5 GiB", 3 << 29),
            ("100kib", 100 << 10),
            ("4096", 4096),
            ("10B", 10),
        ] {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(want)), "{text}");
        }
        for bad in ["", "GiB", "1XB", "-1GiB", "1..2MB"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ByteSize(1 << 30).to_string(), "1GiB");
        assert_eq!(ByteSize(1500).to_string(), "1500B");
    }

    #[test]
    fn validation_points_at_the_attribute() {
        let a = Arguments::default();
        assert_eq!(a.retention.as_std(), DEFAULT_RETENTION);
        assert_eq!(a.max_size, ByteSize(1 << 30));
        assert!(a.validate().is_ok());
        let bad = Arguments {
            retention: std::time::Duration::from_secs(5).into(),
            ..Arguments::default()
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.path, vec![PathSegment::Attr("retention".into())]);
        let bad = Arguments {
            max_size: ByteSize(1000),
            ..Arguments::default()
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.path, vec![PathSegment::Attr("max_size".into())]);
        assert!(e.message.contains("1MiB"), "{}", e.message);
        let bad = Arguments {
            path: Some(" ".into()),
            ..Arguments::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().path,
            vec![PathSegment::Attr("path".into())]
        );
    }
}
