//! Alloy's JSON encoding of River values and bodies, as served by the UI API
//! (`/api/v0/web/components/{id}`): every value is `{"type": T, "value": V}`; objects are lists
//! of `{"key", "value"}` pairs; bodies are lists of `{"name", "type": "attr", "value"}` and
//! `{"name", "type": "block", "label"?, "body": [...]}` statements; secrets are capsules shown
//! as `(secret)`; numbers are JSON numbers (the reference encodes them as float64).

use crate::eval::{BodyItem, BodyValue};
use crate::value::{Number, Value};
use serde_json::{json, Map, Value as Json};

/// Encodes one value.
pub fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Null => json!({"type": "null", "value": null}),
        Value::Number(n) => json!({"type": "number", "value": number_json(*n)}),
        Value::String(s) => json!({"type": "string", "value": s}),
        Value::Bool(b) => json!({"type": "bool", "value": b}),
        Value::Array(items) => {
            let elems: Vec<Json> = items.iter().map(value_to_json).collect();
            json!({"type": "array", "value": elems})
        }
        Value::Object(map) => {
            let fields: Vec<Json> = map
                .iter()
                .map(|(k, v)| json!({"key": k, "value": value_to_json(v)}))
                .collect();
            json!({"type": "object", "value": fields})
        }
        Value::Function(_) => json!({"type": "function", "value": "function"}),
        Value::Capsule(c) => {
            json!({"type": "capsule", "value": format!("capsule({:?})", c.type_name)})
        }
        Value::Secret(_) => json!({"type": "capsule", "value": "(secret)"}),
    }
}

/// Numbers as float64 like the reference; integral values print without a fraction.
fn number_json(n: Number) -> Json {
    match n {
        Number::Int(i) => Json::from(i),
        Number::Uint(u) => Json::from(u),
        Number::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
                Json::from(f as i64)
            } else {
                serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
            }
        }
    }
}

/// Attributes of type `secret` (or holding secrets) in rill's components. Arguments are shown
/// before they are decoded, when a literal string is still a plain string, so these names are
/// redacted here, whatever the component.
const SECRET_ATTRS: [&str; 6] = [
    "password",
    "bearer_token",
    "credentials",
    "key_pem",
    "client_secret",
    "proxy_connect_header",
];

/// Every string inside `v` turned into a secret.
fn as_secret(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::Secret(s.clone()),
        Value::Array(items) => Value::Array(items.iter().map(as_secret).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), as_secret(v))).collect())
        }
        other => other.clone(),
    }
}

/// Encodes a body as a list of statements, in source order.
pub fn body_to_json(b: &BodyValue) -> Json {
    Json::Array(b.items.iter().map(item_to_json).collect())
}

fn item_to_json(item: &BodyItem) -> Json {
    match item {
        BodyItem::Attr { name, value, .. } if SECRET_ATTRS.contains(&name.as_str()) => {
            json!({"name": name, "type": "attr", "value": value_to_json(&as_secret(value))})
        }
        BodyItem::Attr { name, value, .. } => {
            json!({"name": name, "type": "attr", "value": value_to_json(value)})
        }
        BodyItem::Block {
            name, label, body, ..
        } => {
            let mut m = Map::new();
            m.insert("name".into(), Json::from(name.as_str()));
            m.insert("type".into(), Json::from("block"));
            if let Some(l) = label.as_deref().filter(|l| !l.is_empty()) {
                m.insert("label".into(), Json::from(l));
            }
            m.insert("body".into(), body_to_json(body));
            Json::Object(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Span;
    use std::collections::BTreeMap;

    #[test]
    fn encodes_values_like_alloy() {
        let mut obj = BTreeMap::new();
        obj.insert("b".to_string(), Value::Number(Number::Float(1.5)));
        obj.insert("a".to_string(), Value::Null);
        let v = Value::Array(vec![
            Value::String("x".into()),
            Value::Object(obj),
            Value::Secret("pw".into()),
            Value::Number(Number::Float(15.0)),
        ]);
        assert_eq!(
            value_to_json(&v).to_string(),
            r#"{"type":"array","value":[{"type":"string","value":"x"},{"type":"object","value":[{"key":"a","value":{"type":"null","value":null}},{"key":"b","value":{"type":"number","value":1.5}}]},{"type":"capsule","value":"(secret)"},{"type":"number","value":15}]}"#
        );
    }

    #[test]
    fn encodes_bodies() {
        let body = BodyValue {
            items: vec![
                BodyItem::Attr {
                    name: "targets".into(),
                    name_span: Span::default(),
                    value: Value::Bool(true),
                    span: Span::default(),
                },
                BodyItem::Block {
                    name: "rule".into(),
                    label: None,
                    name_span: Span::default(),
                    body: BodyValue::default(),
                    span: Span::default(),
                },
            ],
        };
        assert_eq!(
            body_to_json(&body).to_string(),
            r#"[{"name":"targets","type":"attr","value":{"type":"bool","value":true}},{"body":[],"name":"rule","type":"block"}]"#
        );
    }
}
