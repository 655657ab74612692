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

use crate::diag::{Diagnostic, Diagnostics};
use crate::eval::{BodyItem, BodyValue};
use crate::span::Span;
use crate::value::{Capsule, Number, Value};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use serde::ser::{self, Serialize};
use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

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
    let result = T::deserialize(BodyDeserializer {
        body,
        span: body_span,
        label: None,
        block_name: None,
    });
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

// ---------------------------------------------------------------------------------------------
// Side tables for capsules and secrets

thread_local! {
    static CAPSULES: RefCell<Vec<Option<Capsule>>> = const { RefCell::new(Vec::new()) };
    static OUT_CAPSULE: RefCell<Option<Capsule>> = const { RefCell::new(None) };
    static OUT_SECRET: RefCell<Option<String>> = const { RefCell::new(None) };
    static DEPTH: RefCell<usize> = const { RefCell::new(0) };
    static PROBE: RefCell<Option<(usize, &'static str)>> = const { RefCell::new(None) };
}

/// Clears the capsule side table when the outermost decode call ends.
struct SideTableGuard;

impl SideTableGuard {
    fn new() -> Self {
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

fn park_capsule(c: &Capsule) -> String {
    CAPSULES.with(|t| {
        let mut t = t.borrow_mut();
        t.push(Some(c.clone()));
        format!("{CAPSULE_TOKEN_PREFIX}{}", t.len() - 1)
    })
}

fn redeem_capsule(token: &str) -> Option<Capsule> {
    let idx: usize = token.strip_prefix(CAPSULE_TOKEN_PREFIX)?.parse().ok()?;
    CAPSULES.with(|t| t.borrow_mut().get_mut(idx).and_then(Option::take))
}

/// Runs `T`'s decoding again, presenting the missing `field` of the body at `ptr` with a probe
/// that records whether the field decodes as a struct/map (a block) or something else.
fn probe_field_kind<T: DeserializeOwned>(
    body: &BodyValue,
    span: Span,
    ptr: usize,
    field: &'static str,
) -> bool {
    PROBE.with(|p| *p.borrow_mut() = Some((ptr, field)));
    let r = T::deserialize(BodyDeserializer {
        body,
        span,
        label: None,
        block_name: None,
    });
    PROBE.with(|p| *p.borrow_mut() = None);
    matches!(
        r,
        Err(Error {
            kind: ErrorKind::Probe(true),
            ..
        })
    )
}

// ---------------------------------------------------------------------------------------------
// Body deserializer

struct BodyDeserializer<'a> {
    body: &'a BodyValue,
    /// Where "missing ..." errors point.
    span: Span,
    label: Option<&'a str>,
    /// `Some(name)` when this body belongs to a block.
    block_name: Option<&'a str>,
}

/// One key of a body: an attribute, a group of same-named blocks, the label, or a probe.
enum Entry<'a> {
    Attr(&'a BodyItem),
    Blocks(Vec<&'a BodyItem>),
    Label(&'a str),
    Probe,
}

impl<'a> BodyDeserializer<'a> {
    fn entries(
        &self,
        fields: Option<&'static [&'static str]>,
    ) -> Result<Vec<(&'a str, Entry<'a>)>, Error> {
        let mut out: Vec<(&'a str, Entry<'a>)> = Vec::new();
        let mut block_index: BTreeMap<&'a str, usize> = BTreeMap::new();
        let mut seen_attrs: BTreeMap<&'a str, ()> = BTreeMap::new();
        for item in &self.body.items {
            let name = item.name();
            if let Some(fields) = fields {
                if !fields.contains(&name) {
                    let what = match item {
                        BodyItem::Attr { .. } => "attribute",
                        BodyItem::Block { .. } => "block",
                    };
                    return Err(Error {
                        kind: ErrorKind::Message(format!("unrecognized {what} name {name:?}")),
                        span: Some(item.name_span()),
                        path: Vec::new(),
                        prefixed: true,
                    });
                }
            }
            match item {
                BodyItem::Attr { name_span, .. } => {
                    if seen_attrs.insert(name, ()).is_some() || block_index.contains_key(name) {
                        return Err(Error {
                            kind: ErrorKind::Message(format!(
                                "attribute {name:?} may only be provided once"
                            )),
                            span: Some(*name_span),
                            path: Vec::new(),
                            prefixed: true,
                        });
                    }
                    out.push((name, Entry::Attr(item)));
                }
                BodyItem::Block { name_span, .. } => {
                    if seen_attrs.contains_key(name) {
                        return Err(Error {
                            kind: ErrorKind::Message(format!(
                                "block {name:?} conflicts with an attribute of the same name"
                            )),
                            span: Some(*name_span),
                            path: Vec::new(),
                            prefixed: true,
                        });
                    }
                    match block_index.get(name) {
                        Some(&i) => {
                            if let Entry::Blocks(v) = &mut out[i].1 {
                                v.push(item);
                            }
                        }
                        None => {
                            block_index.insert(name, out.len());
                            out.push((name, Entry::Blocks(vec![item])));
                        }
                    }
                }
            }
        }
        let wants_label = fields.is_some_and(|f| f.contains(&LABEL_FIELD));
        let block = self.block_name.unwrap_or("");
        match (
            self.label,
            wants_label,
            fields.is_some() && self.block_name.is_some(),
        ) {
            (Some(l), true, _) => out.push((LABEL_FIELD, Entry::Label(l))),
            (Some(_), false, true) => {
                return Err(Error {
                    kind: ErrorKind::Message(format!(
                        "block {block:?} does not support specifying labels"
                    )),
                    span: Some(self.span),
                    path: Vec::new(),
                    prefixed: true,
                })
            }
            (None, true, true) => {
                return Err(Error {
                    kind: ErrorKind::Message(format!("block {block:?} requires non-empty label")),
                    span: Some(self.span),
                    path: Vec::new(),
                    prefixed: true,
                })
            }
            _ => {}
        }
        let ptr = self.body as *const BodyValue as usize;
        if let Some((pptr, pfield)) = PROBE.with(|p| *p.borrow()) {
            if pptr == ptr && !out.iter().any(|(n, _)| *n == pfield) {
                out.push((pfield, Entry::Probe));
            }
        }
        Ok(out)
    }
}

impl<'de, 'a> Deserializer<'de> for BodyDeserializer<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let entries = self.entries(None)?;
        self.visit_entries(entries, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let entries = self.entries(Some(fields))?;
        self.visit_entries(entries, visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct enum identifier
    }
}

impl<'a> BodyDeserializer<'a> {
    fn visit_entries<'de, V: Visitor<'de>>(
        &self,
        entries: Vec<(&'a str, Entry<'a>)>,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let ptr = self.body as *const BodyValue as usize;
        let span = self.span;
        let access = BodyMapAccess {
            entries: entries.into_iter(),
            current: None,
        };
        visitor.visit_map(access).map_err(|e| match e.kind {
            ErrorKind::Missing { field, body: 0 } => Error {
                kind: ErrorKind::Missing { field, body: ptr },
                span: Some(span),
                path: Vec::new(),
                prefixed: true,
            },
            _ => e.at(span),
        })
    }
}

struct BodyMapAccess<'a> {
    entries: std::vec::IntoIter<(&'a str, Entry<'a>)>,
    current: Option<(&'a str, Entry<'a>)>,
}

impl<'de, 'a> MapAccess<'de> for BodyMapAccess<'a> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.entries.next() {
            None => Ok(None),
            Some((name, entry)) => {
                let span = match &entry {
                    Entry::Attr(i) => Some(i.name_span()),
                    Entry::Blocks(b) => b.first().map(|i| i.name_span()),
                    _ => None,
                };
                self.current = Some((name, entry));
                let key: de::value::StrDeserializer<'_, Error> = name.into_deserializer();
                seed.deserialize(key).map(Some).map_err(|e| match span {
                    Some(s) => e.at(s),
                    None => e,
                })
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((name, entry)) = self.current.take() else {
            return Err(Error::new(ErrorKind::Message("value without key".into())));
        };
        match entry {
            Entry::Attr(BodyItem::Attr { value, span, .. }) => seed
                .deserialize(ValueDeserializer { value })
                .map_err(|e| e.in_attribute(name, *span)),
            Entry::Attr(_) => Err(Error::new(ErrorKind::Message("bad entry".into()))),
            Entry::Blocks(blocks) => seed.deserialize(BlocksDeserializer { name, blocks }),
            Entry::Label(l) => seed.deserialize(de::value::StrDeserializer::<Error>::new(l)),
            Entry::Probe => seed.deserialize(ProbeDeserializer),
        }
    }
}

/// All blocks with one name: a sequence for `Vec<T>`, `Some` for `Option<T>`, one struct else.
struct BlocksDeserializer<'a> {
    name: &'a str,
    blocks: Vec<&'a BodyItem>,
}

fn block_deserializer(item: &BodyItem) -> Option<BodyDeserializer<'_>> {
    match item {
        BodyItem::Block {
            name,
            label,
            name_span,
            body,
            ..
        } => Some(BodyDeserializer {
            body,
            span: *name_span,
            label: label.as_deref(),
            block_name: Some(name),
        }),
        BodyItem::Attr { .. } => None,
    }
}

