//! River parser: a hand-written recursive-descent parser over the tokens of [`crate::lexer`].
//!
//! Why not parse with the pest grammar directly: a PEG reports "expected one of ..." at the
//! furthest failure and stops, while River users (and the reference test suite) expect the
//! reference parser's messages (`missing ',' in expression list`, `expected TERMINATOR, got
//! IDENT`, ...), at the reference positions, and every error of the file at once. That needs
//! explicit recovery (skip to the next statement, eat the rest of a broken expression), which a
//! hand-written parser does naturally.
//!
//! Grammar (LL(1)):
//!
//! ```text
//! File       = Body
//! Body       = [ Statement { TERMINATOR Statement } ]
//! Statement  = Attribute | Block
//! Attribute  = IDENT "=" Expression
//! Block      = IDENT { "." IDENT } [ STRING ] "{" Body "}"
//! Expression = OrExpr            (|| < && < comparisons < + - < * / % < ^ right-assoc;
//!                                 `cond ? a : b` is parsed but reported as unsupported)
//! Unary      = ( "!" | "-" ) Unary | Primary { "." IDENT | "[" Expression "]" | "(" [ List ] ")" }
//! Primary    = IDENT | STRING | NUMBER | FLOAT | BOOL | NULL | "(" Expression ")"
//!            | "[" [ List ] "]" | "{" [ Field { "," Field } [ "," ] ] "}"
//! Field      = ( STRING | IDENT ) "=" Expression
//! ```
//!
//! Errors reported through [`Parser::error`] are limited to the first one per line, like the
//! reference; the final list is sorted by position and keeps at most one error per line.

use crate::ast::{
    Attribute, BinaryOp, Block, Body, Comment, Expr, ExprKind, File, Ident, LitKind, Literal,
    ObjectField, Stmt, UnaryOp,
};
use crate::diag::{Diagnostic, Diagnostics};
use crate::lexer::{self, Token, TokenKind};
use crate::quote::go_quote;
use crate::span::{LineIndex, Span};

/// Parses a whole River file. On error, returns every error of the file (at most the first per
/// line), sorted by position.
pub fn parse_file(src: &str) -> Result<File, Diagnostics> {
    let mut p = Parser::new(src);
    let body = p.parse_body(TokenKind::Eof);
    p.skip_to_eof();
    let comments = std::mem::take(&mut p.comments);
    p.finish().map(|()| File { body, comments })
}

/// Parses a single expression (optionally followed by a newline).
pub fn parse_expr(src: &str) -> Result<Expr, Diagnostics> {
    let mut p = Parser::new(src);
    let expr = p.parse_expression();
    if p.tok().kind == TokenKind::Terminator {
        p.next();
    }
    if p.tok().kind != TokenKind::Eof {
        let got = p.tok().kind;
        p.error(format!("expected EOF, got {got}"), None);
    }
    p.finish().map(|()| expr)
}

struct Parser<'a> {
    src: &'a str,
    /// Built on the first error only: valid input never needs line numbers.
    index: std::cell::OnceCell<LineIndex>,
    /// The tokens, pulled one at a time; comments are moved to `comments` on the way.
    stream: lexer::TokenStream<'a, lexer::Scanner<'a>>,
    /// The current token and, once looked at, the one after it.
    cur: Token<'a>,
    ahead: Option<Token<'a>>,
    comments: Vec<Comment>,
    /// Errors of the lexer and the parser.
    diags: Vec<Diagnostic>,
    /// Line (0-based) of the last error reported through `error`.
    last_error_line: Option<usize>,
    /// Current nesting of expressions and blocks, bounded by [`MAX_NESTING`].
    depth: usize,
    /// Set when parsing was abandoned (nesting too deep): later errors are not reported.
    aborted: bool,
    /// Scratch stacks that statements, list elements and fields are collected on while their
    /// list is parsed (nested lists above), then moved into an exactly sized `Vec`: one
    /// allocation per list instead of a growing one.
    stmt_stack: Vec<Stmt>,
    expr_stack: Vec<Expr>,
    field_stack: Vec<ObjectField>,
}

