//! The River syntax tree. Every node carries the byte span it was parsed from.

use crate::span::Span;

/// A whole River file: its statements and every comment found in it (in source order), so the
/// formatter can put comments back.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub body: Body,
    pub comments: Vec<Comment>,
}

/// `// line` or `/* block */` comment; `text` includes the delimiters.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    pub text: String,
    pub span: Span,
}

pub type Body = Vec<Stmt>;

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    Attribute(Attribute),
    Block(Block),
}

impl Stmt {
    pub fn span(&self) -> Span {
        match self {
            Stmt::Attribute(a) => a.span,
            Stmt::Block(b) => b.span,
        }
    }
}

/// `name = value`
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `a.b.c "label" { body }`
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The dotted name parts, `["a", "b", "c"]`.
    pub name: Vec<Ident>,
    /// The decoded label (without quotes), if any.
    pub label: Option<String>,
    pub label_span: Option<Span>,
    pub body: Body,
    pub lcurly: Span,
    pub rcurly: Span,
    pub span: Span,
}

impl Block {
    /// The dotted name, `a.b.c`.
    pub fn full_name(&self) -> String {
        self.name
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The span of the dotted name.
    pub fn name_span(&self) -> Span {
        match (self.name.first(), self.name.last()) {
            (Some(f), Some(l)) => f.span.to(l.span),
            _ => self.span,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Literal(Literal),
    Array {
        elements: Vec<Expr>,
        lbrack: Span,
        rbrack: Span,
    },
    Object {
        fields: Vec<ObjectField>,
        lcurly: Span,
        rcurly: Span,
    },
    Ident(Ident),
    /// `value.name`
    Access {
        value: Box<Expr>,
        name: Ident,
    },
    /// `value[index]`
    Index {
        value: Box<Expr>,
        index: Box<Expr>,
        lbrack: Span,
        rbrack: Span,
    },
    /// `func(args...)`
    Call {
        func: Box<Expr>,
        args: Vec<Expr>,
        lparen: Span,
        rparen: Span,
    },
    Unary {
        op: UnaryOp,
        op_span: Span,
        value: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        op_span: Span,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `( inner )`
    Paren {
        inner: Box<Expr>,
        lparen: Span,
        rparen: Span,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObjectField {
    /// The key as written: an identifier or a double-quoted string.
    pub name: String,
    /// Whether the key was written as a quoted string.
    pub quoted: bool,
    pub name_span: Span,
    pub value: Expr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Literal {
    pub kind: LitKind,
    /// The literal exactly as written in the source (used by the formatter).
    pub raw: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LitKind {
    Null,
    Bool(bool),
    /// An integer literal (digits only); kept as text so large values can become uint or float.
    Number(String),
    /// A literal with a `.` or exponent.
    Float(f64),
    /// A decoded string (escape sequences resolved; raw strings as is).
    String(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `!`
    Not,
    /// `-`
    Neg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

impl BinaryOp {
    /// Binding power: higher binds tighter. `^` is right-associative.
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            BinaryOp::Eq
            | BinaryOp::NotEq
            | BinaryOp::Lt
            | BinaryOp::LtEq
            | BinaryOp::Gt
            | BinaryOp::GtEq => 3,
            BinaryOp::Add | BinaryOp::Sub => 4,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => 5,
            BinaryOp::Pow => 6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BinaryOp::Or => "||",
            BinaryOp::And => "&&",
            BinaryOp::Eq => "==",
            BinaryOp::NotEq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Pow => "^",
        }
    }
}

impl UnaryOp {
    pub fn as_str(self) -> &'static str {
        match self {
            UnaryOp::Not => "!",
            UnaryOp::Neg => "-",
        }
    }
}
