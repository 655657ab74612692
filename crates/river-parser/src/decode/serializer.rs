//! The serializer from Rust values to River [`Value`]s (component exports): structs and maps
//! become objects, sequences arrays; [`super::Secret`] and [`super::CapsuleRef`] come back out of
//! the side table as a secret and a capsule.

use super::types::{OUT_CAPSULE, OUT_SECRET};
use super::value::number_to_string;
use super::{Error, ErrorKind, CAPSULE_NAME, SECRET_NAME};
use crate::value::{Number, Value};
use serde::ser::{self, Serialize};
use std::collections::BTreeMap;

pub(super) struct ValueSerializer;

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

pub(super) struct SeqSer(Vec<Value>);

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

pub(super) struct VariantSeqSer(&'static str, SeqSer);

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

pub(super) struct MapSer(BTreeMap<String, Value>, Option<String>);

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

pub(super) struct VariantMapSer(&'static str, MapSer);

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
