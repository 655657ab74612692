//! The loader: turns a parsed River file into a component graph, or diagnostics.
//!
//! A component ID is the block name plus its label (`discovery.docker.linux`). References are
//! found by walking every expression for `ident(.ident)*` chains and taking the longest prefix
//! that is a declared component ID. Errors (all with spans): missing or malformed label, unknown
//! component name, duplicate ID (both positions), unknown references, self references and cycles
//! (`cycle: a, b, c`, from strongly connected components).

use crate::registry::Registry;
use river_parser::ast::{Block, Expr, ExprKind, File, Stmt};
use river_parser::{Diagnostic, Diagnostics, LineIndex, Span};
use std::collections::{BTreeSet, HashMap};

/// One component block of the file.
#[derive(Debug, Clone)]
pub struct NodeDef {
    pub id: String,
    pub name: String,
    pub label: String,
    pub block: Block,
    /// Indexes of the components this one references (deduplicated, sorted).
    pub refs: Vec<usize>,
}

/// The validated graph of one file.
#[derive(Debug, Clone, Default)]
pub struct GraphDef {
    /// Components in source order.
    pub nodes: Vec<NodeDef>,
    /// Node indexes in a topological order (dependencies first; source order among equals).
    pub order: Vec<usize>,
    /// For each node, the nodes referencing it.
    pub dependants: Vec<Vec<usize>>,
    /// The top-level `logging` block, if any.
    pub logging: Option<Block>,
}

impl GraphDef {
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }
}

/// Top-level blocks that configure the runtime itself rather than declare components.
const CONFIG_BLOCKS: &[&str] = &["logging"];

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Builds the graph of `file`. `src` is used only to name positions in messages.
///
/// Four phases: `declare` the top-level blocks, `resolve_references` between components,
/// `report_cycles`, and, when none of them found an error, `order` the graph.
pub fn load(file: &File, src: &str, registry: &Registry) -> Result<GraphDef, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut graph = declare(file, src, registry, &mut diags);
    resolve_references(&mut graph, registry, &mut diags);
    report_cycles(&graph, &mut diags);
    if !diags.is_empty() {
        diags.0.sort_by_key(|d| d.span.start);
        return Err(diags);
    }
    order(&mut graph);
    Ok(graph)
}

/// Where each declared name (component ID or config block) was first seen, as `line:col` text
/// for messages.
struct Declared<'a> {
    src: &'a str,
    lines: LineIndex,
    first: HashMap<String, Span>,
}

impl Declared<'_> {
    fn pos(&self, span: Span) -> String {
        let lc = self.lines.line_col(self.src, span.start);
        format!("{}:{}", lc.line, lc.col)
    }
}

/// Phase 1: turns the top-level statements into component nodes (source order, no references
/// yet) and the `logging` block; reports attributes at the top level, unknown component names,
/// missing or malformed labels and duplicate IDs or config blocks.
fn declare(file: &File, src: &str, registry: &Registry, diags: &mut Diagnostics) -> GraphDef {
    let mut declared = Declared {
        src,
        lines: LineIndex::new(src),
        first: HashMap::new(),
    };
    let mut graph = GraphDef::default();
    for stmt in &file.body {
        match stmt {
            Stmt::Attribute(a) => diags.push(Diagnostic::new(
                a.name.span,
                format!("unexpected attribute \"{}\" at the top level", a.name.name),
            )),
            Stmt::Block(block) if CONFIG_BLOCKS.contains(&block.full_name().as_str()) => {
                if let Some(b) = declare_config_block(block, &mut declared, diags) {
                    graph.logging = Some(b);
                }
            }
            Stmt::Block(block) => {
                if let Some(node) = declare_component(block, registry, &mut declared, diags) {
                    graph.nodes.push(node);
                }
            }
        }
    }
    graph
}

