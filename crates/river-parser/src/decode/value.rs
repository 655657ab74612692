//! The value deserializer: one River [`Value`] as serde input, with Alloy's conversions between
//! numbers and strings and the capsule/secret tokens of the side table.

use super::types::park_capsule;
use super::{Error, ErrorKind, CAPSULE_NAME, SECRET_NAME};
use crate::value::{Number, Value};
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

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
