//! The River configuration language: lexer and parser (pest), a syntax tree with spans,
//! evaluation with the standard library, decoding into Rust structs, the canonical formatter
//! and diagnostics that point at `file:line:col`.

pub mod ast;
pub mod decode;
pub mod diag;
pub mod eval;
pub mod json;
pub mod lexer;
pub mod parser;
pub mod printer;
pub mod quote;
pub mod span;
mod stdlib;
pub mod value;

pub use decode::{
    decode_body, decode_value, to_value, CapsuleRef, Duration, Invalid, PathSegment, Secret,
    Validate,
};
pub use diag::{Diagnostic, Diagnostics};
pub use eval::{eval_body, eval_expr, BodyItem, BodyValue, Scope};
pub use parser::{parse_expr, parse_file};
pub use printer::{format_file, format_source};
pub use quote::go_quote;
pub use span::{LineCol, LineIndex, Span};
pub use value::{Capsule, Function, Number, Value};