/// A runtime configuration block (`logging`): no label, at most one of each.
fn declare_config_block(
    block: &Block,
    declared: &mut Declared<'_>,
    diags: &mut Diagnostics,
) -> Option<Block> {
    let name = block.full_name();
    if let Some(span) = block.label_span {
        diags.push(Diagnostic::new(
            span,
            format!("block \"{name}\" does not take a label"),
        ));
        return None;
    }
    if let Some(prev) = declared.first.get(&name) {
        diags.push(
            Diagnostic::new(
                block.name_span(),
                format!("block \"{name}\" already declared"),
            )
            .with_hint(format!("first declared at {}", declared.pos(*prev))),
        );
        return None;
    }
    declared.first.insert(name, block.name_span());
    Some(block.clone())
}

/// A component block: a registered name and a unique, identifier-shaped label.
fn declare_component(
    block: &Block,
    registry: &Registry,
    declared: &mut Declared<'_>,
    diags: &mut Diagnostics,
) -> Option<NodeDef> {
    let name = block.full_name();
    if !registry.contains(&name) {
        diags.push(Diagnostic::new(
            block.name_span(),
            format!("unknown component \"{name}\""),
        ));
        return None;
    }
    let Some(label) = &block.label else {
        diags.push(
            Diagnostic::new(
                block.name_span(),
                format!("component \"{name}\" must have a label"),
            )
            .with_hint(format!("write it as {name} \"LABEL\" {{ ... }}")),
        );
        return None;
    };
    let label_span = block.label_span.unwrap_or(block.span);
    if !is_identifier(label) {
        diags.push(Diagnostic::new(
            label_span,
            format!(
                "component label \"{label}\" must be a valid identifier (letters, digits and _, not starting with a digit)"
            ),
        ));
        return None;
    }
    let id = format!("{name}.{label}");
    let here = block.name_span().to(label_span);
    if let Some(prev) = declared.first.get(&id) {
        diags.push(
            Diagnostic::new(
                here,
                format!(
                    "component \"{id}\" already declared at {}",
                    declared.pos(*prev)
                ),
            )
            .with_hint(format!(
                "also declared at {}; IDs must be unique",
                declared.pos(here)
            )),
        );
        diags.push(Diagnostic::new(
            *prev,
            format!(
                "component \"{id}\" declared again at {}",
                declared.pos(here)
            ),
        ));
        return None;
    }
    declared.first.insert(id.clone(), here);
    Some(NodeDef {
        id,
        name,
        label: label.clone(),
        block: block.clone(),
        refs: Vec::new(),
    })
}

