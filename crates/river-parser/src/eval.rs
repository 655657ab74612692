//! Evaluation of River expressions and bodies into [`Value`]s.
//!
//! Semantics follow Alloy's `syntax/vm`: operators are strictly typed (no implicit bool or number
//! conversion), `+` also concatenates strings (and secrets), integer arithmetic wraps like Go's,
//! `obj.missing` is an error while `obj["missing"]` is `null`. Errors carry the span of the
//! offending sub-expression and read like the reference (`"x" should be number, got string`).

use crate::ast::{self, BinaryOp, ExprKind, LitKind, UnaryOp};
use crate::diag::{Diagnostic, Diagnostics};
use crate::span::Span;
use crate::value::{Number, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// Variables visible to an expression, with the standard library as fallback.
#[derive(Debug, Clone)]
pub struct Scope {
    vars: HashMap<String, Value>,
    stdlib: bool,
}

impl Default for Scope {
    fn default() -> Self {
        Scope::new()
    }
}

impl Scope {
    /// An empty scope that falls back to the standard library.
    pub fn new() -> Self {
        Scope {
            vars: HashMap::new(),
            stdlib: true,
        }
    }

    /// An empty scope without the standard library (mostly for tests).
    pub fn without_stdlib() -> Self {
        Scope {
            vars: HashMap::new(),
            stdlib: false,
        }
    }

    /// Defines (or replaces) a variable. Variables shadow standard-library names.
    pub fn set(&mut self, name: impl Into<String>, value: Value) {
        self.vars.insert(name.into(), value);
    }

    /// Removes a variable, returning its old value.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.vars.remove(name)
    }

    /// Looks a name up in the variables, then in the standard library.
    pub fn get(&self, name: &str) -> Option<&Value> {
        if let Some(v) = self.vars.get(name) {
            return Some(v);
        }
        if self.stdlib {
            return crate::stdlib::lookup(name);
        }
        None
    }

    /// Sets `value` at a dotted path, creating intermediate objects: `set_path(&["a","b"], v)`
    /// makes `a` an object holding `b = v` (merging with what `a` already holds).
    pub fn set_path(&mut self, path: &[&str], value: Value) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        if rest.is_empty() {
            self.set(*first, value);
            return;
        }
        let entry = self
            .vars
            .entry((*first).to_string())
            .or_insert_with(|| Value::Object(BTreeMap::new()));
        insert_path(entry, rest, value);
    }
}

fn insert_path(target: &mut Value, path: &[&str], value: Value) {
    if !matches!(target, Value::Object(_)) {
        *target = Value::Object(BTreeMap::new());
    }
    let Value::Object(map) = target else {
        return;
    };
    match path.split_first() {
        None => {}
        Some((last, [])) => {
            map.insert((*last).to_string(), value);
        }
        Some((first, rest)) => {
            let entry = map
                .entry((*first).to_string())
                .or_insert_with(|| Value::Object(BTreeMap::new()));
            insert_path(entry, rest, value);
        }
    }
}

/// An evaluated body: attributes evaluated to values, blocks kept with their structure.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BodyValue {
    pub items: Vec<BodyItem>,
}

/// One evaluated statement of a body, in source order.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyItem {
    Attr {
        name: String,
        name_span: Span,
        value: Value,
        span: Span,
    },
    Block {
        name: String,
        label: Option<String>,
        name_span: Span,
        body: BodyValue,
        span: Span,
    },
}

impl BodyItem {
    pub fn name(&self) -> &str {
        match self {
            BodyItem::Attr { name, .. } | BodyItem::Block { name, .. } => name,
        }
    }

    pub fn span(&self) -> Span {
        match self {
            BodyItem::Attr { span, .. } | BodyItem::Block { span, .. } => *span,
        }
    }

    pub fn name_span(&self) -> Span {
        match self {
            BodyItem::Attr { name_span, .. } | BodyItem::Block { name_span, .. } => *name_span,
        }
    }
}

impl BodyValue {
    /// The span covering every statement (empty span at 0 for an empty body).
    pub fn span(&self) -> Span {
        match (self.items.first(), self.items.last()) {
            (Some(f), Some(l)) => f.span().to(l.span()),
            _ => Span::default(),
        }
    }