/// Deepest nesting of expressions and blocks accepted; deeper input is rejected instead of
/// risking a stack overflow in the recursive parser.
pub const MAX_NESTING: usize = 100;

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        let mut p = Parser {
            src,
            index: std::cell::OnceCell::new(),
            stream: lexer::stream(src),
            cur: Token {
                kind: TokenKind::Eof,
                span: Span::new(0, 0),
                text: std::borrow::Cow::Borrowed(""),
            },
            ahead: None,
            comments: Vec::new(),
            diags: Vec::new(),
            last_error_line: None,
            depth: 0,
            aborted: false,
            stmt_stack: Vec::new(),
            expr_stack: Vec::new(),
            field_stack: Vec::new(),
        };
        p.cur = p.pull();
        p
    }

    /// The next token that is not a comment (`EOF` for ever once the input is exhausted).
    fn pull(&mut self) -> Token<'a> {
        loop {
            match self.stream.next() {
                Some(t) if t.kind == TokenKind::Comment => self.comments.push(Comment {
                    text: t.text.into_owned(),
                    span: t.span,
                }),
                Some(t) => return t,
                None => {
                    let end = Span::new(self.src.len(), self.src.len());
                    return Token {
                        kind: TokenKind::Eof,
                        span: end,
                        text: std::borrow::Cow::Borrowed(""),
                    };
                }
            }
        }
    }

    /// The token after the current one.
    fn peek(&mut self) -> &Token<'a> {
        if self.ahead.is_none() {
            let t = self.pull();
            self.ahead = Some(t);
        }
        self.ahead.as_ref().unwrap_or(&self.cur)
    }

    /// Skips the rest of the input (collecting its comments and lexical errors).
    fn skip_to_eof(&mut self) {
        while self.cur.kind != TokenKind::Eof {
            self.next();
        }
    }

    fn finish(mut self) -> Result<(), Diagnostics> {
        self.skip_to_eof();
        // Lexical errors go first: at the same position they win over the parser's.
        let mut diags = self.stream.finish();
        diags.append(&mut self.diags);
        self.diags = diags;
        if self.diags.is_empty() {
            return Ok(());
        }
        self.diags.sort_by_key(|d| d.span.start);
        let index = LineIndex::new(self.src);
        let mut seen_line = None;
        let mut out = Diagnostics::default();
        for d in self.diags {
            let line = index.line_of(d.span.start.min(self.src.len()));
            if seen_line == Some(line) {
                continue;
            }
            seen_line = Some(line);
            out.push(d);
        }
        Err(out)
    }

    fn index(&self) -> &LineIndex {
        self.index.get_or_init(|| LineIndex::new(self.src))
    }

    fn tok(&self) -> &Token<'a> {
        &self.cur
    }

    fn kind(&self) -> TokenKind {
        self.cur.kind
    }

    fn next(&mut self) {
        if self.cur.kind != TokenKind::Eof {
            self.cur = match self.ahead.take() {
                Some(t) => t,
                None => self.pull(),
            };
        }
    }

    /// Reports `msg` at the current token unless an error was already reported on its line.
    fn error(&mut self, msg: String, hint: Option<&str>) {
        if self.aborted {
            return;
        }
        let span = self.tok().span;
        let line = self.index().line_of(span.start.min(self.src.len()));
        if self.last_error_line == Some(line) {
            return;
        }
        self.last_error_line = Some(line);
        self.push_diag(span, msg, hint);
    }

    /// Reports an error unconditionally (no per-line suppression).
    fn push_diag(&mut self, span: Span, msg: String, hint: Option<&str>) {
        if self.aborted {
            return;
        }
        let mut d = Diagnostic::new(span, msg);
        if let Some(h) = hint {
            d = d.with_hint(h);
        }
        self.diags.push(d);
    }

    /// Consumes the current token, reporting an error if it is not `kind`. Returns its span.
    fn expect(&mut self, kind: TokenKind) -> (Span, bool) {
        let t = self.tok();
        let (span, got) = (t.span, t.kind);
        let ok = got == kind;
        if !ok {
            self.error(format!("expected {kind}, got {got}"), None);
        }
        self.next();
        (span, ok)
    }

    /// Skips tokens up to (not including) `kind` or EOF.
    fn advance_to(&mut self, kind: TokenKind) {
        while !matches!(self.kind(), TokenKind::Eof) && self.kind() != kind {
            self.next();
        }
    }

    /// Skips the rest of a broken statement: up to a terminator outside any bracket pair, or up
    /// to (not including) a closing bracket that closes a pair opened before the statement (the
    /// end of the enclosing block, list or call), so the enclosing construct can still finish.
    /// (The reference skips such closers too, which makes one error cascade through the rest of
    /// the enclosing block.)
    fn consume_statement(&mut self) {
        let mut depth = 0usize;
        loop {
            match self.kind() {
                TokenKind::Eof => return,
                TokenKind::LCurly | TokenKind::LBrack | TokenKind::LParen => depth += 1,
                TokenKind::RCurly | TokenKind::RBrack | TokenKind::RParen => {
                    if depth == 0 {
                        return;
                    }
                    depth -= 1;
                }
                TokenKind::Terminator if depth == 0 => return,
                _ => {}
            }
            self.next();
        }
    }

    /// `Body = [ Statement { TERMINATOR Statement } ]`, up to (not including) `until`.
    fn parse_body(&mut self, until: TokenKind) -> Body {
        let base = self.stmt_stack.len();
        while self.kind() != until && self.kind() != TokenKind::Eof {
            if let Some(stmt) = self.parse_statement() {
                self.stmt_stack.push(stmt);
            }
            if self.kind() == until {
                break;
            }
            if self.kind() != TokenKind::Terminator {
                let got = self.kind();
                let hint = match got {
                    TokenKind::Ident => Some("put each attribute or block on its own line"),
                    TokenKind::RCurly | TokenKind::RBrack | TokenKind::RParen => {
                        Some("this closing bracket has no matching opening bracket")
                    }
                    _ => None,
                };
                self.error(
                    format!("expected {}, got {got}", TokenKind::Terminator),
                    hint,
                );
                self.consume_statement();
                if self.kind() == until {
                    break;
                }
            }
            self.next();
        }
        self.stmt_stack.drain(base..).collect()
    }

    fn parse_statement(&mut self) -> Option<Stmt> {
        let Some(name) = self.parse_block_name() else {
            self.consume_statement();
            return None;
        };
        match self.kind() {
            TokenKind::Assign => {
                self.next();
                if name.parts.len() != 1 {
                    let span = name.parts[0].span.to(name.parts[name.parts.len() - 1].span);
                    self.push_diag(
                        span,
                        r#"attribute names may only consist of a single identifier with no ".""#
                            .to_string(),
                        Some("to set an attribute of a nested block, write the block out"),
                    );
                } else if let Some(label_span) = name.label_span {
                    self.push_diag(
                        label_span,
                        "attribute names may not have labels".to_string(),
                        None,
                    );
                }
                let value = self.parse_expression();
                let ident = name.parts.into_iter().next().unwrap_or(Ident {
                    name: String::new(),
                    span: name.start,
                });
                Some(Stmt::Attribute(Attribute {
                    span: ident.span.to(value.span),
                    name: ident,
                    value,
                }))
            }
            TokenKind::LCurly => {
                let (lcurly, _) = self.expect(TokenKind::LCurly);
                if self.depth >= MAX_NESTING {
                    self.nested(|p| placeholder(p.tok().span));
                }
                self.depth += 1;
                let body = self.parse_body(TokenKind::RCurly);
                self.depth -= 1;
                if self.kind() == TokenKind::Eof {
                    let lc = self.index().line_col(self.src, lcurly.start);
                    let hint = format!(
                        "the block opened at line {}, column {} is never closed",
                        lc.line, lc.col
                    );
                    self.error(format!("expected }}, got {}", TokenKind::Eof), Some(&hint));
                }
                let (rcurly, _) = self.expect(TokenKind::RCurly);
                let start = name.parts.first().map_or(name.start, |i| i.span);
                Some(Stmt::Block(Block {
                    name: name.parts,
                    label: name.label,
                    label_span: name.label_span,
                    body,
                    lcurly,
                    rcurly,
                    span: start.to(rcurly),
                }))
            }
            got => {
                if name.parts.len() == 1 && name.label.is_none() {
                    self.error(
                        format!("expected attribute assignment or block body, got {got}"),
                        Some("write `name = value` for an attribute or `name { ... }` for a block"),
                    );
                } else {
                    self.error(format!("expected block body, got {got}"), None);
                }
                self.consume_statement();
                None
            }
        }
    }

    /// `BlockName = IDENT { "." IDENT } [ STRING ]`
    fn parse_block_name(&mut self) -> Option<BlockName> {
        if self.kind() != TokenKind::Ident {
            let got = self.kind();
            self.error(format!("expected identifier, got {got}"), None);
            return None;
        }
        let first = self.tok();
        let mut name = BlockName {
            start: first.span,
            parts: vec![Ident {
                name: first.text.to_string(),
                span: first.span,
            }],
            label: None,
            label_span: None,
        };
        self.next();
        while self.kind() == TokenKind::Dot {
            self.next();
            if self.kind() != TokenKind::Ident {
                let got = self.kind();
                self.error(format!("expected identifier, got {got}"), None);
            }
            let t = self.tok();
            name.parts.push(Ident {
                name: t.text.to_string(),
                span: t.span,
            });
            self.next();
        }
        // A name alone on its line is reported by the caller ("expected attribute assignment or
        // block body"), which is clearer than the reference's "expected block label, got
        // TERMINATOR".
        if !matches!(
            self.kind(),
            TokenKind::Assign | TokenKind::LCurly | TokenKind::Terminator | TokenKind::Eof
        ) {
            if self.kind() == TokenKind::String {
                let t = self.tok().clone();
                if !t.text.starts_with('"') {
                    self.error(
                        format!(
                            "expected block label to be a double quoted string, but got {}",
                            go_quote(&t.text)
                        ),
                        Some("write the label as \"name\""),
                    );
                }
                let inner = if t.text.len() >= 2 {
                    t.text.get(1..t.text.len() - 1).unwrap_or("")
                } else {
                    ""
                };
                if !inner.is_empty() && !lexer::is_valid_identifier(inner) {
                    self.error(
                        format!(
                            "expected block label to be a valid identifier, but got {}",
                            go_quote(inner)
                        ),
                        Some("a label is written like an identifier: letters, digits and `_`, not starting with a digit, and not `true`, `false` or `null`"),
                    );
                }
                name.label = Some(inner.to_string());
                name.label_span = Some(t.span);
            } else {
                let got = self.kind();
                self.error(format!("expected block label, got {got}"), None);
            }
            self.next();
        }
        Some(name)
    }

    /// Parses an expression. Never fails: on error a `null` placeholder is returned (the caller
    /// discards the tree anyway since an error was recorded).
    fn parse_expression(&mut self) -> Expr {
        let expr = self.nested(|p| p.parse_binary(1));
        if self.kind() == TokenKind::Question {
            // The reference grammar has `cond ? a : b`; rill's tree has no node for it. Parse it
            // anyway (for recovery) and report it.
            self.error(
                "conditional expressions (`cond ? a : b`) are not supported".to_string(),
                Some("compute the value in separate attributes, or pick it with a function"),
            );
            self.next();
            self.parse_expression();
            if self.kind() == TokenKind::Colon {
                self.next();
                self.parse_expression();
            }
        }
        expr
    }

    /// Runs `f` one nesting level deeper. Past [`MAX_NESTING`] parsing is abandoned: one error
    /// is reported, the rest of the input is skipped and a placeholder is returned.
    fn nested(&mut self, f: impl FnOnce(&mut Self) -> Expr) -> Expr {
        if self.depth >= MAX_NESTING {
            let span = self.tok().span;
            if !self.aborted {
                self.push_diag(
                    span,
                    format!("nesting too deep: more than {MAX_NESTING} levels"),
                    Some("split the value into several attributes"),
                );
            }
            self.aborted = true;
            self.skip_to_eof();
            return placeholder(span);
        }
        self.depth += 1;
        let e = f(self);
        self.depth -= 1;
        e
    }

    /// Left-associative binary operators of precedence `min_prec` and above (`^` is handled in
    /// `parse_pow`).
    fn parse_binary(&mut self, min_prec: u8) -> Expr {
        let mut lhs = self.parse_pow();
        loop {
            let Some(op) = binary_op(self.kind()) else {
                return lhs;
            };
            let prec = op.precedence();
            if prec < min_prec {
                return lhs;
            }
            let op_span = self.tok().span;
            self.next();
            let rhs = self.parse_binary(prec + 1);
            lhs = Expr {
                span: lhs.span.to(rhs.span),
                kind: ExprKind::Binary {
                    op,
                    op_span,
                    left: Box::new(lhs),
                    right: Box::new(rhs),
                },
            };
        }
    }

    /// `Pow = Unary [ "^" Pow ]` (right-associative).
    fn parse_pow(&mut self) -> Expr {
        let lhs = self.parse_unary();
        if self.kind() != TokenKind::Pow {
            return lhs;
        }
        let op_span = self.tok().span;
        self.next();
        let rhs = self.nested(Self::parse_pow);
        Expr {
            span: lhs.span.to(rhs.span),
            kind: ExprKind::Binary {
                op: BinaryOp::Pow,
                op_span,
                left: Box::new(lhs),
                right: Box::new(rhs),
            },
        }
    }

    fn parse_unary(&mut self) -> Expr {
        let op = match self.kind() {
            TokenKind::Not => Some(UnaryOp::Not),
            TokenKind::Sub => Some(UnaryOp::Neg),
            _ => None,
        };
        if let Some(op) = op {
            let op_span = self.tok().span;
            self.next();
            let value = self.nested(Self::parse_unary);
            return Expr {
                span: op_span.to(value.span),
                kind: ExprKind::Unary {
                    op,
                    op_span,
                    value: Box::new(value),
                },
            };
        }

        let mut primary = self.parse_primary();
        loop {
            match self.kind() {
                TokenKind::Dot => {
                    self.next();
                    let t = self.tok().clone();
                    self.expect(TokenKind::Ident);
                    let name = Ident {
                        name: t.text.into_owned(),
                        span: t.span,
                    };
                    primary = Expr {
                        span: primary.span.to(name.span),
                        kind: ExprKind::Access {
                            value: Box::new(primary),
                            name,
                        },
                    };
                }
                TokenKind::LBrack => {
                    let (lbrack, _) = self.expect(TokenKind::LBrack);
                    let index = self.parse_expression();
                    let (rbrack, _) = self.expect(TokenKind::RBrack);
                    primary = Expr {
                        span: primary.span.to(rbrack),
                        kind: ExprKind::Index {
                            value: Box::new(primary),
                            index: Box::new(index),
                            lbrack,
                            rbrack,
                        },
                    };
                }
                TokenKind::LParen => {
                    let (lparen, _) = self.expect(TokenKind::LParen);
                    let args = if self.kind() != TokenKind::RParen {
                        self.parse_expression_list(TokenKind::RParen)
                    } else {
                        Vec::new()
                    };
                    let (rparen, _) = self.expect(TokenKind::RParen);
                    primary = Expr {
                        span: primary.span.to(rparen),
                        kind: ExprKind::Call {
                            func: Box::new(primary),
                            args,
                            lparen,
                            rparen,
                        },
                    };
                }
                TokenKind::String | TokenKind::LCurly => {
                    // Looks like a block assigned to an attribute (`x = a.b "label" { ... }`):
                    // parse it as a block to give a precise error.
                    if self.kind() == TokenKind::String {
                        self.next();
                    }
                    if !self.expect(TokenKind::LCurly).1 {
                        self.consume_statement();
                        return primary;
                    }
                    self.parse_body(TokenKind::RCurly);
                    let (rcurly, ok) = self.expect(TokenKind::RCurly);
                    if !ok {
                        self.consume_statement();
                        return primary;
                    }
                    self.push_diag(
                        primary.span.to(rcurly),
                        "cannot use a block as an expression".to_string(),
                        Some("blocks can only be declared as statements; to use a component's exports, reference them by name, e.g. `prometheus.remote_write.default.receiver`"),
                    );
                }
                _ => return primary,
            }
        }
    }

    fn parse_primary(&mut self) -> Expr {
        let t = self.tok().clone();
        let lit = |kind: LitKind| Expr {
            span: t.span,
            kind: ExprKind::Literal(Literal {
                kind,
                raw: t.text.to_string(),
            }),
        };
        let expr = match t.kind {
            TokenKind::Ident => Expr {
                span: t.span,
                kind: ExprKind::Ident(Ident {
                    name: t.text.to_string(),
                    span: t.span,
                }),
            },
            TokenKind::String => lit(LitKind::String(lexer::unquote(&t.text))),
            TokenKind::Number => lit(LitKind::Number(t.text.to_string())),
            TokenKind::Float => lit(LitKind::Float(parse_float(&t.text))),
            TokenKind::Bool => lit(LitKind::Bool(t.text == "true")),
            TokenKind::Null => lit(LitKind::Null),
            TokenKind::LParen => {
                let (lparen, _) = self.expect(TokenKind::LParen);
                let inner = self.parse_expression();
                let (rparen, _) = self.expect(TokenKind::RParen);
                return Expr {
                    span: lparen.to(rparen),
                    kind: ExprKind::Paren {
                        inner: Box::new(inner),
                        lparen,
                        rparen,
                    },
                };
            }
            TokenKind::LBrack => {
                let (lbrack, _) = self.expect(TokenKind::LBrack);
                let elements = if self.kind() != TokenKind::RBrack {
                    self.parse_expression_list(TokenKind::RBrack)
                } else {
                    Vec::new()
                };
                let (rbrack, _) = self.expect(TokenKind::RBrack);
                return Expr {
                    span: lbrack.to(rbrack),
                    kind: ExprKind::Array {
                        elements,
                        lbrack,
                        rbrack,
                    },
                };
            }
            TokenKind::LCurly => {
                let (lcurly, _) = self.expect(TokenKind::LCurly);
                let fields = if self.kind() != TokenKind::RCurly {
                    self.parse_field_list(TokenKind::RCurly)
                } else {
                    Vec::new()
                };
                let (rcurly, _) = self.expect(TokenKind::RCurly);
                return Expr {
                    span: lcurly.to(rcurly),
                    kind: ExprKind::Object {
                        fields,
                        lcurly,
                        rcurly,
                    },
                };
            }
            got => {
                self.error(format!("expected expression, got {got}"), None);
                // Eat the rest of the broken expression.
                while !matches!(
                    self.kind(),
                    TokenKind::Eof
                        | TokenKind::Terminator
                        | TokenKind::RParen
                        | TokenKind::RCurly
                        | TokenKind::RBrack
                        | TokenKind::Comma
                ) {
                    self.next();
                }
                return placeholder(t.span);
            }
        };
        self.next();
        expr
    }

    /// `List = Expression { "," Expression } [ "," ]`, up to `until`.
    fn parse_expression_list(&mut self, until: TokenKind) -> Vec<Expr> {
        let base = self.expr_stack.len();
        while self.kind() != until && self.kind() != TokenKind::Eof {
            let e = self.parse_expression();
            self.expr_stack.push(e);
            if self.kind() == until {
                break;
            }
            if self.kind() != TokenKind::Comma {
                let hint = self.missing_comma_hint(until, "list", "element");
                self.error(
                    "missing ',' in expression list".to_string(),
                    hint.as_deref(),
                );
            }
            self.next();
        }
        self.expr_stack.drain(base..).collect()
    }

    /// A hint for a missing comma: at a line end, the trailing-comma rule; at the end of the
    /// input, the missing closing bracket.
    fn missing_comma_hint(&mut self, until: TokenKind, what: &str, item: &str) -> Option<String> {
        if self.kind() != TokenKind::Terminator && self.kind() != TokenKind::Eof {
            return None;
        }
        let at_eof = self.kind() == TokenKind::Eof || self.peek().kind == TokenKind::Eof;
        if at_eof {
            Some(format!(
                "the input ends here: is a closing '{until}' missing?"
            ))
        } else {
            Some(format!(
                "when a {what} spans several lines, every {item} needs a ',' after it, including the last"
            ))
        }
    }

    /// `Fields = Field { "," Field } [ "," ]`, up to `until`.
    fn parse_field_list(&mut self, until: TokenKind) -> Vec<ObjectField> {
        let base = self.field_stack.len();
        while self.kind() != until && self.kind() != TokenKind::Eof {
            let f = self.parse_field();
            self.field_stack.push(f);
            if self.kind() == until {
                break;
            }
            if self.kind() != TokenKind::Comma {
                let hint = self.missing_comma_hint(until, "object", "field");
                self.error("missing ',' in field list".to_string(), hint.as_deref());
            }
            self.next();
        }
        self.field_stack.drain(base..).collect()
    }

    /// `Field = ( STRING | IDENT ) "=" Expression`
    fn parse_field(&mut self) -> ObjectField {
        let t = self.tok().clone();
        let (name, quoted) = match t.kind {
            TokenKind::Ident => {
                self.next();
                (t.text.to_string(), false)
            }
            TokenKind::String => {
                self.next();
                let inner = if t.text.len() >= 2 {
                    t.text.get(1..t.text.len() - 1).unwrap_or("").to_string()
                } else {
                    String::new()
                };
                (inner, true)
            }
            got => {
                self.error(
                    format!("expected field name (string or identifier), got {got}"),
                    Some("quote the key, e.g. \"1337\" = ..."),
                );
                self.advance_to(TokenKind::Assign);
                (String::new(), false)
            }
        };
        self.expect(TokenKind::Assign);
        let value = self.parse_expression();
        ObjectField {
            name,
            quoted,
            name_span: t.span,
            value,
        }
    }
}

