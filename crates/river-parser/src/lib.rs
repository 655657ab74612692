//! The River configuration language: lexer and parser (pest), a syntax tree with spans,
//! evaluation with the standard library, decoding into Rust structs, the canonical formatter
//! and diagnostics that point at `file:line:col`.

pub mod ast;
pub mod diag;
pub mod lexer;
pub mod parser;
pub mod span;
pub mod value;

pub use diag::{Diagnostic, Diagnostics};
pub use parser::{parse_expr, parse_file};
pub use span::{LineCol, LineIndex, Span};
pub use value::{Capsule, Function, Number, Value};
