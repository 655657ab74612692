//! Decoding evaluated River bodies and values into Rust types with serde, and encoding Rust
//! types back into [`Value`]s (for component exports).
//!
//! Mapping rules:
//! - A body decodes into a struct: each attribute is a field, blocks with the same name form one
//!   field (`Vec<T>` for repeatable blocks, `Option<T>` for optional ones, `T` for a required
//!   one). Unknown attribute or block names are errors (`unrecognized attribute name "x"`), so are
//!   missing required fields (`missing required attribute "x"` / `missing required block "x"`;
//!   a field is reported as a block when its type decodes as a struct or a list of structs).
//! - A block label decodes into the field named [`LABEL_FIELD`] (`#[serde(rename = "__label")]`).
//! - Values convert as in Alloy: numbers and strings into each other when the target needs it,
//!   strings into [`Duration`] (Go `time.ParseDuration` syntax) and [`Secret`], capsules into
//!   [`CapsuleRef<T>`].
//! - Capsules cannot travel through serde (it has no `Arc<dyn Any>` type): the deserializer parks
//!   the capsule in a thread-local side table and hands serde a token string; `CapsuleRef`'s
//!   `Deserialize` redeems the token on the same thread. Serializing works the same way in
//!   reverse. Secrets use the same trick so that other serializers only ever see `(secret)`.
//! - Defaults come from `#[serde(default)]`, enum strings from `#[serde(rename...)]`; call
//!   [`Validate::validate`] after decoding (or use [`decode_body_validated`]).
//!
//! Layout: this module holds the entry points, [`Validate`]/[`Invalid`] and the error type;
//! `body` (block bodies), `value` (single values), `serializer` (Rust to [`Value`]) and `types`
//! (the argument types and the capsule/secret side table) hold the rest.

mod body;
mod serializer;
mod types;
mod value;

pub use types::{format_go_duration, parse_go_duration, CapsuleRef, Duration, Secret};
pub use value::{number_to_string, ValueDeserializer};

use crate::diag::{Diagnostic, Diagnostics};
use crate::eval::{BodyItem, BodyValue};
use crate::span::Span;
use crate::value::Value;
use body::{probe_field_kind, BodyDeserializer};
use serde::de::{self, DeserializeOwned};
use serde::ser::{self, Serialize};
use serializer::ValueSerializer;
use std::fmt;
use types::SideTableGuard;

/// The struct field that receives a block's label.
pub const LABEL_FIELD: &str = "__label";

const SECRET_NAME: &str = "river.Secret";
const CAPSULE_NAME: &str = "river.Capsule";
const CAPSULE_TOKEN_PREFIX: &str = "\u{0}capsule:";

/// Post-decoding validation of argument structs: rules that serde cannot express (ranges, one
/// argument against another). [`decode_body_validated`] runs it and points the diagnostic at the
/// attribute or block that [`Invalid::path`] names.
/// A type with no rules beyond its serde shape implements it with an empty body.
pub trait Validate {
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// One step of the path to an invalid argument: an attribute, or the `index`-th block named `name`
/// (counting only blocks of that name, in source order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    Attr(String),
    Block { name: String, index: usize },
}

/// An argument that failed validation: where it is (empty path = the whole body) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub path: Vec<PathSegment>,
    pub message: String,
}

impl Invalid {
    /// An error about the whole body (no single attribute is at fault).
    pub fn body(message: impl Into<String>) -> Self {
        Invalid {
            path: Vec::new(),
            message: message.into(),
        }
    }