    /// The value of the first attribute called `name`.
    pub fn attr(&self, name: &str) -> Option<&Value> {
        self.items.iter().find_map(|i| match i {
            BodyItem::Attr { name: n, value, .. } if n == name => Some(value),
            _ => None,
        })
    }
}

/// Evaluates every attribute of `body` (nested blocks included), collecting all errors.
pub fn eval_body(body: &ast::Body, scope: &Scope) -> Result<BodyValue, Diagnostics> {
    let mut diags = Diagnostics::default();
    let value = eval_body_into(body, scope, &mut diags);
    if diags.is_empty() {
        Ok(value)
    } else {
        Err(diags)
    }
}

fn eval_body_into(body: &ast::Body, scope: &Scope, diags: &mut Diagnostics) -> BodyValue {
    let mut items = Vec::with_capacity(body.len());
    for stmt in body {
        match stmt {
            ast::Stmt::Attribute(a) => match eval_expr(&a.value, scope) {
                Ok(value) => items.push(BodyItem::Attr {
                    name: a.name.name.clone(),
                    name_span: a.name.span,
                    value,
                    span: a.span,
                }),
                Err(d) => diags.push(d),
            },
            ast::Stmt::Block(b) => {
                let inner = eval_body_into(&b.body, scope, diags);
                let name = match b.name.as_slice() {
                    [single] => single.name.clone(),
                    _ => b.full_name(),
                };
                items.push(BodyItem::Block {
                    name,
                    label: b.label.clone(),
                    name_span: b.name_span(),
                    body: inner,
                    span: b.span,
                });
            }
        }
    }
    BodyValue { items }
}

/// Evaluates an expression. The error points at the sub-expression that failed.
pub fn eval_expr(expr: &ast::Expr, scope: &Scope) -> Result<Value, Diagnostic> {
    match &expr.kind {
        ExprKind::Literal(lit) => Ok(literal_value(lit)),
        ExprKind::Array { elements, .. } => {
            let mut out = Vec::with_capacity(elements.len());
            for e in elements {
                out.push(eval_expr(e, scope)?);
            }
            Ok(Value::Array(out))
        }
        ExprKind::Object { fields, .. } => {
            let mut out = BTreeMap::new();
            for f in fields {
                let v = eval_expr(&f.value, scope)?;
                out.insert(f.name.clone(), v);
            }
            Ok(Value::Object(out))
        }
        ExprKind::Ident(id) => match scope.get(&id.name) {
            Some(v) => Ok(v.clone()),
            None => Err(Diagnostic::new(
                id.span,
                format!("identifier {:?} does not exist", id.name),
            )),
        },
        ExprKind::Access { .. } | ExprKind::Index { .. } => {
            // Walk the access chain without cloning intermediate objects.
            place(expr, scope).map(Cow::into_owned)
        }
        ExprKind::Call { func, args, .. } => {
            let f = eval_expr(func, scope)?;
            let Value::Function(f) = f else {
                return Err(value_error(
                    func,
                    format!("should be function, got {}", f.type_name()),
                ));
            };
            let mut vals = Vec::with_capacity(args.len());
            for a in args {
                vals.push(eval_expr(a, scope)?);
            }
            (f.call)(&vals).map_err(|msg| match parse_arg_error(&msg) {
                Some((i, inner)) if i < args.len() => value_error(&args[i], inner),
                Some((_, inner)) => value_error(func, inner),
                None => value_error(func, msg),
            })
        }
        ExprKind::Unary { op, value, .. } => {
            let v = eval_expr(value, scope)?;
            unary(*op, v).map_err(|msg| value_error(value, msg))
        }
        ExprKind::Binary {
            op, left, right, ..
        } => {
            let l = eval_expr(left, scope)?;
            // Evaluate both sides like the reference (no short-circuit).
            let r = eval_expr(right, scope)?;
            binary(*op, l, r).map_err(|(side, msg)| match side {
                Side::Left => value_error(left, msg),
                Side::Right => value_error(right, msg),
            })
        }
        ExprKind::Paren { inner, .. } => eval_expr(inner, scope),
    }
}

