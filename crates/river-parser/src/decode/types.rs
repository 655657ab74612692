//! Argument types with River-specific decoding: [`Duration`] (Go duration strings), [`Secret`]
//! (never printed) and [`CapsuleRef`] (a typed capsule), plus the thread-local side table that
//! carries capsules and secrets past serde, which has no way to pass an `Arc<dyn Any>` through.

use super::{CAPSULE_NAME, CAPSULE_TOKEN_PREFIX, SECRET_NAME};
use crate::value::Capsule;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::{self, Serialize};
use serde::Deserialize as _;
use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

thread_local! {
    pub(super) static CAPSULES: RefCell<Vec<Option<Capsule>>> = const { RefCell::new(Vec::new()) };
    pub(super) static OUT_CAPSULE: RefCell<Option<Capsule>> = const { RefCell::new(None) };
    pub(super) static OUT_SECRET: RefCell<Option<String>> = const { RefCell::new(None) };
    pub(super) static DEPTH: RefCell<usize> = const { RefCell::new(0) };
    pub(super) static PROBE: RefCell<Option<(usize, &'static str)>> = const { RefCell::new(None) };
}

/// Clears the capsule side table when the outermost decode call ends.
pub(super) struct SideTableGuard;

impl SideTableGuard {
    pub(super) fn new() -> Self {
        DEPTH.with(|d| *d.borrow_mut() += 1);
        SideTableGuard
    }
}

impl Drop for SideTableGuard {
    fn drop(&mut self) {
        let outermost = DEPTH.with(|d| {
            let mut d = d.borrow_mut();
            *d -= 1;
            *d == 0
        });
        if outermost {
            CAPSULES.with(|c| c.borrow_mut().clear());
        }
    }
}

pub(super) fn park_capsule(c: &Capsule) -> String {
    CAPSULES.with(|t| {
        let mut t = t.borrow_mut();
        t.push(Some(c.clone()));
        format!("{CAPSULE_TOKEN_PREFIX}{}", t.len() - 1)
    })
}

pub(super) fn redeem_capsule(token: &str) -> Option<Capsule> {
    let idx: usize = token.strip_prefix(CAPSULE_TOKEN_PREFIX)?.parse().ok()?;
    CAPSULES.with(|t| t.borrow_mut().get_mut(idx).and_then(Option::take))
}

/// A duration written as Go's `time.ParseDuration` accepts it (`"15s"`, `"1h30m"`, `"500ms"`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }

    pub fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    pub fn as_std(&self) -> std::time::Duration {
        self.0
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({})", format_go_duration(self.0))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_go_duration(self.0))
    }
}

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_go_duration(s).map(Duration)
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl std::ops::Deref for Duration {
    type Target = std::time::Duration;
    fn deref(&self) -> &std::time::Duration {
        &self.0
    }
}

impl<'de> de::Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
                parse_go_duration(s).map(Duration).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Duration {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_go_duration(self.0))
    }
}

const NANOS_PER: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses Go `time.ParseDuration` syntax: an optional sign, then one or more decimal numbers
/// each followed by a unit (`ns us µs ms s m h`); `"0"` alone is allowed. Negative durations are
/// rejected since `std::time::Duration` cannot hold them.
pub fn parse_go_duration(input: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("time: invalid duration {input:?}");
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        // Number: digits, optional fraction.
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let flen = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &rest[..flen];
            s = &rest[flen..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {input:?}"));
        }
        let Some(&(_, scale)) = NANOS_PER.iter().find(|(u, _)| *u == unit) else {
            return Err(format!("time: unknown unit {unit:?} in duration {input:?}"));
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut value = whole.checked_mul(scale).ok_or_else(invalid)?;
        if !frac_part.is_empty() {
            // Fractional part scaled to the unit, truncated like Go.
            let digits = frac_part.len().min(30) as u32;
            let frac: u128 = frac_part[..digits as usize]
                .parse()
                .map_err(|_| invalid())?;
            value += frac * scale / 10u128.pow(digits);
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > i64::MAX as u128 {
            return Err(invalid());
        }
    }
    if negative && total != 0 {
        return Err(format!("negative duration {input:?} is not allowed"));
    }
    Ok(std::time::Duration::from_nanos(total as u64))
}

/// Formats like Go's `time.Duration.String`: `1h30m0s`, `15s`, `500ms`, `1.5s`, `0s`.
pub fn format_go_duration(d: std::time::Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        // Sub-second: ns, µs or ms with a fraction.
        let (unit, scale) = if nanos < 1_000 {
            ("ns", 1u128)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fixed_fraction(nanos, scale));
    }
    let secs_total = nanos / 1_000_000_000;
    let frac_nanos = nanos % 1_000_000_000;
    let hours = secs_total / 3600;
    let minutes = (secs_total % 3600) / 60;
    let secs = secs_total % 60;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&fixed_fraction(
        secs * 1_000_000_000 + frac_nanos,
        1_000_000_000,
    ));
    out.push('s');
    out
}