impl<'a> BlocksDeserializer<'a> {
    fn single(self) -> Result<BodyDeserializer<'a>, Error> {
        if let Some(second) = self.blocks.get(1) {
            return Err(Error {
                kind: ErrorKind::Message(format!(
                    "block {:?} may only be specified once",
                    self.name
                )),
                span: Some(second.name_span()),
                path: Vec::new(),
                prefixed: true,
            });
        }
        self.blocks
            .first()
            .and_then(|b| block_deserializer(b))
            .ok_or_else(|| Error::new(ErrorKind::Message("empty block group".into())))
    }
}

/// Scalar targets cannot be filled from a block.
macro_rules! not_a_block {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
                Err(self.used_as_block())
            }
        )*
    };
}

impl<'a> BlocksDeserializer<'a> {
    fn used_as_block(&self) -> Error {
        Error {
            kind: ErrorKind::Message(format!(
                "{:?} must be an attribute, but is used as a block",
                self.name
            )),
            span: self.blocks.first().map(|b| b.name_span()),
            path: Vec::new(),
            prefixed: true,
        }
    }
}

impl<'de, 'a> Deserializer<'de> for BlocksDeserializer<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.single()?.deserialize_any(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        struct Seq<'a> {
            it: std::vec::IntoIter<&'a BodyItem>,
        }
        impl<'de, 'a> SeqAccess<'de> for Seq<'a> {
            type Error = Error;
            fn next_element_seed<T: DeserializeSeed<'de>>(
                &mut self,
                seed: T,
            ) -> Result<Option<T::Value>, Error> {
                match self.it.next() {
                    None => Ok(None),
                    Some(item) => match block_deserializer(item) {
                        Some(d) => seed.deserialize(d).map(Some),
                        None => Ok(None),
                    },
                }
            }
            fn size_hint(&self) -> Option<usize> {
                Some(self.it.len())
            }
        }
        visitor.visit_seq(Seq {
            it: self.blocks.into_iter(),
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.single()?.deserialize_struct(name, fields, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.single()?.deserialize_map(visitor)
    }

    not_a_block! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(self.used_as_block())
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(self.used_as_block())
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(self.used_as_block())
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(self.used_as_block())
    }
}

