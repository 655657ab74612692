//! Runtime values of River expressions.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A River value.
#[derive(Clone)]
pub enum Value {
    Null,
    Number(Number),
    String(String),
    Bool(bool),
    Array(Vec<Value>),
    /// Objects keep their keys sorted so equality and output are deterministic.
    Object(BTreeMap<String, Value>),
    Function(Function),
    /// An opaque host value (for example a profiles receiver) passed between components.
    Capsule(Capsule),
    /// A string that must never be shown; displayed as `(secret)`.
    Secret(String),
}

/// River numbers keep the kind they were written or computed as.
#[derive(Clone, Copy, Debug)]
pub enum Number {
    Int(i64),
    Uint(u64),
    Float(f64),
}

/// The body of a [`Function`]: arguments in, value or error message out.
pub type NativeFn = dyn Fn(&[Value]) -> Result<Value, String> + Send + Sync;

/// A callable value: a standard-library function.
#[derive(Clone)]
pub struct Function {
    pub name: &'static str,
    pub call: Arc<NativeFn>,
}

/// An opaque value owned by the host. Two capsules are equal when they point to the same object.
#[derive(Clone)]
pub struct Capsule {
    /// A short type name shown in the UI and in errors, e.g. `pyroscope.Appendable`.
    pub type_name: &'static str,
    pub inner: Arc<dyn Any + Send + Sync>,
}

impl Capsule {
    pub fn new<T: Any + Send + Sync>(type_name: &'static str, value: Arc<T>) -> Self {
        Capsule {
            type_name,
            inner: value,
        }
    }

    pub fn downcast<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.inner.clone().downcast::<T>().ok()
    }
}

impl Value {
    /// The type name used in error messages (`should be number, got string`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Bool(_) => "bool",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
            Value::Function(_) => "function",
            Value::Capsule(_) => "capsule",
            Value::Secret(_) => "secret",
        }
    }
}

impl PartialEq for Number {
    fn eq(&self, other: &Self) -> bool {
        match (*self, *other) {
            (Number::Int(a), Number::Int(b)) => a == b,
            (Number::Uint(a), Number::Uint(b)) => a == b,
            (Number::Int(a), Number::Uint(b)) | (Number::Uint(b), Number::Int(a)) => {
                a >= 0 && a as u64 == b
            }
            (a, b) => a.as_f64() == b.as_f64(),
        }
    }
}

impl Number {
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Uint(u) => u as f64,
            Number::Float(f) => f,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Number(a), Value::Number(b)) => a == b,
            (Value::String(a), Value::String(b)) => a == b,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Array(a), Value::Array(b)) => a == b,
            (Value::Object(a), Value::Object(b)) => a == b,
            (Value::Function(a), Value::Function(b)) => Arc::ptr_eq(&a.call, &b.call),
            (Value::Capsule(a), Value::Capsule(b)) => Arc::ptr_eq(&a.inner, &b.inner),
            (Value::Secret(a), Value::Secret(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "null"),
            Value::Number(Number::Int(i)) => write!(f, "{i}"),
            Value::Number(Number::Uint(u)) => write!(f, "{u}"),
            Value::Number(Number::Float(x)) => write!(f, "{x:?}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Array(a) => f.debug_list().entries(a).finish(),
            Value::Object(o) => f.debug_map().entries(o).finish(),
            Value::Function(func) => write!(f, "function({})", func.name),
            Value::Capsule(c) => write!(f, "capsule({:?})", c.type_name),
            Value::Secret(_) => write!(f, "(secret)"),
        }
    }
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "function({})", self.name)
    }
}

impl fmt::Debug for Capsule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "capsule({})", self.type_name)
    }
}
