//! Evaluation of River expressions and bodies into [`Value`]s.
//!
//! Semantics follow Alloy's `syntax/vm`: operators are strictly typed (no implicit bool or number
//! conversion), `+` also concatenates strings (and secrets), integer arithmetic wraps like Go's,
//! `obj.missing` is an error while `obj["missing"]` is `null`. Errors carry the span of the
//! offending sub-expression and read like the reference (`"x" should be number, got string`).

mod ops;
mod refs;

pub use ops::{binary, unary, values_equal, Side};
pub use refs::{body_references, expr_references, Reference};

use crate::ast::{self, ExprKind, LitKind};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::BinaryOp;

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