/// Stands in for a missing field while probing; reports whether it was asked for a struct/map.
struct ProbeDeserializer;

impl<'de> Deserializer<'de> for ProbeDeserializer {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(Error::new(ErrorKind::Probe(false)))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(Error::new(ErrorKind::Probe(true)))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // A sequence of structs is a repeatable block.
        struct One;
        impl<'de> SeqAccess<'de> for One {
            type Error = Error;
            fn next_element_seed<T: DeserializeSeed<'de>>(
                &mut self,
                seed: T,
            ) -> Result<Option<T::Value>, Error> {
                seed.deserialize(ProbeDeserializer).map(Some)
            }
        }
        visitor.visit_seq(One)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name == SECRET_NAME || name == CAPSULE_NAME {
            return Err(Error::new(ErrorKind::Probe(false)));
        }
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct map enum identifier ignored_any
    }
}

// ---------------------------------------------------------------------------------------------
// Value deserializer

/// Deserializes one River value.
pub struct ValueDeserializer<'a> {
    pub value: &'a Value,
}

impl<'a> ValueDeserializer<'a> {
    fn number(&self) -> Result<Number, Error> {
        match self.value {
            Value::Number(n) => Ok(*n),
            Value::String(s) => {
                string_to_number(s).ok_or_else(|| Error::type_err("number", self.value))
            }
            other => Err(Error::type_err("number", other)),
        }
    }

