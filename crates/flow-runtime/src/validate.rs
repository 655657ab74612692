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
//! Diagnostics are collected across the files: every syntax error the parser reports, every graph
//! error, then (only when the syntax and the graph are sound) the first argument error of each
//! component, sorted by file and position. Components inside modules (declared or imported) are
//! checked like those at the top level, in their module's scope (`module_path`, `argument.x`
//! and the module's components), and their diagnostics name the module's file.

use crate::loader::{self, GraphDef, NodeDef, NodeKind};
use crate::registry::{Checked, Registry};
use crate::source::{self, FileDiagnostic, Source};
use river_parser::ast::{Body, Expr, Stmt};
use river_parser::eval::{expr_references, BodyItem, BodyValue, Scope};
use river_parser::{Diagnostics, Number, Span, Value};
use std::collections::BTreeMap;

/// Validates the one-file configuration `src` against `registry` (no `module_path`). `Err`
/// holds every diagnostic found (see the module documentation), sorted by position.
pub fn validate_source(src: &str, registry: &Registry) -> Result<(), Diagnostics> {
    let mut sources = vec![Source::text("", src)];
    validate_sources(&mut sources, registry, None).map_err(|d| source::plain(&d))
}

/// Validates the configuration made of `sources` (one file, or the files of a directory), as
/// `loader::load_sources` reads it: files that `import.file` and `import.string` bring in are
/// appended to `sources`, and `module_path` is the main configuration's directory. `Err` holds
/// every diagnostic found, each naming its source, sorted by source and position.
pub fn validate_sources(
    sources: &mut Vec<Source>,
    registry: &Registry,
    module_path: Option<String>,
) -> Result<(), Vec<FileDiagnostic>> {
    let graph = loader::load_sources(sources, registry, module_path)?;
    let mut diags = Vec::new();
    let in_file = |file: usize, d: Diagnostics| {
        d.0.into_iter()
            .map(move |diagnostic| FileDiagnostic { file, diagnostic })
    };
    if let Some(block) = &graph.logging {
        if let Err(d) = crate::logging::LoggingConfig::from_block(block) {
            diags.extend(in_file(graph.logging_file, d));
        }
    }
    for node in &graph.nodes {
        let mut found = Diagnostics::default();
        check_component(&graph, node, registry, &mut found);
        diags.extend(in_file(node.file, found));
    }
    if diags.is_empty() {
        Ok(())
    } else {
        diags.sort_by_key(|d| (d.file, d.diagnostic.span.start));
        Err(diags)
    }
}

/// The names by which `node`'s expressions reach the nodes it references (its resolved
/// `refs`): a component's or argument's local ID (`discovery.relabel.a`, `argument.x`), an
/// export's `INSTANCE.NAME` (`lib.double.d.y`).
fn referenced_names(graph: &GraphDef, node: &NodeDef) -> Vec<String> {
    node.refs
        .iter()
        .map(|&r| {
            let target = &graph.nodes[r];
            match &target.kind {
                NodeKind::Export { name, instance } => {
                    format!("{}.{name}", graph.nodes[*instance].local_id)
                }
                _ => target.local_id.clone(),
            }
        })
        .collect()
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

fn check_component(graph: &GraphDef, node: &NodeDef, registry: &Registry, diags: &mut Diagnostics) {
    if node.kind != NodeKind::Component {
        return; // instances, arguments and exports: the loader checked them
    }
    let Some(builder) = registry.get(&node.name) else {
        return; // the loader reported it
    };
    let names = referenced_names(graph, node);
    let ids: &[String] = &names;
    let mut scope = Scope::new();
    if let Some(p) = graph
        .modules
        .get(node.scope)
        .and_then(|m| m.module_path.as_ref())
    {
        scope.set("module_path", Value::String(p.clone()));
    }
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

/// Whether `expr` reads a node of the graph: the exports of a component, an argument of its
/// module, an export of a module instance (`ids`: their names, [`referenced_names`]).
fn references_component(expr: &Expr, ids: &[String]) -> bool {
    expr_references(expr).iter().any(|r| {
        (1..=r.path.len()).any(|len| {
            let chain = r.path[..len].join(".");
            ids.contains(&chain)
        })
    })
}

/// The attributes of `body` (nested blocks included, in source order) that depend on a component.
fn collect_unknowns(body: &Body, ids: &[String], out: &mut Vec<Unknown>) {
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
    ids: &[String],
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
