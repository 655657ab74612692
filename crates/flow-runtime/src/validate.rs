//! Checking a configuration without running it (`rill validate`): everything a load checks
//! before components start, and no component is built or run.
//!
//! Checked: syntax; the graph (unknown components, labels, duplicate IDs, references to
//! components that do not exist, cycles); the `logging` block; and each component's arguments
//! (unknown and missing attributes and blocks, types, `Validate` rules). An attribute whose value
//! depends on another component's exports cannot be known before that component runs (Alloy's
//! `validate` does not type-check those either): it is decoded with placeholder values (an empty
//! array, string, object, then `0`, `false`, `null`) until one fits its type, so the rest of the
//! body is still checked and the attribute still counts as present. When no placeholder fits,
//! the component's remaining checks are skipped — unless every placeholder failed with the same
//! message (an unknown attribute name), which is then reported. `Validate` failures located at
//! such an attribute, or about the whole body when one was used, are not reported.
//!
//! Diagnostics are collected across the file: every syntax error the parser reports, every graph
//! error, then (only when the syntax and the graph are sound) the first argument error of each
//! component, sorted by position.

use crate::loader::{self, NodeDef};
use crate::registry::{Checked, Registry};
use river_parser::ast::{Body, Expr, Stmt};
use river_parser::eval::{expr_references, BodyItem, BodyValue, Scope};
use river_parser::{Diagnostics, Number, Span, Value};
use std::collections::{BTreeMap, HashSet};

/// Validates `src` against `registry`. `Err` holds every diagnostic found (see the module
/// documentation), sorted by position.
pub fn validate_source(src: &str, registry: &Registry) -> Result<(), Diagnostics> {
    let file = river_parser::parse_file(src)?;
    let graph = loader::load(&file, src, registry)?;
    let mut diags = Diagnostics::default();
    if let Some(block) = &graph.logging {
        if let Err(d) = crate::logging::LoggingConfig::from_block(block) {
            diags.0.extend(d.0);
        }
    }
    let ids: HashSet<&str> = graph.nodes.iter().map(|n| n.id.as_str()).collect();
    for node in &graph.nodes {
        check_component(node, &ids, registry, &mut diags);
    }
    if diags.is_empty() {
        Ok(())
    } else {
        diags.0.sort_by_key(|d| d.span.start);
        Err(diags)
    }
}

/// Values tried, in order, for an attribute that depends on another component.
fn placeholder(choice: usize) -> Option<Value> {
    Some(match choice {
        0 => Value::Array(Vec::new()),
        1 => Value::String(String::new()),
        2 => Value::Object(BTreeMap::new()),
        3 => Value::Number(Number::Int(0)),
        4 => Value::Bool(false),
        5 => Value::Null,
        _ => return None,
    })
}

/// An attribute standing for a value only known at run time.
struct Unknown {
    span: Span,
    choice: usize,
    /// The messages of the decoding errors each placeholder gave.
    messages: Vec<String>,
}

fn check_component(
    node: &NodeDef,
    ids: &HashSet<&str>,
    registry: &Registry,
    diags: &mut Diagnostics,
) {
    let Some(builder) = registry.get(&node.name) else {
        return; // the loader reported it
    };
    let scope = Scope::new();
    let mut unknowns = Vec::new();
    let mut eval_errors = Diagnostics::default();
    collect_unknowns(&node.block.body, ids, &mut unknowns);
    let name_span = node.block.name_span();
    loop {
        let mut next = 0;
        eval_errors.0.clear();
        let body = evaluate(
            &node.block.body,
            &scope,
            ids,
            &unknowns,
            &mut next,
            &mut eval_errors,
        );
        if !eval_errors.is_empty() {
            diags.0.extend(eval_errors.0);
            return;
        }
        let within = |span: Span| {
            unknowns
                .iter()
                .position(|u| u.span.start <= span.start && span.end <= u.span.end)
        };
        match builder.check(&body, name_span) {
            Ok(()) => return,
            Err(Checked::Invalid(d)) => {
                let about_placeholder =
                    within(d.span).is_some() || (d.span == name_span && !unknowns.is_empty());
                if !about_placeholder {
                    diags.push(d);
                }
                return;
            }
            Err(Checked::Decode(d)) => {
                let Some(first) = d.0.first() else {
                    return;
                };
                let Some(k) = within(first.span) else {
                    diags.0.extend(d.0);
                    return;
                };
                let u = &mut unknowns[k];
                u.messages.push(first.message.clone());
                u.choice += 1;
                if placeholder(u.choice).is_none() {
                    if u.messages.windows(2).all(|w| w[0] == w[1]) {
                        diags.0.extend(d.0);
                    }
                    return;
                }
            }
        }
    }
}

/// Whether `expr` reads the exports of a declared component.
fn references_component(expr: &Expr, ids: &HashSet<&str>) -> bool {
    expr_references(expr)
        .iter()
        .any(|r| (1..=r.path.len()).any(|len| ids.contains(r.path[..len].join(".").as_str())))
}

/// The attributes of `body` (nested blocks included, in source order) that depend on a component.
fn collect_unknowns(body: &Body, ids: &HashSet<&str>, out: &mut Vec<Unknown>) {
    for stmt in body {
        match stmt {
            Stmt::Attribute(a) if references_component(&a.value, ids) => out.push(Unknown {
                span: a.span,
                choice: 0,
                messages: Vec::new(),
            }),
            Stmt::Attribute(_) => {}
            Stmt::Block(b) => collect_unknowns(&b.body, ids, out),
        }
    }
}

/// Evaluates `body` like the runtime does, giving the attributes of `unknowns` (met in the same
/// order as `collect_unknowns` found them; `next` counts them) their current placeholder.
fn evaluate(
    body: &Body,
    scope: &Scope,
    ids: &HashSet<&str>,
    unknowns: &[Unknown],
    next: &mut usize,
    diags: &mut Diagnostics,
) -> BodyValue {
    let mut items = Vec::with_capacity(body.len());
    for stmt in body {
        match stmt {
            Stmt::Attribute(a) => {
                let value = if references_component(&a.value, ids) {
                    let choice = unknowns.get(*next).map_or(0, |u| u.choice);
                    *next += 1;
                    placeholder(choice).unwrap_or(Value::Null)
                } else {
                    match river_parser::eval_expr(&a.value, scope) {
                        Ok(v) => v,
                        Err(d) => {
                            diags.push(d);
                            continue;
                        }
                    }
                };
                items.push(BodyItem::Attr {
                    name: a.name.name.clone(),
                    name_span: a.name.span,
                    value,
                    span: a.span,
                });
            }
            Stmt::Block(b) => {
                let inner = evaluate(&b.body, scope, ids, unknowns, next, diags);
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

#[cfg(test)]
mod tests;