    fn string(&self) -> Result<std::borrow::Cow<'a, str>, Error> {
        match self.value {
            Value::String(s) => Ok(std::borrow::Cow::Borrowed(s.as_str())),
            Value::Number(n) => Ok(std::borrow::Cow::Owned(number_to_string(*n))),
            other => Err(Error::type_err("string", other)),
        }
    }
}

/// Alloy's string→number conversion: `-` prefix → int, `.eE` → float, else uint.
fn string_to_number(s: &str) -> Option<Number> {
    if s.is_empty() {
        None
    } else if s.starts_with('-') {
        s.parse::<i64>().ok().map(Number::Int)
    } else if s.contains(['.', 'e', 'E']) {
        s.parse::<f64>().ok().map(Number::Float)
    } else {
        s.parse::<u64>().ok().map(Number::Uint)
    }
}

/// Formats a number as text the way the reference converts numbers to strings.
pub fn number_to_string(n: Number) -> String {
    match n {
        Number::Int(i) => i.to_string(),
        Number::Uint(u) => u.to_string(),
        // Go's strconv.FormatFloat(f, 'f', -1, 64): shortest digits, never an exponent.
        Number::Float(f) if f.is_nan() => "NaN".to_string(),
        Number::Float(f) if f.is_infinite() => if f > 0.0 { "+Inf" } else { "-Inf" }.to_string(),
        Number::Float(f) => format!("{f}"),
    }
}

macro_rules! deserialize_int {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let n = self.number()?;
            match n {
                Number::Int(i) => match <$ty>::try_from(i) {
                    Ok(v) => visitor.$visit(v),
                    Err(_) => Err(Error::new(ErrorKind::Message(format!(
                        "{i} is out of range for {}",
                        stringify!($ty)
                    )))),
                },
                Number::Uint(u) => match <$ty>::try_from(u) {
                    Ok(v) => visitor.$visit(v),
                    Err(_) => Err(Error::new(ErrorKind::Message(format!(
                        "{u} is out of range for {}",
                        stringify!($ty)
                    )))),
                },
                Number::Float(f) => {
                    if f.fract() == 0.0 && f >= <$ty>::MIN as f64 && f <= <$ty>::MAX as f64 {
                        visitor.$visit(f as $ty)
                    } else {
                        Err(Error::new(ErrorKind::Message(format!(
                            "{} cannot be converted to an integer",
                            number_to_string(n)
                        ))))
                    }
                }
            }
        }
    };
}