/// Resolves an access/index chain, borrowing from the scope where possible so that
/// `a.b.c` does not clone `a` and `a.b` on the way.
fn place<'s>(expr: &ast::Expr, scope: &'s Scope) -> Result<Cow<'s, Value>, Diagnostic> {
    match &expr.kind {
        ExprKind::Ident(id) => match scope.get(&id.name) {
            Some(v) => Ok(Cow::Borrowed(v)),
            None => Err(Diagnostic::new(
                id.span,
                format!("identifier {:?} does not exist", id.name),
            )),
        },
        ExprKind::Access { value, name } => {
            let base = place(value, scope)?;
            let missing =
                || Diagnostic::new(name.span, format!("field {:?} does not exist", name.name));
            match base {
                Cow::Borrowed(Value::Object(map)) => {
                    map.get(&name.name).map(Cow::Borrowed).ok_or_else(missing)
                }
                Cow::Owned(Value::Object(mut map)) => {
                    map.remove(&name.name).map(Cow::Owned).ok_or_else(missing)
                }
                other => Err(value_error(
                    value,
                    format!(
                        "cannot access field {:?} on value of type {}",
                        name.name,
                        other.type_name()
                    ),
                )),
            }
        }
        ExprKind::Index { value, index, .. } => {
            let base = place(value, scope)?;
            let idx = eval_expr(index, scope)?;
            match (&*base, &idx) {
                (Value::Array(items), Value::Number(n)) => {
                    let i = number_as_index(*n);
                    if i < 0 || i as usize >= items.len() {
                        return Err(value_error(
                            index,
                            format!(
                                "index {i} is out of range of array with length {}",
                                items.len()
                            ),
                        ));
                    }
                    Ok(match base {
                        Cow::Borrowed(Value::Array(items)) => Cow::Borrowed(&items[i as usize]),
                        Cow::Owned(Value::Array(mut items)) => {
                            Cow::Owned(items.swap_remove(i as usize))
                        }
                        _ => Cow::Owned(Value::Null),
                    })
                }
                (Value::Array(_), other) => Err(value_error(
                    index,
                    format!("should be number, got {}", other.type_name()),
                )),
                (Value::Object(_), Value::String(k)) => Ok(match base {
                    Cow::Borrowed(Value::Object(map)) => map
                        .get(k.as_str())
                        .map_or(Cow::Owned(Value::Null), Cow::Borrowed),
                    Cow::Owned(Value::Object(mut map)) => {
                        Cow::Owned(map.remove(k.as_str()).unwrap_or(Value::Null))
                    }
                    _ => Cow::Owned(Value::Null),
                }),
                (Value::Object(_), other) => Err(value_error(
                    index,
                    format!("should be string, got {}", other.type_name()),
                )),
                (other, _) => Err(value_error(
                    value,
                    format!("expected object or array, got {}", other.type_name()),
                )),
            }
        }
        ExprKind::Paren { inner, .. } => place(inner, scope),
        _ => eval_expr(expr, scope).map(Cow::Owned),
    }
}

fn number_as_index(n: Number) -> i64 {
    match n {
        Number::Int(i) => i,
        Number::Uint(u) => i64::try_from(u).unwrap_or(i64::MAX),
        Number::Float(f) => f as i64,
    }
}

/// The value of a literal. Integer literals become int, then uint, then float as they grow.
pub fn literal_value(lit: &ast::Literal) -> Value {
    match &lit.kind {
        LitKind::Null => Value::Null,
        LitKind::Bool(b) => Value::Bool(*b),
        LitKind::Number(text) => Value::Number(parse_int_literal(text)),
        LitKind::Float(f) => Value::Number(Number::Float(*f)),
        LitKind::String(s) => Value::String(s.clone()),
    }
}

fn parse_int_literal(text: &str) -> Number {
    if let Ok(i) = text.parse::<i64>() {
        Number::Int(i)
    } else if let Ok(u) = text.parse::<u64>() {
        Number::Uint(u)
    } else {
        Number::Float(text.parse::<f64>().unwrap_or(f64::INFINITY))
    }
}

const ARG_ERROR_MARK: char = '\u{0}';

/// Builds a function error about argument `index` (0-based): evaluation reports it at that
/// argument (`"x" should be array, got string`) instead of at the function name. Host functions
/// (`Function::call`) can use it too.
pub fn arg_error(index: usize, msg: impl AsRef<str>) -> String {
    format!("{ARG_ERROR_MARK}{index}{ARG_ERROR_MARK}{}", msg.as_ref())
}

fn parse_arg_error(msg: &str) -> Option<(usize, &str)> {
    let rest = msg.strip_prefix(ARG_ERROR_MARK)?;
    let (idx, inner) = rest.split_once(ARG_ERROR_MARK)?;
    Some((idx.parse().ok()?, inner))
}

