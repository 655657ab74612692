//! Modules, as Alloy has them: `declare "NAME" { ... }` defines a custom component with
//! `argument "x" { optional, default, comment }` blocks (read inside as `argument.x.value`) and
//! `export "y" { value = ... }` blocks (read outside as `NAME.LABEL.y`); `import.string "NS"`
//! and `import.file "NS"` bring the declares of another module (a string, a file, or every
//! configuration file of a directory) into namespace `NS` (`NS.NAME "label" { ... }`).
//!
//! The [`Expander`] walks the main configuration and expands every custom component use into
//! nodes of one flat graph (see [`crate::loader`]): the instance itself, its arguments, the nodes
//! of the declare's body under the instance's ID (`NAME.LABEL/...`) and its exports. Imports are
//! read while loading, so an `import.string` content or an `import.file` filename must be known
//! then (literals, `module_path`, `file.path_join`, `sys.env`, ...), not depend on components.
//! A declare sees the declares and imports of the module it is written in and of its own body;
//! an imported module sees only its own.

use crate::loader::{is_identifier, GraphDef, ModuleDef, NameTable, NodeDef, NodeKind};
use crate::registry::Registry;
use crate::source::{FileDiagnostic, Source};
use river_parser::ast::{Block, Stmt};
use river_parser::eval::Scope;
use river_parser::{Diagnostic, LineIndex, Span, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;

/// Top-level blocks that configure the runtime itself rather than declare components.
const CONFIG_BLOCKS: &[&str] = &["logging"];

/// How deep custom components may nest (a guard against runaway expansion).
const MAX_DEPTH: usize = 64;

/// A `declare` block and where it was written.
#[derive(Clone)]
struct Decl {
    block: Rc<Block>,
    file: usize,
    /// The environment it is defined in (what its body can use besides its own declares).
    env: usize,
    module_path: Option<String>,
}

/// The custom components visible somewhere: declares and import namespaces, plus the parent's.
#[derive(Default)]
struct Env {
    parent: Option<usize>,
    declares: HashMap<String, Decl>,
    imports: HashMap<String, usize>,
}

/// What kind of module body is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Main,
    /// The body of a declare, for the instance node given.
    Declare(usize),
    /// An imported module: only `declare` and `import` blocks.
    Imported,
}

/// One module body being expanded.
struct Ctx {
    scope: usize,
    env: usize,
    /// Prefix of global IDs (`NAME.LABEL/`, empty at the top level).
    prefix: String,
    mode: Mode,
    module_path: Option<String>,
    /// First position of every local ID, declare name and import namespace.
    first: HashMap<String, (usize, Span)>,
}

/// Expands modules into graph nodes; see the module documentation.
pub(crate) struct Expander<'a> {
    registry: &'a Registry,
    registry_roots: BTreeSet<String>,
    sources: &'a mut Vec<Source>,
    diags: Vec<FileDiagnostic>,
    graph: GraphDef,
    tables: Vec<NameTable>,
    roots: Vec<BTreeSet<String>>,
    envs: Vec<Env>,
    /// Declares being expanded (their file and position): a declare using itself is an error.
    instantiating: Vec<(usize, usize)>,
    /// Files being imported (an import cycle is an error).
    importing: Vec<PathBuf>,
}

/// The result: the graph (without references), the name table and namespace roots of every
/// scope, and the diagnostics so far.
pub(crate) type Expanded = (
    GraphDef,
    Vec<NameTable>,
    Vec<BTreeSet<String>>,
    Vec<FileDiagnostic>,
);

impl<'a> Expander<'a> {
    pub(crate) fn new(registry: &'a Registry, sources: &'a mut Vec<Source>) -> Self {
        // First segments of component names: a chain starting with one of these must resolve
        // to a component. Other roots (`env`, `constants`, ...) are left to the evaluator.
        let registry_roots = registry
            .names()
            .filter_map(|n| n.split('.').next())
            .map(str::to_string)
            .collect();
        Expander {
            registry,
            registry_roots,
            sources,
            diags: Vec::new(),
            graph: GraphDef::default(),
            tables: Vec::new(),
            roots: Vec::new(),
            envs: Vec::new(),
            instantiating: Vec::new(),
            importing: Vec::new(),
        }
    }

    pub(crate) fn finish(self) -> Expanded {
        (self.graph, self.tables, self.roots, self.diags)
    }