/// Phase 2: fills every node's `refs` with the components its expressions name (the longest
/// prefix of an `ident(.ident)*` chain that is a declared ID); reports self references and chains
/// rooted at a component namespace that name no declared component.
fn resolve_references(graph: &mut GraphDef, registry: &Registry, diags: &mut Diagnostics) {
    let ids: HashMap<&str, usize> = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    // First segments of component names: a chain starting with one of these must resolve to a
    // component. Other roots (`env`, `constants`, ...) are left to the evaluator.
    let roots: BTreeSet<String> = registry
        .names()
        .chain(graph.nodes.iter().map(|n| n.name.as_str()))
        .filter_map(|n| n.split('.').next())
        .map(str::to_string)
        .collect();
    let mut all_refs = Vec::with_capacity(graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate() {
        let mut refs = BTreeSet::new();
        let mut self_ref = None;
        walk_body(&node.block.body, &mut |chain: &[&str], span: Span| {
            let found = (1..=chain.len())
                .rev()
                .find_map(|len| ids.get(chain[..len].join(".").as_str()).copied());
            match found {
                Some(j) if j == i => {
                    self_ref.get_or_insert(span);
                }
                Some(j) => {
                    refs.insert(j);
                }
                None if chain.first().is_some_and(|root| roots.contains(*root)) => {
                    diags.push(Diagnostic::new(
                        span,
                        format!(
                            "component \"{}\" does not exist or is out of scope",
                            chain.join(".")
                        ),
                    ))
                }
                None => {}
            }
        });
        if let Some(span) = self_ref {
            diags.push(Diagnostic::new(
                span,
                format!("component \"{}\" references itself", node.id),
            ));
        }
        all_refs.push(refs.into_iter().collect::<Vec<_>>());
    }
    for (node, refs) in graph.nodes.iter_mut().zip(all_refs) {
        node.refs = refs;
    }
}

/// Phase 3: reports every reference cycle (`cycle: a, b, c`, members in source order) at its
/// first member's name.
fn report_cycles(graph: &GraphDef, diags: &mut Diagnostics) {
    for mut members in strongly_connected(&graph.nodes) {
        if members.len() < 2 {
            continue;
        }
        members.sort_unstable();
        let names: Vec<&str> = members
            .iter()
            .map(|&k| graph.nodes[k].id.as_str())
            .collect();
        let first = &graph.nodes[members[0]];
        diags.push(Diagnostic::new(
            first.block.name_span(),
            format!("cycle: {}", names.join(", ")),
        ));
    }
}

/// Phase 4 (an acyclic graph only): fills `dependants` (the inverse of `refs`) and the
/// topological `order`.
fn order(graph: &mut GraphDef) {
    graph.dependants = vec![Vec::new(); graph.nodes.len()];
    for (i, n) in graph.nodes.iter().enumerate() {
        for &r in &n.refs {
            graph.dependants[r].push(i);
        }
    }
    graph.order = topological(&graph.nodes, &graph.dependants);
}

/// Calls `f` with every `ident(.ident)*` chain found in the expressions of `body`.
fn walk_body(body: &[Stmt], f: &mut dyn FnMut(&[&str], Span)) {
    for stmt in body {
        match stmt {
            Stmt::Attribute(a) => walk_expr(&a.value, f),
            Stmt::Block(b) => walk_body(&b.body, f),
        }
    }
}

/// The identifier chain of `expr` if it is `ident(.ident)*`.
fn chain_of(expr: &Expr) -> Option<Vec<&str>> {
    match &expr.kind {
        ExprKind::Ident(i) => Some(vec![i.name.as_str()]),
        ExprKind::Access { value, name } => {
            let mut c = chain_of(value)?;
            c.push(name.name.as_str());
            Some(c)
        }
        _ => None,
    }
}

fn walk_expr(expr: &Expr, f: &mut dyn FnMut(&[&str], Span)) {
    if let Some(chain) = chain_of(expr) {
        f(&chain, expr.span);
        return;
    }
    match &expr.kind {
        ExprKind::Literal(_) | ExprKind::Ident(_) => {}
        ExprKind::Array { elements, .. } => elements.iter().for_each(|e| walk_expr(e, f)),
        ExprKind::Object { fields, .. } => fields.iter().for_each(|fl| walk_expr(&fl.value, f)),
        ExprKind::Access { value, .. } => walk_expr(value, f),
        ExprKind::Index { value, index, .. } => {
            walk_expr(value, f);
            walk_expr(index, f);
        }
        ExprKind::Call { func, args, .. } => {
            // The callee is a standard-library function (`env`, `string.format`); only chains
            // that are not plain identifier paths can hide references.
            if chain_of(func).is_none() {
                walk_expr(func, f);
            }
            args.iter().for_each(|a| walk_expr(a, f));
        }
        ExprKind::Unary { value, .. } => walk_expr(value, f),
        ExprKind::Binary { left, right, .. } => {
            walk_expr(left, f);
            walk_expr(right, f);
        }
        ExprKind::Paren { inner, .. } => walk_expr(inner, f),
    }
}

/// Tarjan's algorithm (iterative) over the reference edges.
fn strongly_connected(nodes: &[NodeDef]) -> Vec<Vec<usize>> {
    let n = nodes.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut out = Vec::new();
    for start in 0..n {
        if index[start] != usize::MAX {
            continue;
        }
        // (node, next edge position)
        let mut work = vec![(start, 0usize)];
        while let Some(top) = work.len().checked_sub(1) {
            let (v, edge) = work[top];
            if edge == 0 && index[v] == usize::MAX {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = nodes[v].refs.get(edge) {
                work[top].1 += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut scc = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                out.push(scc);
            }
        }
    }
    out
}

/// Kahn's algorithm; among ready nodes the earliest in the file goes first.
fn topological(nodes: &[NodeDef], dependants: &[Vec<usize>]) -> Vec<usize> {
    let mut indegree: Vec<usize> = nodes.iter().map(|n| n.refs.len()).collect();
    let mut ready: BTreeSet<usize> = (0..nodes.len()).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &dependants[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.insert(d);
            }
        }
    }
    order
}
