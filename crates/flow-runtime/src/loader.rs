//! The loader: turns the parsed files of a configuration into one flat component graph, or
//! diagnostics naming their file.
//!
//! `modules.rs` expands modules first (custom components declared with `declare`, or
//! imported with `import.string`/`import.file`): every use of a custom component becomes an
//! instance node, an `argument` node per declared argument, the nodes of its body and an
//! `export` node per export, all in one graph. A component ID is the block name plus its label
//! (`discovery.docker.linux`); inside a module instance it is prefixed by the instance's ID and a
//! slash (`profiling.feature/discovery.kubernetes.pods`), as Alloy names them.
//!
//! References are found by walking every expression for `ident(.ident)*` chains and taking the
//! longest prefix that names something in the node's module. Errors (all with spans): missing or
//! malformed label, unknown component name, duplicate ID (both positions), unknown references,
//! self references and cycles (`cycle: a, b, c`, from strongly connected components).

use crate::modules::Expander;
use crate::registry::Registry;
use crate::source::{FileDiagnostic, Source};
use river_parser::ast::{Block, Expr, ExprKind, File, Stmt};
use river_parser::{Diagnostic, Diagnostics, Span};
use std::collections::{BTreeSet, HashMap};

/// What a node of the graph is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A registered component.
    Component,
    /// A use of a custom component (`NAME "label"`, `NS.NAME "label"`): its body holds the
    /// arguments (evaluated in the node's scope); `module` is the scope of the instance's body.
    Instance { module: usize },
    /// `argument "name"` of the module instance `instance`: the instance's attribute, or the
    /// block's `default`, visible inside as `argument.name.value`.
    Argument { name: String, instance: usize },
    /// `export "name"` of the module instance `instance`: `value`, evaluated inside, visible
    /// outside as `INSTANCE_ID.name`.
    Export { name: String, instance: usize },
}

/// One node of the graph.
#[derive(Debug, Clone)]
pub struct NodeDef {
    /// The global ID (`profiling.feature/pyroscope.ebpf.pods`; `argument.x` and `export.y`
    /// nodes get `MODULE/argument.x`, `MODULE/export.y`).
    pub id: String,
    /// The ID inside its module (`pyroscope.ebpf.pods`).
    pub local_id: String,
    /// The ID of the module instance it belongs to; empty at the top level.
    pub module_id: String,
    pub name: String,
    pub label: String,
    pub block: Block,
    /// Index of the source its block comes from.
    pub file: usize,
    /// The scope (module) its expressions are evaluated in; 0 is the main configuration.
    pub scope: usize,
    pub kind: NodeKind,
    /// Indexes of the nodes this one references (deduplicated, sorted).
    pub refs: Vec<usize>,
}

impl NodeDef {
    /// Whether the API and the UI show it (components and custom component instances; the
    /// argument and export nodes stand for their instance).
    pub fn is_visible(&self) -> bool {
        matches!(self.kind, NodeKind::Component | NodeKind::Instance { .. })
    }
}

/// One module scope: the main configuration (index 0) or one module instance.
#[derive(Debug, Clone, Default)]
pub struct ModuleDef {
    /// The instance's ID (empty for the main configuration).
    pub id: String,
    /// The value of `module_path` inside it, if known.
    pub module_path: Option<String>,
    /// The custom component it instantiates.
    pub decl_name: Option<String>,
}

/// The validated graph of one configuration.
#[derive(Debug, Clone, Default)]
pub struct GraphDef {
    /// Nodes in source order (an instance's nodes right after it).
    pub nodes: Vec<NodeDef>,
    /// Node indexes in a topological order (dependencies first; source order among equals).
    pub order: Vec<usize>,
    /// For each node, the nodes referencing it.
    pub dependants: Vec<Vec<usize>>,
    /// The top-level `logging` block, if any, and the index of its source.
    pub logging: Option<Block>,
    pub logging_file: usize,
    /// Module scopes; index 0 is the main configuration.
    pub modules: Vec<ModuleDef>,
}

impl GraphDef {
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// The node the API shows for node `i`: itself, or the instance an argument or export node
    /// belongs to.
    pub fn visible_of(&self, i: usize) -> usize {
        match &self.nodes[i].kind {
            NodeKind::Argument { instance, .. } | NodeKind::Export { instance, .. } => *instance,
            _ => i,
        }
    }
}

/// Where the names of one module scope point: a local chain (`test.pulse.p`, `argument.x`,
/// `mod.inst.out`) to the nodes a reference to it depends on.
pub(crate) type NameTable = HashMap<String, Vec<usize>>;

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Builds the graph of one parsed file. `src` is used only to name positions in messages.
pub fn load(file: &File, src: &str, registry: &Registry) -> Result<GraphDef, Diagnostics> {
    let mut sources = vec![Source::text("", src)];
    load_parsed(vec![(0, file.clone())], &mut sources, registry, None)
        .map_err(|d| crate::source::plain(&d))
}