struct BlockName {
    start: Span,
    parts: Vec<Ident>,
    label: Option<String>,
    label_span: Option<Span>,
}

/// The `null` stand-in for an expression that failed to parse (the tree is discarded anyway).
fn placeholder(at: Span) -> Expr {
    Expr {
        span: Span::new(at.start, at.start),
        kind: ExprKind::Literal(Literal {
            kind: LitKind::Null,
            raw: "null".to_string(),
        }),
    }
}

fn binary_op(kind: TokenKind) -> Option<BinaryOp> {
    Some(match kind {
        TokenKind::Or => BinaryOp::Or,
        TokenKind::And => BinaryOp::And,
        TokenKind::Eq => BinaryOp::Eq,
        TokenKind::Neq => BinaryOp::NotEq,
        TokenKind::Lt => BinaryOp::Lt,
        TokenKind::Lte => BinaryOp::LtEq,
        TokenKind::Gt => BinaryOp::Gt,
        TokenKind::Gte => BinaryOp::GtEq,
        TokenKind::Add => BinaryOp::Add,
        TokenKind::Sub => BinaryOp::Sub,
        TokenKind::Mul => BinaryOp::Mul,
        TokenKind::Div => BinaryOp::Div,
        TokenKind::Mod => BinaryOp::Mod,
        TokenKind::Pow => BinaryOp::Pow,
        _ => return None,
    })
}

/// Parses a FLOAT token (`1.`, `.5`, `1e3`); a malformed exponent was reported by the lexer.
fn parse_float(text: &str) -> f64 {
    text.parse().unwrap_or_else(|_| {
        // `1e` / `1e+` (already reported): use the mantissa.
        let mantissa = text.trim_end_matches(['e', 'E', '+', '-']);
        mantissa.parse().unwrap_or(0.0)
    })
}