/// A diagnostic about the value of `expr`, prefixed with the expression's text as the reference
/// does (`"x" should be number, got string`).
fn value_error(expr: &ast::Expr, msg: impl AsRef<str>) -> Diagnostic {
    Diagnostic::new(expr.span, format!("{} {}", expr_text(expr), msg.as_ref()))
}

/// Renders an expression compactly (single line) for error messages.
pub fn expr_text(expr: &ast::Expr) -> String {
    let mut s = String::new();
    write_expr(&mut s, expr);
    if s.len() > 120 {
        let mut cut = 117;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn write_expr(out: &mut String, expr: &ast::Expr) {
    match &expr.kind {
        ExprKind::Literal(lit) => match &lit.kind {
            LitKind::String(s) if lit.raw.is_empty() => out.push_str(&format!("{s:?}")),
            _ => out.push_str(&lit.raw),
        },
        ExprKind::Array { elements, .. } => {
            out.push('[');
            for (i, e) in elements.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_expr(out, e);
            }
            out.push(']');
        }
        ExprKind::Object { fields, .. } => {
            if fields.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push_str("{ ");
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if f.quoted {
                    out.push_str(&format!("{:?}", f.name));
                } else {
                    out.push_str(&f.name);
                }
                out.push_str(" = ");
                write_expr(out, &f.value);
            }
            out.push_str(" }");
        }
        ExprKind::Ident(id) => out.push_str(&id.name),
        ExprKind::Access { value, name } => {
            write_expr(out, value);
            out.push('.');
            out.push_str(&name.name);
        }
        ExprKind::Index { value, index, .. } => {
            write_expr(out, value);
            out.push('[');
            write_expr(out, index);
            out.push(']');
        }
        ExprKind::Call { func, args, .. } => {
            write_expr(out, func);
            out.push('(');
            for (i, e) in args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_expr(out, e);
            }
            out.push(')');
        }
        ExprKind::Unary { op, value, .. } => {
            out.push_str(op.as_str());
            write_expr(out, value);
        }
        ExprKind::Binary {
            op, left, right, ..
        } => {
            write_expr(out, left);
            out.push(' ');
            out.push_str(op.as_str());
            out.push(' ');
            write_expr(out, right);
        }
        ExprKind::Paren { inner, .. } => {
            out.push('(');
            write_expr(out, inner);
            out.push(')');
        }
    }
}

/// Applies a unary operator. The error message is about the operand.
pub fn unary(op: UnaryOp, v: Value) -> Result<Value, String> {
    match (op, v) {
        (UnaryOp::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
        (UnaryOp::Not, other) => Err(format!("should be bool, got {}", other.type_name())),
        (UnaryOp::Neg, Value::Number(n)) => Ok(Value::Number(match n {
            Number::Int(i) => Number::Int(i.wrapping_neg()),
            // The reference always negates unsigned values as signed.
            Number::Uint(u) => Number::Int((u as i64).wrapping_neg()),
            Number::Float(f) => Number::Float(-f),
        })),
        (UnaryOp::Neg, other) => Err(format!("should be number, got {}", other.type_name())),
    }
}

/// Which operand of a binary operator an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Uint,
    Int,
    Float,
}

fn kind(n: Number) -> Kind {
    match n {
        Number::Uint(_) => Kind::Uint,
        Number::Int(_) => Kind::Int,
        Number::Float(_) => Kind::Float,
    }
}

/// The common kind two numbers are computed in: float beats int beats uint.
fn fit(a: Number, b: Number) -> Kind {
    match (kind(a), kind(b)) {
        (Kind::Float, _) | (_, Kind::Float) => Kind::Float,
        (Kind::Int, _) | (_, Kind::Int) => Kind::Int,
        _ => Kind::Uint,
    }
}

fn as_i64(n: Number) -> i64 {
    match n {
        Number::Int(i) => i,
        Number::Uint(u) => u as i64,
        Number::Float(f) => f as i64,
    }
}

fn as_u64(n: Number) -> u64 {
    match n {
        Number::Int(i) => i as u64,
        Number::Uint(u) => u,
        Number::Float(f) => f as u64,
    }
}