    /// An error about attribute `name` of this body.
    pub fn attr(name: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            path: vec![PathSegment::Attr(name.into())],
            message: message.into(),
        }
    }

    /// The same error seen from the enclosing body: inside its `index`-th block `name`.
    pub fn in_block(mut self, name: impl Into<String>, index: usize) -> Self {
        self.path.insert(
            0,
            PathSegment::Block {
                name: name.into(),
                index,
            },
        );
        self
    }

    /// The span of the deepest item of `body` that the path reaches (`fallback` if none).
    pub fn span_in(&self, body: &BodyValue, fallback: Span) -> Span {
        let mut span = fallback;
        let mut cur = body;
        for seg in &self.path {
            match seg {
                PathSegment::Attr(name) => {
                    if let Some(item) = cur
                        .items
                        .iter()
                        .find(|i| matches!(i, BodyItem::Attr { .. }) && i.name() == name)
                    {
                        span = item.span();
                    }
                    break;
                }
                PathSegment::Block { name, index } => {
                    let found = cur.items.iter().filter_map(|i| match i {
                        BodyItem::Block {
                            name: n,
                            body,
                            span,
                            ..
                        } if n == name => Some((body, *span)),
                        _ => None,
                    });
                    match found.into_iter().nth(*index) {
                        Some((b, s)) => {
                            span = s;
                            cur = b;
                        }
                        None => break,
                    }
                }
            }
        }
        span
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// ---------------------------------------------------------------------------------------------
// Public entry points

/// Decodes a body into `T`. Errors point at the offending attribute or block, or at the body when
/// something is missing.
pub fn decode_body<T: DeserializeOwned>(body: &BodyValue) -> Result<T, Diagnostics> {
    decode_body_at(body, body.span())
}

/// Like [`decode_body`], with an explicit span for errors about the whole body (for example the
/// name of the component block).
pub fn decode_body_at<T: DeserializeOwned>(
    body: &BodyValue,
    body_span: Span,
) -> Result<T, Diagnostics> {
    let _guard = SideTableGuard::new();
    let result = T::deserialize(BodyDeserializer::top(body, body_span));
    match result {
        Ok(v) => Ok(v),
        Err(err) => {
            let err = match &err.kind {
                ErrorKind::Missing { field, body: ptr } => {
                    let kind = probe_field_kind::<T>(body, body_span, *ptr, field);
                    let what = if kind { "block" } else { "attribute" };
                    Error {
                        kind: ErrorKind::Message(format!("missing required {what} {field:?}")),
                        span: err.span,
                        path: Vec::new(),
                        prefixed: true,
                    }
                }
                _ => err,
            };
            Err(Diagnostics::from(err.into_diagnostic(body_span)))
        }
    }
}

/// Decodes a body and runs [`Validate`]; a validation error points at the attribute or block
/// its path names, or at `body_span` for an error about the whole body.
pub fn decode_body_validated<T: DeserializeOwned + Validate>(
    body: &BodyValue,
    body_span: Span,
) -> Result<T, Diagnostics> {
    let v: T = decode_body_at(body, body_span)?;
    v.validate().map_err(|inv| {
        Diagnostics::from(Diagnostic::new(
            inv.span_in(body, body_span),
            inv.message.clone(),
        ))
    })?;
    Ok(v)
}

/// Decodes a single value into `T` (error text without a position).
pub fn decode_value<T: DeserializeOwned>(v: &Value) -> Result<T, String> {
    let _guard = SideTableGuard::new();
    T::deserialize(ValueDeserializer { value: v }).map_err(|e| e.render_message(None))
}

/// Encodes `t` as a River value (structs and maps become objects, sequences arrays,
/// [`Duration`] a duration string, [`Secret`] a secret, [`CapsuleRef`] a capsule).
pub fn to_value<T: Serialize + ?Sized>(t: &T) -> Result<Value, String> {
    t.serialize(ValueSerializer)
        .map_err(|e| e.render_message(None))
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Debug, Clone)]
enum ErrorKind {
    /// A required field was missing from the body at address `body`.
    Missing {
        field: &'static str,
        body: usize,
    },
    /// Expected type vs. actual type: `should be number, got string`.
    Type(String),
    Message(String),
    /// Sentinel used while probing a field's shape.
    Probe(bool),
}

/// The decoding error. Carries an optional span (set by the innermost attribute/block that
/// knows one) and a path into the value (`.field`, `[2]`) for nested values.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    span: Option<Span>,
    /// Path segments, innermost first.
    path: Vec<String>,
    /// Whether the message is complete (already names the attribute).
    prefixed: bool,
}

impl Error {
    fn new(kind: ErrorKind) -> Self {
        Error {
            kind,
            span: None,
            path: Vec::new(),
            prefixed: false,
        }
    }

    fn type_err(expected: &str, got: &Value) -> Self {
        Error::new(ErrorKind::Type(format!(
            "should be {expected}, got {}",
            got.type_name()
        )))
    }

    fn at(mut self, span: Span) -> Self {
        if self.span.is_none() {
            self.span = Some(span);
        }
        self
    }

    fn with_segment(mut self, seg: String) -> Self {
        if !self.prefixed {
            self.path.push(seg);
        }
        self
    }