/// Parses every source (one module: the main configuration) and builds its graph. Files that
/// `import.file` and `import.string` bring in are appended to `sources`; diagnostics name the
/// index of their source. `module_path` is the main configuration's directory.
pub fn load_sources(
    sources: &mut Vec<Source>,
    registry: &Registry,
    module_path: Option<String>,
) -> Result<GraphDef, Vec<FileDiagnostic>> {
    let mut files = Vec::with_capacity(sources.len());
    let mut diags = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        match river_parser::parse_file(&s.text) {
            Ok(f) => files.push((i, f)),
            Err(d) => diags.extend(d.0.into_iter().map(|diagnostic| FileDiagnostic {
                file: i,
                diagnostic,
            })),
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    load_parsed(files, sources, registry, module_path)
}

/// Four phases: expand the modules and declare the nodes (`modules::Expander`), resolve references
/// between them, report cycles and, when none of them found an error, order the graph.
fn load_parsed(
    files: Vec<(usize, File)>,
    sources: &mut Vec<Source>,
    registry: &Registry,
    module_path: Option<String>,
) -> Result<GraphDef, Vec<FileDiagnostic>> {
    let body: Vec<(usize, Stmt)> = files
        .into_iter()
        .flat_map(|(i, f)| f.body.into_iter().map(move |s| (i, s)))
        .collect();
    let mut ex = Expander::new(registry, sources);
    ex.expand_main(&body, module_path);
    let (mut graph, tables, roots, mut diags) = ex.finish();
    resolve_references(&mut graph, &tables, &roots, &mut diags);
    report_cycles(&graph, &mut diags);
    if !diags.is_empty() {
        let mut seen = BTreeSet::new();
        diags.retain(|d| {
            seen.insert((
                d.file,
                d.diagnostic.span.start,
                d.diagnostic.span.end,
                d.diagnostic.message.clone(),
            ))
        });
        diags.sort_by_key(|d| (d.file, d.diagnostic.span.start));
        return Err(diags);
    }
    order(&mut graph);
    Ok(graph)
}

/// Phase 2: fills every node's `refs` with the nodes its expressions name (the longest prefix
/// of an `ident(.ident)*` chain found in its module's name table); reports self references and
/// chains rooted at a component namespace that name nothing declared.
fn resolve_references(
    graph: &mut GraphDef,
    tables: &[NameTable],
    roots: &[BTreeSet<String>],
    diags: &mut Vec<FileDiagnostic>,
) {
    let mut all_refs = Vec::with_capacity(graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate() {
        let table = &tables[node.scope];
        let roots = &roots[node.scope];
        let module = &graph.modules[node.scope];
        let mut refs = BTreeSet::new();
        let mut self_ref = None;
        let file = node.file;
        let is_self = |j: usize| {
            j == i
                || matches!(&graph.nodes[j].kind, NodeKind::Export { instance, .. } if *instance == i)
        };
        walk_body(&node.block.body, &mut |chain: &[&str], span: Span| {
            let found = (1..=chain.len())
                .rev()
                .find_map(|len| table.get(chain[..len].join(".").as_str()));
            match found {
                Some(targets) if targets.iter().any(|&j| is_self(j)) => {
                    self_ref.get_or_insert(span);
                }
                Some(targets) => refs.extend(targets.iter().copied()),
                None if chain.first() == Some(&"argument") && module.decl_name.is_some() => diags
                    .push(FileDiagnostic {
                        file,
                        diagnostic: Diagnostic::new(
                            span,
                            format!(
                                "argument \"{}\" is not declared in custom component \"{}\"",
                                chain.get(1).copied().unwrap_or_default(),
                                module.decl_name.as_deref().unwrap_or_default()
                            ),
                        ),
                    }),
                None if chain.first().is_some_and(|root| roots.contains(*root)) => {
                    diags.push(FileDiagnostic {
                        file,
                        diagnostic: Diagnostic::new(
                            span,
                            format!(
                                "component \"{}\" does not exist or is out of scope",
                                chain.join(".")
                            ),
                        ),
                    })
                }
                None => {}
            }
        });
        if let NodeKind::Argument { instance, .. } = &node.kind {
            refs.insert(*instance);
        }
        if let Some(span) = self_ref {
            diags.push(FileDiagnostic {
                file,
                diagnostic: Diagnostic::new(
                    span,
                    format!("component \"{}\" references itself", node.local_id),
                ),
            });
        }
        all_refs.push(refs.into_iter().collect::<Vec<_>>());
    }
    for (node, refs) in graph.nodes.iter_mut().zip(all_refs) {
        node.refs = refs;
    }
}

/// Phase 3: reports every reference cycle (`cycle: a, b, c`: the components and custom
/// component instances in it, in source order) at its first member's name.
fn report_cycles(graph: &GraphDef, diags: &mut Vec<FileDiagnostic>) {
    for mut members in strongly_connected(&graph.nodes) {
        if members.len() < 2 {
            continue;
        }
        members.sort_unstable();
        let mut names: Vec<&str> = Vec::new();
        for &k in &members {
            let id = graph.nodes[graph.visible_of(k)].id.as_str();
            if !names.contains(&id) {
                names.push(id);
            }
        }
        let first = &graph.nodes[members[0]];
        diags.push(FileDiagnostic {
            file: first.file,
            diagnostic: Diagnostic::new(
                first.block.name_span(),
                format!("cycle: {}", names.join(", ")),
            ),
        });
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