fn fixed_fraction(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let frac = value % scale;
    if frac == 0 {
        return whole.to_string();
    }
    let width = scale.to_string().len() - 1;
    let mut f = format!("{frac:0width$}");
    while f.ends_with('0') {
        f.pop();
    }
    format!("{whole}.{f}")
}

/// A sensitive string. Decodes from a string or a secret; never printed (`(secret)`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret text, for the code that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(secret)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(secret)")
    }
}

impl<'de> de::Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Secret, E> {
                Ok(Secret(s.to_string()))
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Secret, D::Error> {
                String::deserialize(d).map(Secret)
            }
        }
        d.deserialize_newtype_struct(SECRET_NAME, V)
    }
}

impl Serialize for Secret {
    /// River serialization yields a [`Value::Secret`]; any other serializer only sees `(secret)`.
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        OUT_SECRET.with(|o| *o.borrow_mut() = Some(self.0.clone()));
        let r = s.serialize_newtype_struct(SECRET_NAME, "(secret)");
        OUT_SECRET.with(|o| *o.borrow_mut() = None);
        r
    }
}

/// A capsule holding a `T`, decoded from a [`Value::Capsule`] whose inner object is a `T`.
///
/// Capsules are downcast to a concrete type, so trait objects travel doubly wrapped: export
/// `Capsule::new("pyroscope.Appendable", Arc::new(receiver))` with `receiver: Arc<dyn Trait>`
/// and decode the field as `CapsuleRef<Arc<dyn Trait>>` (`(*cap.0).clone()` gives the
/// `Arc<dyn Trait>` back). A capsule of another type fails with
/// `expected capsule of type X, got capsule of type Y`.
pub struct CapsuleRef<T: ?Sized>(pub Arc<T>);

impl<T: ?Sized> Clone for CapsuleRef<T> {
    fn clone(&self) -> Self {
        CapsuleRef(self.0.clone())
    }
}

impl<T: ?Sized> fmt::Debug for CapsuleRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "capsule({})", short_type_name::<T>())
    }
}

impl<T: ?Sized> PartialEq for CapsuleRef<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T: ?Sized> std::ops::Deref for CapsuleRef<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    // Keep the last path segment of the outer type (generics left as they are).
    let outer = full.split('<').next().unwrap_or(full);
    match outer.rfind("::") {
        Some(i) => &full[i + 2..],
        None => full,
    }
}

impl<'de, T: Any + Send + Sync> de::Deserialize<'de> for CapsuleRef<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Any + Send + Sync> Visitor<'de> for V<T> {
            type Value = CapsuleRef<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a capsule")
            }
            fn visit_str<E: de::Error>(self, token: &str) -> Result<CapsuleRef<T>, E> {
                let cap = redeem_capsule(token)
                    .ok_or_else(|| E::custom("should be capsule, got string"))?;
                match cap.downcast::<T>() {
                    Some(arc) => Ok(CapsuleRef(arc)),
                    None => Err(E::custom(format!(
                        "expected capsule of type {}, got capsule of type {}",
                        short_type_name::<T>(),
                        cap.type_name
                    ))),
                }
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<CapsuleRef<T>, D::Error> {
                d.deserialize_str(self)
            }
        }
        d.deserialize_newtype_struct(CAPSULE_NAME, V(std::marker::PhantomData))
    }
}

impl<T: Any + Send + Sync> Serialize for CapsuleRef<T> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let cap = Capsule::new(short_type_name::<T>(), self.0.clone());
        OUT_CAPSULE.with(|o| *o.borrow_mut() = Some(cap));
        let text = format!("capsule({})", short_type_name::<T>());
        let r = s.serialize_newtype_struct(CAPSULE_NAME, &text);
        OUT_CAPSULE.with(|o| *o.borrow_mut() = None);
        r
    }
}