    /// Prefixes the message with the attribute name and path (done once, at the attribute).
    fn in_attribute(mut self, name: &str, span: Span) -> Self {
        if let ErrorKind::Missing { field, .. } = self.kind {
            // A key missing from an object value (not from the body itself).
            self.kind = ErrorKind::Type(format!("does not have field named {field:?}"));
        }
        if !self.prefixed && !matches!(self.kind, ErrorKind::Probe(_)) {
            let msg = self.render_message(Some(name));
            self.kind = ErrorKind::Message(msg);
            self.path.clear();
            self.prefixed = true;
        }
        self.at(span)
    }

    fn render_message(&self, name: Option<&str>) -> String {
        let mut path = String::new();
        for seg in self.path.iter().rev() {
            path.push_str(seg);
        }
        let subject = match name {
            Some(n) => format!("{n}{path}"),
            None => path.trim_start_matches('.').to_string(),
        };
        let (msg, is_type) = match &self.kind {
            ErrorKind::Missing { field, .. } => {
                (format!("missing required attribute {field:?}"), false)
            }
            ErrorKind::Type(m) => (m.clone(), true),
            ErrorKind::Message(m) => (m.clone(), false),
            ErrorKind::Probe(_) => ("probe".to_string(), false),
        };
        if self.prefixed || subject.is_empty() {
            msg
        } else if is_type {
            format!("{subject} {msg}")
        } else {
            format!("{subject}: {msg}")
        }
    }

    fn into_diagnostic(self, fallback: Span) -> Diagnostic {
        let span = self.span.unwrap_or(fallback);
        Diagnostic::new(span, self.render_message(None))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_message(None))
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::new(ErrorKind::Message(msg.to_string()))
    }

    fn missing_field(field: &'static str) -> Self {
        Error::new(ErrorKind::Missing { field, body: 0 })
    }

    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        Error::new(ErrorKind::Message(format!(
            "unrecognized attribute name {field:?}"
        )))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let list: Vec<String> = expected.iter().map(|e| format!("{e:?}")).collect();
        Error::new(ErrorKind::Message(format!(
            "unknown value {variant:?}, expected one of [{}]",
            list.join(", ")
        )))
    }
}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::new(ErrorKind::Message(msg.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as StdDuration;

    #[test]
    fn parses_go_durations() {
        let ok = [
            ("15s", StdDuration::from_secs(15)),
            ("1h30m", StdDuration::from_secs(5400)),
            ("500ms", StdDuration::from_millis(500)),
            ("1.5s", StdDuration::from_millis(1500)),
            ("0", StdDuration::ZERO),
            (
                "2h45m30.5s",
                StdDuration::from_millis((2 * 3600 + 45 * 60 + 30) * 1000 + 500),
            ),
            ("100us", StdDuration::from_micros(100)),
            ("100µs", StdDuration::from_micros(100)),
            ("7ns", StdDuration::from_nanos(7)),
            (".5m", StdDuration::from_secs(30)),
            ("+3s", StdDuration::from_secs(3)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
        assert_eq!(
            parse_go_duration("15"),
            Err("time: missing unit in duration \"15\"".to_string())
        );
        assert_eq!(
            parse_go_duration("15x"),
            Err("time: unknown unit \"x\" in duration \"15x\"".to_string())
        );
        assert_eq!(
            parse_go_duration(""),
            Err("time: invalid duration \"\"".to_string())
        );
        assert_eq!(
            parse_go_duration("s"),
            Err("time: invalid duration \"s\"".to_string())
        );
        assert!(parse_go_duration("-5s").is_err());
        assert!(parse_go_duration("99999999999h").is_err());
    }

    #[test]
    fn formats_go_durations() {
        let cases = [
            (StdDuration::ZERO, "0s"),
            (StdDuration::from_secs(15), "15s"),
            (StdDuration::from_secs(5400), "1h30m0s"),
            (StdDuration::from_millis(500), "500ms"),
            (StdDuration::from_millis(1500), "1.5s"),
            (StdDuration::from_micros(1), "1µs"),
            (StdDuration::from_nanos(1500), "1.5µs"),
            (StdDuration::from_secs(60), "1m0s"),
            (StdDuration::from_secs(3601), "1h0m1s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_go_duration(d), want);
            // Round trip.
            assert_eq!(parse_go_duration(want), Ok(d), "{want}");
        }
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "(secret) (secret)");
        assert_eq!(
            serde_json::to_string(&s).ok().as_deref(),
            Some("\"(secret)\"")
        );
        assert_eq!(to_value(&s), Ok(Value::Secret("hunter2".into())));
        assert_eq!(s.expose(), "hunter2");
    }
}