fn allowed_types(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Or | BinaryOp::And => "[bool]",
        BinaryOp::Add => "[number string secret]",
        BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod | BinaryOp::Pow => "[number]",
        _ => "[number string]",
    }
}

fn acceptable(op: BinaryOp, v: &Value) -> bool {
    match op {
        BinaryOp::Or | BinaryOp::And => matches!(v, Value::Bool(_)),
        BinaryOp::Add => matches!(v, Value::Number(_) | Value::String(_) | Value::Secret(_)),
        BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod | BinaryOp::Pow => {
            matches!(v, Value::Number(_))
        }
        _ => matches!(v, Value::Number(_) | Value::String(_)),
    }
}

/// Applies a binary operator; errors say which operand is at fault.
pub fn binary(op: BinaryOp, l: Value, r: Value) -> Result<Value, (Side, String)> {
    match op {
        BinaryOp::Eq => return Ok(Value::Bool(values_equal(&l, &r))),
        BinaryOp::NotEq => return Ok(Value::Bool(!values_equal(&l, &r))),
        _ => {}
    }
    // Secrets mix with strings: the result of `+` stays secret.
    let (l, r) = match (l, r) {
        (Value::Secret(a), Value::String(b)) => (Value::Secret(a), Value::Secret(b)),
        (Value::String(a), Value::Secret(b)) => (Value::Secret(a), Value::Secret(b)),
        other => other,
    };
    for (side, v) in [(Side::Left, &l), (Side::Right, &r)] {
        if !acceptable(op, v) {
            return Err((
                side,
                format!(
                    "should be one of {} for binop {}, got {}",
                    allowed_types(op),
                    op.as_str(),
                    v.type_name()
                ),
            ));
        }
    }
    if l.type_name() != r.type_name() {
        return Err((
            Side::Right,
            format!("should be {}, got {}", l.type_name(), r.type_name()),
        ));
    }
    match (l, r) {
        (Value::Bool(a), Value::Bool(b)) => Ok(Value::Bool(match op {
            BinaryOp::Or => a || b,
            _ => a && b,
        })),
        (Value::String(a), Value::String(b)) => match op {
            BinaryOp::Add => {
                let mut s = a;
                s.push_str(&b);
                Ok(Value::String(s))
            }
            _ => Ok(Value::Bool(compare_ord(op, a.cmp(&b)))),
        },
        (Value::Secret(a), Value::Secret(b)) => {
            let mut s = a;
            s.push_str(&b);
            Ok(Value::Secret(s))
        }
        (Value::Number(a), Value::Number(b)) => number_binary(op, a, b),
        _ => Err((Side::Right, "unsupported operand types".to_string())),
    }
}

fn compare_ord(op: BinaryOp, ord: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        BinaryOp::Lt => ord == Less,
        BinaryOp::LtEq => ord != Greater,
        BinaryOp::Gt => ord == Greater,
        _ => ord != Less,
    }
}

fn compare_f64(op: BinaryOp, a: f64, b: f64) -> bool {
    match op {
        BinaryOp::Lt => a < b,
        BinaryOp::LtEq => a <= b,
        BinaryOp::Gt => a > b,
        _ => a >= b,
    }
}

fn is_zero(n: Number) -> bool {
    match n {
        Number::Int(i) => i == 0,
        Number::Uint(u) => u == 0,
        Number::Float(f) => f == 0.0,
    }
}