    /// Expands the main configuration (statements of every main file, tagged with their file).
    pub(crate) fn expand_main(&mut self, body: &[(usize, Stmt)], module_path: Option<String>) {
        let scope = self.new_scope(String::new(), module_path.clone(), None);
        let env = self.new_env(None);
        let mut ctx = Ctx {
            scope,
            env,
            prefix: String::new(),
            mode: Mode::Main,
            module_path,
            first: HashMap::new(),
        };
        self.module_body(body, &mut ctx);
    }

    fn new_scope(
        &mut self,
        id: String,
        module_path: Option<String>,
        decl: Option<String>,
    ) -> usize {
        self.graph.modules.push(ModuleDef {
            id,
            module_path,
            decl_name: decl,
        });
        self.tables.push(NameTable::new());
        self.roots.push(self.registry_roots.clone());
        self.graph.modules.len() - 1
    }

    fn new_env(&mut self, parent: Option<usize>) -> usize {
        self.envs.push(Env {
            parent,
            ..Env::default()
        });
        self.envs.len() - 1
    }

    fn error(&mut self, file: usize, span: Span, msg: impl Into<String>) {
        self.diags.push(FileDiagnostic {
            file,
            diagnostic: Diagnostic::new(span, msg),
        });
    }

    fn error_hint(&mut self, file: usize, span: Span, msg: impl Into<String>, hint: String) {
        self.diags.push(FileDiagnostic {
            file,
            diagnostic: Diagnostic::new(span, msg).with_hint(hint),
        });
    }

    /// `LINE:COL` of a position, prefixed by the file name when it is not `here`'s file.
    fn pos(&self, (file, span): (usize, Span), here: usize) -> String {
        let Some(src) = self.sources.get(file) else {
            return String::new();
        };
        let lc = LineIndex::new(&src.text).line_col(&src.text, span.start);
        if file == here {
            format!("{}:{}", lc.line, lc.col)
        } else {
            format!("{}:{}:{}", src.name, lc.line, lc.col)
        }
    }

    /// Remembers the first position of `key`; on a repeat returns the earlier one.
    fn first_seen(ctx: &mut Ctx, key: &str, at: (usize, Span)) -> Option<(usize, Span)> {
        if let Some(prev) = ctx.first.get(key) {
            return Some(*prev);
        }
        ctx.first.insert(key.to_string(), at);
        None
    }

    /// Two passes over a module body: declares and imports first (a component may use a declare
    /// written after it), then everything else.
    fn module_body(&mut self, body: &[(usize, Stmt)], ctx: &mut Ctx) {
        for (file, stmt) in body {
            if let Stmt::Block(b) = stmt {
                let name = b.full_name();
                if name == "declare" {
                    self.register_declare(b, *file, ctx);
                } else if name.starts_with("import.") {
                    self.import(b, *file, ctx);
                }
            }
        }
        for (file, stmt) in body {
            let file = *file;
            let block = match stmt {
                Stmt::Attribute(a) => {
                    let msg = match ctx.mode {
                        Mode::Main => {
                            format!("unexpected attribute \"{}\" at the top level", a.name.name)
                        }
                        _ => format!("unexpected attribute \"{}\" in a module", a.name.name),
                    };
                    self.error(file, a.name.span, msg);
                    continue;
                }
                Stmt::Block(b) => b,
            };
            let name = block.full_name();
            if name == "declare" || name.starts_with("import.") {
                continue;
            }
            match (ctx.mode, name.as_str()) {
                (Mode::Imported, _) => self.error(
                    file,
                    block.name_span(),
                    format!(
                        "block \"{name}\" is not allowed in an imported module (only declare and import blocks are)"
                    ),
                ),
                (Mode::Main, n) if CONFIG_BLOCKS.contains(&n) => {
                    self.config_block(block, file, ctx)
                }
                (Mode::Declare(_), n) if CONFIG_BLOCKS.contains(&n) => self.error(
                    file,
                    block.name_span(),
                    format!("block \"{name}\" is only allowed at the top level of the main configuration"),
                ),
                (Mode::Declare(inst), "argument") => self.argument(block, file, ctx, inst),
                (Mode::Declare(inst), "export") => self.export(block, file, ctx, inst),
                (Mode::Main, "argument" | "export") => self.error(
                    file,
                    block.name_span(),
                    format!("block \"{name}\" is only allowed inside a declare block"),
                ),
                _ => self.component(block, file, ctx),
            }
        }
    }