impl<'de, 'a> Deserializer<'de> for ValueDeserializer<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Number(Number::Int(i)) => visitor.visit_i64(*i),
            Value::Number(Number::Uint(u)) => visitor.visit_u64(*u),
            Value::Number(Number::Float(f)) => visitor.visit_f64(*f),
            Value::String(s) => visitor.visit_str(s),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Array(_) => self.deserialize_seq(visitor),
            Value::Object(_) => self.deserialize_map(visitor),
            Value::Secret(_) => Err(Error::type_err("string", self.value)),
            Value::Capsule(c) => visitor.visit_string(park_capsule(c)),
            Value::Function(_) => Err(Error::new(ErrorKind::Type(
                "cannot decode a function".into(),
            ))),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::String(s) if s == "true" || s == "false" => visitor.visit_bool(s == "true"),
            other => Err(Error::type_err("bool", other)),
        }
    }

    deserialize_int!(deserialize_i8, visit_i8, i8);
    deserialize_int!(deserialize_i16, visit_i16, i16);
    deserialize_int!(deserialize_i32, visit_i32, i32);
    deserialize_int!(deserialize_i64, visit_i64, i64);
    deserialize_int!(deserialize_u8, visit_u8, u8);
    deserialize_int!(deserialize_u16, visit_u16, u16);
    deserialize_int!(deserialize_u32, visit_u32, u32);
    deserialize_int!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f32(self.number()?.as_f64() as f32)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(self.number()?.as_f64())
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.string()? {
            std::borrow::Cow::Borrowed(s) => visitor.visit_str(s),
            std::borrow::Cow::Owned(s) => visitor.visit_string(s),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.string()? {
            std::borrow::Cow::Borrowed(s) => visitor.visit_bytes(s.as_bytes()),
            std::borrow::Cow::Owned(s) => visitor.visit_byte_buf(s.into_bytes()),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            other => Err(Error::type_err("null", other)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        match name {
            SECRET_NAME => match self.value {
                Value::Secret(s) | Value::String(s) => {
                    visitor.visit_newtype_struct(de::value::StrDeserializer::<Error>::new(s))
                }
                other => Err(Error::type_err("secret", other)),
            },
            CAPSULE_NAME => {
                match self.value {
                    Value::Capsule(c) => visitor.visit_newtype_struct(
                        de::value::StringDeserializer::<Error>::new(park_capsule(c)),
                    ),
                    other => Err(Error::type_err("capsule", other)),
                }
            }
            _ => visitor.visit_newtype_struct(self),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Array(items) => visitor.visit_seq(ArraySeq {
                it: items.iter(),
                index: 0,
            }),
            other => Err(Error::type_err("array", other)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Object(map) => visitor.visit_map(ObjectMap {
                it: map.iter(),
                current: None,
            }),
            other => Err(Error::type_err("object", other)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Object(map) if map.len() == 1 => {
                let (k, v) = map
                    .iter()
                    .next()
                    .ok_or_else(|| Error::type_err("string", self.value))?;
                visitor.visit_enum(EnumAccess {
                    variant: k,
                    value: v,
                })
            }
            other => Err(Error::type_err("string", other)),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! { i128 u128 }
}

struct ArraySeq<'a> {
    it: std::slice::Iter<'a, Value>,
    index: usize,
}

impl<'de, 'a> SeqAccess<'de> for ArraySeq<'a> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.it.next() {
            None => Ok(None),
            Some(value) => {
                let i = self.index;
                self.index += 1;
                seed.deserialize(ValueDeserializer { value })
                    .map(Some)
                    .map_err(|e| e.with_segment(format!("[{i}]")))
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.it.len())
    }
}

struct ObjectMap<'a> {
    it: std::collections::btree_map::Iter<'a, String, Value>,
    current: Option<(&'a String, &'a Value)>,
}

impl<'de, 'a> MapAccess<'de> for ObjectMap<'a> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.it.next() {
            None => Ok(None),
            Some((k, v)) => {
                self.current = Some((k, v));
                seed.deserialize(de::value::StrDeserializer::<Error>::new(k))
                    .map(Some)
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((k, value)) = self.current.take() else {
            return Err(Error::new(ErrorKind::Message("value without key".into())));
        };
        seed.deserialize(ValueDeserializer { value })
            .map_err(|e| e.with_segment(object_segment(k)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.it.len())
    }
}

fn object_segment(k: &str) -> String {
    let ident = !k.is_empty()
        && k.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ident {
        format!(".{k}")
    } else {
        format!("[{k:?}]")
    }
}

struct EnumAccess<'a> {
    variant: &'a str,
    value: &'a Value,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumAccess<'a> {
    type Error = Error;
    type Variant = VariantAccess<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        let v = seed.deserialize(de::value::StrDeserializer::<Error>::new(self.variant))?;
        Ok((v, VariantAccess { value: self.value }))
    }
}

struct VariantAccess<'a> {
    value: &'a Value,
}

impl<'de, 'a> de::VariantAccess<'de> for VariantAccess<'a> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(ValueDeserializer { value: self.value })
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        ValueDeserializer { value: self.value }.deserialize_seq(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        ValueDeserializer { value: self.value }.deserialize_map(visitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Argument types

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

use serde::Deserialize as _;

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

// ---------------------------------------------------------------------------------------------
// Serializer to Value

struct ValueSerializer;

type SerResult = Result<Value, Error>;

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = SeqSer;
    type SerializeTuple = SeqSer;
    type SerializeTupleStruct = SeqSer;
    type SerializeTupleVariant = VariantSeqSer;
    type SerializeMap = MapSer;
    type SerializeStruct = MapSer;
    type SerializeStructVariant = VariantMapSer;

    fn serialize_bool(self, v: bool) -> SerResult {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> SerResult {
        Ok(Value::Number(Number::Int(v.into())))
    }
    fn serialize_i16(self, v: i16) -> SerResult {
        Ok(Value::Number(Number::Int(v.into())))
    }
    fn serialize_i32(self, v: i32) -> SerResult {
        Ok(Value::Number(Number::Int(v.into())))
    }
    fn serialize_i64(self, v: i64) -> SerResult {
        Ok(Value::Number(Number::Int(v)))
    }
    fn serialize_u8(self, v: u8) -> SerResult {
        Ok(Value::Number(Number::Uint(v.into())))
    }
    fn serialize_u16(self, v: u16) -> SerResult {
        Ok(Value::Number(Number::Uint(v.into())))
    }
    fn serialize_u32(self, v: u32) -> SerResult {
        Ok(Value::Number(Number::Uint(v.into())))
    }
    fn serialize_u64(self, v: u64) -> SerResult {
        Ok(Value::Number(Number::Uint(v)))
    }
    fn serialize_f32(self, v: f32) -> SerResult {
        Ok(Value::Number(Number::Float(v.into())))
    }
    fn serialize_f64(self, v: f64) -> SerResult {
        Ok(Value::Number(Number::Float(v)))
    }
    fn serialize_char(self, v: char) -> SerResult {
        Ok(Value::String(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> SerResult {
        Ok(Value::String(v.to_string()))
    }
    fn serialize_bytes(self, v: &[u8]) -> SerResult {
        Ok(Value::String(String::from_utf8_lossy(v).into_owned()))
    }
    fn serialize_none(self) -> SerResult {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> SerResult {
        value.serialize(self)
    }
    fn serialize_unit(self) -> SerResult {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> SerResult {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> SerResult {
        Ok(Value::String(variant.to_string()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> SerResult {
        match name {
            SECRET_NAME => {
                if let Some(s) = OUT_SECRET.with(|o| o.borrow_mut().take()) {
                    return Ok(Value::Secret(s));
                }
                value.serialize(self)
            }
            CAPSULE_NAME => {
                if let Some(c) = OUT_CAPSULE.with(|o| o.borrow_mut().take()) {
                    return Ok(Value::Capsule(c));
                }
                value.serialize(self)
            }
            _ => value.serialize(self),
        }
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> SerResult {
        let mut m = BTreeMap::new();
        m.insert(variant.to_string(), value.serialize(ValueSerializer)?);
        Ok(Value::Object(m))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer, Error> {
        Ok(SeqSer(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqSer, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantSeqSer, Error> {
        Ok(VariantSeqSer(variant, SeqSer(Vec::with_capacity(len))))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapSer, Error> {
        Ok(MapSer(BTreeMap::new(), None))
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<MapSer, Error> {
        Ok(MapSer(BTreeMap::new(), None))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<VariantMapSer, Error> {
        Ok(VariantMapSer(variant, MapSer(BTreeMap::new(), None)))
    }
}

struct SeqSer(Vec<Value>);

impl ser::SerializeSeq for SeqSer {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.0.push(v.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> SerResult {
        Ok(Value::Array(self.0))
    }
}

impl ser::SerializeTuple for SeqSer {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> SerResult {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqSer {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> SerResult {
        ser::SerializeSeq::end(self)
    }
}

struct VariantSeqSer(&'static str, SeqSer);

impl ser::SerializeTupleVariant for VariantSeqSer {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(&mut self.1, v)
    }
    fn end(self) -> SerResult {
        let mut m = BTreeMap::new();
        m.insert(self.0.to_string(), ser::SerializeSeq::end(self.1)?);
        Ok(Value::Object(m))
    }
}

struct MapSer(BTreeMap<String, Value>, Option<String>);

impl ser::SerializeMap for MapSer {
    type Ok = Value;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        let k = match key.serialize(ValueSerializer)? {
            Value::String(s) => s,
            Value::Number(n) => number_to_string(n),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(Error::new(ErrorKind::Message(format!(
                    "object keys must be strings, got {}",
                    other.type_name()
                ))))
            }
        };
        self.1 = Some(k);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let k = self.1.take().unwrap_or_default();
        self.0.insert(k, value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> SerResult {
        Ok(Value::Object(self.0))
    }
}

impl ser::SerializeStruct for MapSer {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.0
            .insert(key.to_string(), value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> SerResult {
        Ok(Value::Object(self.0))
    }
}

struct VariantMapSer(&'static str, MapSer);

impl ser::SerializeStructVariant for VariantMapSer {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        ser::SerializeStruct::serialize_field(&mut self.1, key, value)
    }
    fn end(self) -> SerResult {
        let mut m = BTreeMap::new();
        m.insert(self.0.to_string(), Value::Object(self.1 .0));
        Ok(Value::Object(m))
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