fn number_binary(op: BinaryOp, a: Number, b: Number) -> Result<Value, (Side, String)> {
    let k = fit(a, b);
    if matches!(op, BinaryOp::Div | BinaryOp::Mod) && is_zero(b) {
        return Err((Side::Right, "divide by zero error".to_string()));
    }
    let num = |n: Number| Ok(Value::Number(n));
    match op {
        BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq => {
            let res = match k {
                Kind::Uint => compare_ord(op, as_u64(a).cmp(&as_u64(b))),
                Kind::Int => compare_ord(op, as_i64(a).cmp(&as_i64(b))),
                Kind::Float => compare_f64(op, a.as_f64(), b.as_f64()),
            };
            Ok(Value::Bool(res))
        }
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => match k {
            Kind::Uint => {
                let (x, y) = (as_u64(a), as_u64(b));
                num(Number::Uint(match op {
                    BinaryOp::Add => x.wrapping_add(y),
                    BinaryOp::Sub => x.wrapping_sub(y),
                    BinaryOp::Mul => x.wrapping_mul(y),
                    BinaryOp::Div => x / y,
                    _ => x % y,
                }))
            }
            Kind::Int => {
                let (x, y) = (as_i64(a), as_i64(b));
                num(Number::Int(match op {
                    BinaryOp::Add => x.wrapping_add(y),
                    BinaryOp::Sub => x.wrapping_sub(y),
                    BinaryOp::Mul => x.wrapping_mul(y),
                    BinaryOp::Div => x.wrapping_div(y),
                    _ => x.wrapping_rem(y),
                }))
            }
            Kind::Float => {
                let (x, y) = (a.as_f64(), b.as_f64());
                num(Number::Float(match op {
                    BinaryOp::Add => x + y,
                    BinaryOp::Sub => x - y,
                    BinaryOp::Mul => x * y,
                    BinaryOp::Div => x / y,
                    _ => x % y,
                }))
            }
        },
        BinaryOp::Pow => match k {
            Kind::Uint => num(Number::Uint(int_pow_u(as_u64(a), as_u64(b)))),
            Kind::Int => num(Number::Int(int_pow_i(as_i64(a), as_i64(b)))),
            Kind::Float => num(Number::Float(a.as_f64().powf(b.as_f64()))),
        },
        _ => Err((Side::Right, "unsupported operator".to_string())),
    }
}

/// Integer power with wrapping, matching the reference: `n^0 == 1`, a negative exponent leaves
/// the base unchanged.
fn int_pow_i(n: i64, m: i64) -> i64 {
    if m == 0 || n == 1 {
        return 1;
    }
    if n == 0 && m > 0 {
        return 0;
    }
    if m < 0 {
        return n;
    }
    let mut base = n;
    let mut exp = m as u64;
    let mut acc: i64 = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = acc.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        exp >>= 1;
    }
    acc
}

fn int_pow_u(n: u64, m: u64) -> u64 {
    if m == 0 || n == 1 {
        return 1;
    }
    let mut base = n;
    let mut exp = m;
    let mut acc: u64 = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = acc.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        exp >>= 1;
    }
    acc
}

/// River equality: values of different types are never equal, `3 == 3.0`, functions are never
/// equal, capsules are equal when they hold the same object.
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Number(x), Value::Number(y)) => match fit(*x, *y) {
            Kind::Uint => as_u64(*x) == as_u64(*y),
            Kind::Int => as_i64(*x) == as_i64(*y),
            Kind::Float => x.as_f64() == y.as_f64(),
        },
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Secret(x), Value::Secret(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        (Value::Capsule(x), Value::Capsule(y)) => std::sync::Arc::ptr_eq(&x.inner, &y.inner),
        _ => false,
    }
}

/// A variable reference found in an expression: the longest `a.b.c` chain starting at an
/// identifier (`discovery.relabel.local_pods.output` → `["discovery", "relabel", "local_pods",
/// "output"]`), with the span of that chain. The runtime uses these to build the component graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub path: Vec<String>,
    pub span: Span,
}

/// Every variable reference in `expr`, in source order.
pub fn expr_references(expr: &ast::Expr) -> Vec<Reference> {
    let mut out = Vec::new();
    collect_refs(expr, &mut out);
    out
}

/// Every variable reference in the attributes of `body` (nested blocks included).
pub fn body_references(body: &ast::Body) -> Vec<Reference> {
    let mut out = Vec::new();
    for stmt in body {
        match stmt {
            ast::Stmt::Attribute(a) => collect_refs(&a.value, &mut out),
            ast::Stmt::Block(b) => out.extend(body_references(&b.body)),
        }
    }
    out
}

/// The `ident.field.field` chain `expr` consists of, if it is one.
fn access_chain(expr: &ast::Expr) -> Option<Vec<String>> {
    match &expr.kind {
        ExprKind::Ident(id) => Some(vec![id.name.clone()]),
        ExprKind::Access { value, name } => {
            let mut p = access_chain(value)?;
            p.push(name.name.clone());
            Some(p)
        }
        _ => None,
    }
}