    /// A runtime configuration block (`logging`): no label, at most one of each.
    fn config_block(&mut self, block: &Block, file: usize, ctx: &mut Ctx) {
        let name = block.full_name();
        if let Some(span) = block.label_span {
            self.error(
                file,
                span,
                format!("block \"{name}\" does not take a label"),
            );
            return;
        }
        if let Some(prev) = Self::first_seen(ctx, &name, (file, block.name_span())) {
            let hint = format!("first declared at {}", self.pos(prev, file));
            self.error_hint(
                file,
                block.name_span(),
                format!("block \"{name}\" already declared"),
                hint,
            );
            return;
        }
        self.graph.logging = Some(block.clone());
        self.graph.logging_file = file;
    }

    /// The label of a block that needs an identifier-shaped one (`what` names it in messages).
    fn ident_label(&mut self, block: &Block, file: usize, what: &str) -> Option<(String, Span)> {
        let name = block.full_name();
        let Some(label) = &block.label else {
            self.error_hint(
                file,
                block.name_span(),
                format!("{what} \"{name}\" must have a label"),
                format!("write it as {name} \"LABEL\" {{ ... }}"),
            );
            return None;
        };
        let span = block.label_span.unwrap_or(block.span);
        if !is_identifier(label) {
            self.error(
                file,
                span,
                format!(
                    "{what} label \"{label}\" must be a valid identifier (letters, digits and _, not starting with a digit)"
                ),
            );
            return None;
        }
        Some((label.clone(), span))
    }

    fn register_declare(&mut self, block: &Block, file: usize, ctx: &mut Ctx) {
        let Some((label, span)) = self.ident_label(block, file, "block") else {
            return;
        };
        let key = format!("declare {label}");
        if let Some(prev) = Self::first_seen(ctx, &key, (file, span)) {
            let at = self.pos(prev, file);
            self.error(
                file,
                span,
                format!("declare \"{label}\" already declared at {at}"),
            );
            return;
        }
        let decl = Decl {
            block: Rc::new(block.clone()),
            file,
            env: ctx.env,
            module_path: ctx.module_path.clone(),
        };
        self.envs[ctx.env].declares.insert(label, decl);
    }

    fn find_declare(&self, mut env: usize, name: &str) -> Option<Decl> {
        loop {
            if let Some(d) = self.envs[env].declares.get(name) {
                return Some(d.clone());
            }
            env = self.envs[env].parent?;
        }
    }

    fn find_import(&self, mut env: usize, ns: &str) -> Option<usize> {
        loop {
            if let Some(&e) = self.envs[env].imports.get(ns) {
                return Some(e);
            }
            env = self.envs[env].parent?;
        }
    }

    /// A component block: a custom component (an imported namespace first, then a declare) or
    /// a registered component, with a unique identifier-shaped label.
    fn component(&mut self, block: &Block, file: usize, ctx: &mut Ctx) {
        let name = block.full_name();
        let decl = match block.name.split_first() {
            Some((ns, rest)) if !rest.is_empty() => match self.find_import(ctx.env, &ns.name) {
                Some(env) => {
                    let inner = rest
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(".");
                    match self.envs[env].declares.get(&inner) {
                        Some(d) => Some(d.clone()),
                        None => {
                            self.error_hint(
                                file,
                                block.name_span(),
                                format!("unknown component \"{name}\""),
                                format!(
                                    "the module imported as \"{}\" declares no \"{inner}\"",
                                    ns.name
                                ),
                            );
                            return;
                        }
                    }
                }
                None => None,
            },
            Some(_) => self.find_declare(ctx.env, &name),
            None => None,
        };
        if decl.is_none() && !self.registry.contains(&name) {
            self.error(
                file,
                block.name_span(),
                format!("unknown component \"{name}\""),
            );
            return;
        }
        let what = if decl.is_some() {
            "custom component"
        } else {
            "component"
        };
        let Some((label, label_span)) = self.ident_label(block, file, what) else {
            return;
        };
        let local_id = format!("{name}.{label}");
        let here = block.name_span().to(label_span);
        if let Some(prev) = Self::first_seen(ctx, &local_id, (file, here)) {
            let (at_prev, at_here) = (self.pos(prev, file), self.pos((file, here), prev.0));
            self.error_hint(
                file,
                here,
                format!("component \"{local_id}\" already declared at {at_prev}"),
                format!(
                    "also declared at {}; IDs must be unique",
                    self.pos((file, here), file)
                ),
            );
            self.error(
                prev.0,
                prev.1,
                format!("component \"{local_id}\" declared again at {at_here}"),
            );
            return;
        }
        if let Some(root) = block.name.first() {
            self.roots[ctx.scope].insert(root.name.clone());
        }
        let def = NodeDef {
            id: format!("{}{local_id}", ctx.prefix),
            local_id: local_id.clone(),
            module_id: self.graph.modules[ctx.scope].id.clone(),
            name: name.clone(),
            label,
            block: block.clone(),
            file,
            scope: ctx.scope,
            kind: NodeKind::Component,
            refs: Vec::new(),
        };
        match decl {
            None => {
                self.graph.nodes.push(def);
                let idx = self.graph.nodes.len() - 1;
                self.tables[ctx.scope].insert(local_id, vec![idx]);
            }
            Some(decl) => self.instance(def, decl, ctx),
        }
    }

