//! The body deserializer: presents an evaluated block body to serde as a struct whose fields
//! are its attributes and its blocks (blocks of one name grouped into a sequence), and the
//! probe that tells, for a missing field, whether serde wanted a block or an attribute.

use super::types::PROBE;
use super::value::ValueDeserializer;
use super::{Error, ErrorKind, CAPSULE_NAME, LABEL_FIELD, SECRET_NAME};
use crate::eval::{BodyItem, BodyValue};
use crate::span::Span;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use std::collections::BTreeMap;

/// Runs `T`'s decoding again, presenting the missing `field` of the body at `ptr` with a probe
/// that records whether the field decodes as a struct/map (a block) or something else.
pub(super) fn probe_field_kind<T: DeserializeOwned>(
    body: &BodyValue,
    span: Span,
    ptr: usize,
    field: &'static str,
) -> bool {
    PROBE.with(|p| *p.borrow_mut() = Some((ptr, field)));
    let r = T::deserialize(BodyDeserializer::top(body, span));
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

pub(super) struct BodyDeserializer<'a> {
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
    /// The deserializer of a body that belongs to no block (a component's own body);
    /// "missing ..." errors point at `span`.
    pub(super) fn top(body: &'a BodyValue, span: Span) -> Self {
        BodyDeserializer {
            body,
            span,
            label: None,
            block_name: None,
        }
    }

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