fn collect_refs(expr: &ast::Expr, out: &mut Vec<Reference>) {
    if let Some(path) = access_chain(expr) {
        out.push(Reference {
            path,
            span: expr.span,
        });
        return;
    }
    match &expr.kind {
        ExprKind::Literal(_) | ExprKind::Ident(_) => {}
        ExprKind::Array { elements, .. } => elements.iter().for_each(|e| collect_refs(e, out)),
        ExprKind::Object { fields, .. } => fields.iter().for_each(|f| collect_refs(&f.value, out)),
        ExprKind::Access { value, .. } => collect_refs(value, out),
        ExprKind::Index { value, index, .. } => {
            collect_refs(value, out);
            collect_refs(index, out);
        }
        ExprKind::Call { func, args, .. } => {
            collect_refs(func, out);
            args.iter().for_each(|a| collect_refs(a, out));
        }
        ExprKind::Unary { value, .. } => collect_refs(value, out),
        ExprKind::Binary { left, right, .. } => {
            collect_refs(left, out);
            collect_refs(right, out);
        }
        ExprKind::Paren { inner, .. } => collect_refs(inner, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_src(src: &str) -> Result<Value, Diagnostic> {
        let expr = crate::parse_expr(src).expect("parses");
        eval_expr(&expr, &Scope::new())
    }

    #[test]
    fn references_are_longest_access_chains() {
        let expr = crate::parse_expr(
            "concat(discovery.relabel.a.output, [x], { k = y.z[0].w }, string.format(\"%s\", v))",
        )
        .expect("parses");
        let refs: Vec<String> = expr_references(&expr)
            .into_iter()
            .map(|r| r.path.join("."))
            .collect();
        assert_eq!(
            refs,
            [
                "concat",
                "discovery.relabel.a.output",
                "x",
                "y.z",
                "string.format",
                "v"
            ]
        );
    }

    #[test]
    fn set_path_merges_objects() {
        let mut scope = Scope::new();
        scope.set_path(&["a", "b", "c"], Value::Bool(true));
        scope.set_path(&["a", "b", "d"], Value::Bool(false));
        scope.set_path(&["a", "e"], Value::Null);
        let expr = crate::parse_expr("[a.b.c, a.b.d, a.e]").expect("parses");
        assert_eq!(
            eval_expr(&expr, &scope),
            Ok(Value::Array(vec![
                Value::Bool(true),
                Value::Bool(false),
                Value::Null
            ]))
        );
    }

    #[test]
    fn scope_variables_shadow_stdlib() {
        let mut scope = Scope::new();
        scope.set("env", Value::String("shadowed".into()));
        let expr = crate::parse_expr("env").expect("parses");
        assert_eq!(
            eval_expr(&expr, &scope),
            Ok(Value::String("shadowed".into()))
        );
        assert!(Scope::without_stdlib().get("env").is_none());
        assert!(Scope::new().get("env").is_some());
    }

    #[test]
    fn hand_built_ast_evaluates() {
        // 2 * (3 + 4) built by hand, independent of the parser.
        let lit = |n: &str, at: usize| ast::Expr {
            kind: ExprKind::Literal(ast::Literal {
                kind: LitKind::Number(n.to_string()),
                raw: n.to_string(),
            }),
            span: Span::new(at, at + 1),
        };
        let sum = ast::Expr {
            kind: ExprKind::Binary {
                op: BinaryOp::Add,
                op_span: Span::new(7, 8),
                left: Box::new(lit("3", 5)),
                right: Box::new(lit("4", 9)),
            },
            span: Span::new(5, 10),
        };
        let product = ast::Expr {
            kind: ExprKind::Binary {
                op: BinaryOp::Mul,
                op_span: Span::new(2, 3),
                left: Box::new(lit("2", 0)),
                right: Box::new(sum),
            },
            span: Span::new(0, 10),
        };
        assert_eq!(
            eval_expr(&product, &Scope::new()),
            Ok(Value::Number(Number::Int(14)))
        );
    }

    #[test]
    fn errors_point_at_the_operand() {
        let err = eval_src("1 + (2 - \"x\")").expect_err("type error");
        assert_eq!(
            err.message,
            "\"x\" should be one of [number] for binop -, got string"
        );
        assert_eq!(err.span, Span::new(9, 12));
        let err = eval_src("1 + (2 + \"x\")").expect_err("type error");
        assert_eq!(err.message, "\"x\" should be number, got string");
        let err = eval_src("[1][5]").expect_err("out of range");
        assert_eq!(
            err.message,
            "5 index 5 is out of range of array with length 1"
        );
    }
}