    /// The arguments a declare takes: name and whether it is required.
    fn argument_specs(&self, decl: &Decl) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for stmt in &decl.block.body {
            let Stmt::Block(b) = stmt else { continue };
            if b.full_name() != "argument" {
                continue;
            }
            let Some(label) = &b.label else { continue };
            let optional = b.body.iter().any(|s| match s {
                Stmt::Attribute(a) if a.name.name == "optional" => matches!(
                    river_parser::eval_expr(&a.value, &Scope::new()),
                    Ok(Value::Bool(true))
                ),
                _ => false,
            });
            out.push((label.clone(), !optional));
        }
        out
    }

    /// A use of a custom component: checks its attributes against the declare's arguments, then
    /// expands the declare's body as a new module scope under the instance's ID.
    fn instance(&mut self, mut def: NodeDef, decl: Decl, ctx: &mut Ctx) {
        let file = def.file;
        let block = def.block.clone();
        let key = (decl.file, decl.block.span.start);
        if self.instantiating.contains(&key) || self.instantiating.len() >= MAX_DEPTH {
            self.error(
                file,
                block.name_span(),
                format!(
                    "custom component \"{}\" uses itself (directly or through other custom components)",
                    def.name
                ),
            );
            return;
        }
        let specs = self.argument_specs(&decl);
        let known = || {
            specs
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut given = BTreeSet::new();
        for stmt in &block.body {
            match stmt {
                Stmt::Attribute(a) if specs.iter().any(|(n, _)| *n == a.name.name) => {
                    given.insert(a.name.name.clone());
                }
                Stmt::Attribute(a) => {
                    let hint = if specs.is_empty() {
                        "it takes no arguments".to_string()
                    } else {
                        format!("its arguments are: {}", known())
                    };
                    self.error_hint(
                        file,
                        a.name.span,
                        format!(
                            "unknown argument \"{}\" of custom component \"{}\"",
                            a.name.name, def.name
                        ),
                        hint,
                    );
                }
                Stmt::Block(b) => self.error(
                    file,
                    b.name_span(),
                    format!(
                        "unexpected block \"{}\": the arguments of custom component \"{}\" are attributes",
                        b.full_name(),
                        def.name
                    ),
                ),
            }
        }
        for (arg, required) in &specs {
            if *required && !given.contains(arg) {
                self.error_hint(
                    file,
                    block.name_span(),
                    format!(
                        "missing required argument \"{arg}\" of custom component \"{}\"",
                        def.name
                    ),
                    format!("set it in the block: {arg} = ..."),
                );
            }
        }

        let module = self.new_scope(
            def.id.clone(),
            decl.module_path.clone(),
            Some(def.name.clone()),
        );
        self.roots[module].insert("argument".to_string());
        def.kind = NodeKind::Instance { module };
        let local_id = def.local_id.clone();
        let prefix = format!("{}/", def.id);
        self.graph.nodes.push(def);
        let idx = self.graph.nodes.len() - 1;

        let env = self.new_env(Some(decl.env));
        let mut child = Ctx {
            scope: module,
            env,
            prefix,
            mode: Mode::Declare(idx),
            module_path: decl.module_path.clone(),
            first: HashMap::new(),
        };
        let body: Vec<(usize, Stmt)> = decl
            .block
            .body
            .iter()
            .map(|s| (decl.file, s.clone()))
            .collect();
        self.instantiating.push(key);
        self.module_body(&body, &mut child);
        self.instantiating.pop();

        // Outside, `NAME.LABEL.y` depends on export y, `NAME.LABEL` on every export.
        let mut exports = Vec::new();
        for (j, n) in self.graph.nodes.iter().enumerate().skip(idx + 1) {
            if let NodeKind::Export { name, instance } = &n.kind {
                if *instance == idx {
                    exports.push(j);
                    self.tables[ctx.scope].insert(format!("{local_id}.{name}"), vec![j]);
                }
            }
        }
        self.tables[ctx.scope].insert(local_id, exports);
    }

    /// Checks that a block's body has attributes only, among `allowed`.
    fn only_attributes(&mut self, block: &Block, file: usize, allowed: &[&str]) {
        for stmt in &block.body {
            match stmt {
                Stmt::Attribute(a) if allowed.contains(&a.name.name.as_str()) => {}
                Stmt::Attribute(a) => self.error_hint(
                    file,
                    a.name.span,
                    format!(
                        "unknown attribute \"{}\" in block \"{}\"",
                        a.name.name,
                        block.full_name()
                    ),
                    format!("allowed: {}", allowed.join(", ")),
                ),
                Stmt::Block(b) => self.error(
                    file,
                    b.name_span(),
                    format!(
                        "unexpected block \"{}\" in block \"{}\"",
                        b.full_name(),
                        block.full_name()
                    ),
                ),
            }
        }
    }

    /// A virtual node (`argument.x`, `export.y`) of the module being expanded.
    fn virtual_node(
        &mut self,
        block: &Block,
        file: usize,
        ctx: &mut Ctx,
        kind: NodeKind,
    ) -> Option<usize> {
        let what = block.full_name();
        let (label, span) = self.ident_label(block, file, "block")?;
        let local_id = format!("{what}.{label}");
        if let Some(prev) = Self::first_seen(ctx, &local_id, (file, span)) {
            let at = self.pos(prev, file);
            self.error(
                file,
                span,
                format!("{what} \"{label}\" already declared at {at}"),
            );
            return None;
        }
        let kind = match kind {
            NodeKind::Argument { instance, .. } => NodeKind::Argument {
                name: label.clone(),
                instance,
            },
            NodeKind::Export { instance, .. } => NodeKind::Export {
                name: label.clone(),
                instance,
            },
            other => other,
        };
        self.graph.nodes.push(NodeDef {
            id: format!("{}{local_id}", ctx.prefix),
            local_id: local_id.clone(),
            module_id: self.graph.modules[ctx.scope].id.clone(),
            name: what,
            label,
            block: block.clone(),
            file,
            scope: ctx.scope,
            kind,
            refs: Vec::new(),
        });
        let idx = self.graph.nodes.len() - 1;
        self.tables[ctx.scope].insert(local_id, vec![idx]);
        Some(idx)
    }

    fn argument(&mut self, block: &Block, file: usize, ctx: &mut Ctx, instance: usize) {
        self.only_attributes(block, file, &["optional", "default", "comment"]);
        for stmt in &block.body {
            if let Stmt::Attribute(a) = stmt {
                if a.name.name != "optional" {
                    continue;
                }
                match river_parser::eval_expr(&a.value, &Scope::new()) {
                    Ok(Value::Bool(_)) => {}
                    _ => self.error(
                        file,
                        a.value.span,
                        "\"optional\" must be true or false, known when the configuration loads",
                    ),
                }
            }
        }
        let kind = NodeKind::Argument {
            name: String::new(),
            instance,
        };
        self.virtual_node(block, file, ctx, kind);
    }

    fn export(&mut self, block: &Block, file: usize, ctx: &mut Ctx, instance: usize) {
        self.only_attributes(block, file, &["value"]);
        let has_value = block
            .body
            .iter()
            .any(|s| matches!(s, Stmt::Attribute(a) if a.name.name == "value"));
        if !has_value {
            self.error(
                file,
                block.name_span(),
                "missing required attribute \"value\" in block \"export\"",
            );
        }
        let kind = NodeKind::Export {
            name: String::new(),
            instance,
        };
        self.virtual_node(block, file, ctx, kind);
    }

    /// `import.string "NS"` / `import.file "NS"`: evaluates the block when loading, reads and
    /// parses the module and registers its declares under `NS`.
    fn import(&mut self, block: &Block, file: usize, ctx: &mut Ctx) {
        let name = block.full_name();
        let allowed: &[&str] = match name.as_str() {
            "import.string" => &["content"],
            "import.file" => &["filename", "detector", "poll_frequency"],
            _ => {
                self.error_hint(
                    file,
                    block.name_span(),
                    format!("block \"{name}\" is not supported"),
                    "rill imports modules with import.file and import.string".to_string(),
                );
                return;
            }
        };
        let Some((ns, span)) = self.ident_label(block, file, "block") else {
            return;
        };
        let key = format!("import {ns}");
        if let Some(prev) = Self::first_seen(ctx, &key, (file, span)) {
            let at = self.pos(prev, file);
            self.error(
                file,
                span,
                format!("import \"{ns}\" already declared at {at}"),
            );
            return;
        }
        self.only_attributes(block, file, allowed);
        let mut scope = Scope::new();
        if let Some(p) = &ctx.module_path {
            scope.set("module_path", Value::String(p.clone()));
        }
        let body = match river_parser::eval_body(&block.body, &scope) {
            Ok(b) => b,
            Err(d) => {
                for diagnostic in d.0 {
                    self.diags.push(FileDiagnostic {
                        file,
                        diagnostic: diagnostic.with_hint(
                            "rill reads imports when the configuration loads: use values known then",
                        ),
                    });
                }
                return;
            }
        };
        let attr = if name == "import.string" {
            "content"
        } else {
            "filename"
        };
        let attr_span = block
            .body
            .iter()
            .find_map(|s| match s {
                Stmt::Attribute(a) if a.name.name == attr => Some(a.value.span),
                _ => None,
            })
            .unwrap_or(block.name_span());
        let text = match body.attr(attr) {
            Some(Value::String(s) | Value::Secret(s)) => s.clone(),
            Some(other) => {
                self.error(
                    file,
                    attr_span,
                    format!("\"{attr}\" should be string, got {}", other.type_name()),
                );
                return;
            }
            None => {
                self.error(
                    file,
                    block.name_span(),
                    format!("missing required attribute \"{attr}\" in block \"{name}\""),
                );
                return;
            }
        };
        let env = if name == "import.string" {
            let id = self.sources.len();
            self.sources
                .push(Source::text(format!("{name}.{ns}"), text));
            self.imported_module(vec![id], ctx.module_path.clone())
        } else {
            let path = PathBuf::from(&text);
            let canon = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if self.importing.contains(&canon) {
                self.error(
                    file,
                    attr_span,
                    format!("import cycle: \"{text}\" is already being imported"),
                );
                return;
            }
            let read = match crate::source::read_path(&path, &text) {
                Ok(r) => r,
                Err(msg) => {
                    self.error(file, attr_span, msg);
                    return;
                }
            };
            let first = self.sources.len();
            self.sources.extend(read);
            let ids: Vec<usize> = (first..self.sources.len()).collect();
            self.importing.push(canon);
            let env = self.imported_module(ids, Some(crate::source::module_path_of(&path)));
            self.importing.pop();
            env
        };
        self.envs[ctx.env].imports.insert(ns, env);
    }

    /// Parses the sources of an imported module and registers its declares and imports in a
    /// new environment (with no parent: an imported module sees only its own names).
    fn imported_module(&mut self, ids: Vec<usize>, module_path: Option<String>) -> usize {
        let env = self.new_env(None);
        let mut body = Vec::new();
        for id in ids {
            match river_parser::parse_file(&self.sources[id].text) {
                Ok(f) => body.extend(f.body.into_iter().map(|s| (id, s))),
                Err(d) => self
                    .diags
                    .extend(d.0.into_iter().map(|diagnostic| FileDiagnostic {
                        file: id,
                        diagnostic,
                    })),
            }
        }
        let mut ctx = Ctx {
            scope: 0,
            env,
            prefix: String::new(),
            mode: Mode::Imported,
            module_path,
            first: HashMap::new(),
        };
        self.module_body(&body, &mut ctx);
        env
    }
}
