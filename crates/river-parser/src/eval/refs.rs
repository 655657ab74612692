//! Variable references of expressions and bodies: the `a.b.c` chains the runtime turns into
//! edges of the component graph.

use crate::ast::{self, ExprKind};
use crate::span::Span;

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
