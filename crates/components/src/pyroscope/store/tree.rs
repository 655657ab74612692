//! A merged call tree ([`Tree`]) and what is made of it: Pyroscope's flame graph levels
//! (`querier.v1.FlameGraph`), a pprof profile, the nested JSON tree rill's UI draws, the
//! top-functions table and the diff of two trees. Nodes are merged by function name (as in
//! Pyroscope's flame graphs); `max_nodes` keeps the nodes with the largest totals and sums the
//! rest of each parent's children into one `other` child.

use std::collections::HashMap;
use std::sync::Arc;

use ebpf_probe::pprof::{Function, Line, Location, Profile, Sample, ValueType};
use serde_json::{json, Value as Json};

/// Name of the root node (Pyroscope's convention, kept by Grafana).
pub const ROOT_NAME: &str = "total";
/// Name of the node standing for children cut by `max_nodes`.
pub const OTHER_NAME: &str = "other";

/// One node of a [`Tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub parent: u32,
    /// Index into [`Tree::names`].
    pub name: u32,
    pub self_value: i64,
    pub total: i64,
}

/// A call tree whose node 0 is the root (`total`); a node's parent has a smaller index.
#[derive(Debug, Clone)]
pub struct Tree {
    pub names: Vec<Arc<str>>,
    pub nodes: Vec<Node>,
    name_index: HashMap<Arc<str>, u32>,
    children: super::codec::FastMap<(u32, u32), u32>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

/// `querier.v1.FlameGraph` in plain Rust (see [`Tree::flamegraph`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlameGraph {
    pub names: Vec<String>,
    /// Per depth: `[x offset from the previous bar's end, total, self, name index]` per bar.
    pub levels: Vec<Vec<i64>>,
    pub total: i64,
    pub max_self: i64,
}

impl Tree {
    /// A tree holding only the root.
    pub fn new() -> Tree {
        let root: Arc<str> = Arc::from(ROOT_NAME);
        Tree {
            names: vec![root.clone()],
            nodes: vec![Node {
                parent: 0,
                name: 0,
                self_value: 0,
                total: 0,
            }],
            name_index: HashMap::from([(root, 0)]),
            children: super::codec::FastMap::default(),
        }
    }

    /// The index of `name`, added when new.
    pub fn name(&mut self, name: &Arc<str>) -> u32 {
        if let Some(&i) = self.name_index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.clone());
        self.name_index.insert(name.clone(), i);
        i
    }

    /// The child of `parent` named `name` (by index), added when new.
    pub fn child(&mut self, parent: u32, name: u32) -> u32 {
        let next = self.nodes.len() as u32;
        let id = *self.children.entry((parent, name)).or_insert(next);
        if id == next {
            self.nodes.push(Node {
                parent,
                name,
                self_value: 0,
                total: 0,
            });
        }
        id
    }

    /// Adds a stack (root first, function names) with a value; for tests and tools.
    pub fn add_stack(&mut self, stack: &[&str], value: i64) {
        let mut node = 0;
        for f in stack {
            let n = self.name(&Arc::from(*f));
            node = self.child(node, n);
        }
        self.nodes[node as usize].self_value += value;
    }

    /// Sets every total from the self values (call once after adding).
    pub fn compute_totals(&mut self) {
        for n in &mut self.nodes {
            n.total = n.self_value;
        }
        for i in (1..self.nodes.len()).rev() {
            let (p, t) = (self.nodes[i].parent as usize, self.nodes[i].total);
            self.nodes[p].total += t;
        }
    }

    /// The root's total.
    pub fn total(&self) -> i64 {
        self.nodes[0].total
    }

    /// Children lists (indexes), each sorted by name.
    fn child_lists(&self) -> Vec<Vec<u32>> {
        let mut kids: Vec<Vec<u32>> = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            kids[n.parent as usize].push(i as u32);
        }
        for k in &mut kids {
            k.sort_by(|a, b| {
                self.names[self.nodes[*a as usize].name as usize]
                    .cmp(&self.names[self.nodes[*b as usize].name as usize])
            });
        }
        kids
    }

    /// The smallest total a node may have to be kept when at most `max_nodes` are shown (0:
    /// all are).
    fn keep_threshold(&self, max_nodes: usize) -> i64 {
        if max_nodes == 0 || self.nodes.len() <= max_nodes {
            return i64::MIN;
        }
        let mut totals: Vec<i64> = self.nodes.iter().map(|n| n.total).collect();
        let k = max_nodes.max(1) - 1;
        let (_, kth, _) = totals.select_nth_unstable_by(k, |a, b| b.cmp(a));
        // Strictly above the k-th total, so ties cannot take the count past max_nodes.
        kth.saturating_add(1)
    }

    /// A copy holding at most about `max_nodes` nodes (0: no limit): nodes below the
    /// threshold are cut and their totals summed into one `other` child of their parent.
    pub fn truncated(&self, max_nodes: usize) -> Tree {
        let min = self.keep_threshold(max_nodes);
        if min == i64::MIN {
            return self.clone();
        }
        let mut out = Tree::new();
        let other: Arc<str> = Arc::from(OTHER_NAME);
        let other_name = out.name(&other);
        let mut map: Vec<u32> = vec![u32::MAX; self.nodes.len()];
        map[0] = 0;
        out.nodes[0].self_value = self.nodes[0].self_value;
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            let parent = map[n.parent as usize];
            if parent == u32::MAX {
                continue; // below a cut node
            }
            if n.total >= min {
                let name = out.name(&self.names[n.name as usize]);
                let id = out.child(parent, name);
                out.nodes[id as usize].self_value += n.self_value;
                map[i] = id;
            } else {
                let id = out.child(parent, other_name);
                out.nodes[id as usize].self_value += n.total;
            }
        }
        out.compute_totals();
        out
    }

    /// Pyroscope's flame graph levels, at most about `max_nodes` nodes (0: all).
    pub fn flamegraph(&self, max_nodes: usize) -> FlameGraph {
        let t = self.truncated(max_nodes);
        let kids = t.child_lists();
        let mut levels: Vec<Vec<i64>> = Vec::new();
        let mut ends: Vec<i64> = Vec::new();
        let mut max_self = 0;
        // Depth-first, children in name order: each level then lists its bars left to right.
        let mut stack: Vec<(u32, usize, i64)> = vec![(0, 0, 0)];
        while let Some((i, depth, x)) = stack.pop() {
            let n = t.nodes[i as usize];
            if levels.len() <= depth {
                levels.push(Vec::new());
                ends.push(0);
            }
            levels[depth].extend([x - ends[depth], n.total, n.self_value, i64::from(n.name)]);
            ends[depth] = x + n.total;
            max_self = max_self.max(n.self_value);
            let mut cx = x;
            let mut pushes = Vec::with_capacity(kids[i as usize].len());
            for &c in &kids[i as usize] {
                pushes.push((c, depth + 1, cx));
                cx += t.nodes[c as usize].total;
            }
            stack.extend(pushes.into_iter().rev());
        }
        FlameGraph {
            names: t.names.iter().map(|s| s.to_string()).collect(),
            levels,
            total: t.total(),
            max_self,
        }
    }

    /// The tree as a pprof profile: one function and location per name, one sample per node
    /// with a self value (its stack leaf first).
    pub fn to_pprof(
        &self,
        pt: &super::query::ProfileType,
        period: i64,
        time_nanos: i64,
    ) -> Profile {
        let mut strings: Vec<String> = vec![String::new()];
        let mut index: HashMap<String, i64> = HashMap::from([(String::new(), 0)]);
        let mut s = |v: &str| -> i64 {
            if let Some(&i) = index.get(v) {
                return i;
            }
            strings.push(v.to_string());
            index.insert(v.to_string(), strings.len() as i64 - 1);
            strings.len() as i64 - 1
        };
        let sample_type = ValueType {
            r#type: s(&pt.sample_type),
            unit: s(&pt.sample_unit),
        };
        let period_type = ValueType {
            r#type: s(&pt.period_type),
            unit: s(&pt.period_unit),
        };
        // Function/location IDs are name index + 1 (name 0, the root, is never a frame).
        let mut function = Vec::with_capacity(self.names.len());
        let mut location = Vec::with_capacity(self.names.len());
        for (i, name) in self.names.iter().enumerate().skip(1) {
            let id = i as u64;
            function.push(Function {
                id,
                name: s(name),
                system_name: 0,
                filename: 0,
                start_line: 0,
            });
            location.push(Location {
                id,
                mapping_id: 0,
                address: 0,
                line: vec![Line {
                    function_id: id,
                    line: 0,
                }],
                is_folded: false,
            });
        }
        let mut sample = Vec::new();
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            if n.self_value == 0 {
                continue;
            }
            let mut ids = Vec::new();
            let mut j = i;
            while j != 0 {
                ids.push(u64::from(self.nodes[j].name));
                j = self.nodes[j].parent as usize;
            }
            sample.push(Sample {
                location_id: ids,
                value: vec![n.self_value],
                label: Vec::new(),
            });
        }
        Profile {
            sample_type: vec![sample_type],
            sample,
            mapping: Vec::new(),
            location,
            function,
            string_table: strings,
            drop_frames: 0,
            keep_frames: 0,
            time_nanos,
            duration_nanos: 0,
            period_type: Some(period_type),
            period,
            comment: Vec::new(),
            default_sample_type: 0,
        }
    }

    /// Only the stacks starting with `prefix` (function names, root first), as a
    /// `StackTraceSelector`'s `call_site` selects them; an empty prefix keeps everything.
    pub fn focus(&self, prefix: &[String]) -> Tree {
        if prefix.is_empty() {
            return self.clone();
        }
        let mut depth = vec![0usize; self.nodes.len()];
        let mut matched = vec![true; self.nodes.len()];
        let mut out = Tree::new();
        let mut map = vec![u32::MAX; self.nodes.len()];
        map[0] = 0;
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            let p = n.parent as usize;
            depth[i] = depth[p] + 1;
            matched[i] = matched[p]
                && (depth[i] > prefix.len()
                    || *self.names[n.name as usize] == *prefix[depth[i] - 1]);
            if !matched[i] || map[p] == u32::MAX {
                continue;
            }
            let name = out.name(&self.names[n.name as usize]);
            let id = out.child(map[p], name);
            map[i] = id;
            if depth[i] >= prefix.len() {
                out.nodes[id as usize].self_value += n.self_value;
            }
        }
        out.compute_totals();
        out
    }

    /// `{"n": name, "v": total, "s": self, "c": [children, largest first]}` with at most
    /// about `max_nodes` nodes (the shape rill's flame graph renderer draws).
    pub fn to_json(&self, max_nodes: usize) -> Json {
        let t = self.truncated(max_nodes);
        let mut kids = t.child_lists();
        for k in &mut kids {
            k.sort_by(|a, b| t.nodes[*b as usize].total.cmp(&t.nodes[*a as usize].total));
        }
        fn walk(t: &Tree, kids: &[Vec<u32>], i: u32) -> Json {
            let n = t.nodes[i as usize];
            let c: Vec<Json> = kids[i as usize].iter().map(|&c| walk(t, kids, c)).collect();
            json!({"n": &*t.names[n.name as usize], "v": n.total, "s": n.self_value, "c": c})
        }
        walk(&t, &kids, 0)
    }

    /// Per function: `(name, self, total)`, largest self first; a function's total counts a
    /// stack once however often it recurs in it.
    pub fn top_functions(&self) -> Vec<(Arc<str>, i64, i64)> {
        let kids = self.child_lists();
        let mut self_v = vec![0i64; self.names.len()];
        let mut total_v = vec![0i64; self.names.len()];
        let mut on_path = vec![0u32; self.names.len()];
        // (node, entering)
        let mut stack: Vec<(u32, bool)> = kids[0].iter().map(|&c| (c, true)).collect();
        while let Some((i, enter)) = stack.pop() {
            let n = self.nodes[i as usize];
            let name = n.name as usize;
            if enter {
                self_v[name] += n.self_value;
                if on_path[name] == 0 {
                    total_v[name] += n.total;
                }
                on_path[name] += 1;
                stack.push((i, false));
                stack.extend(kids[i as usize].iter().map(|&c| (c, true)));
            } else {
                on_path[name] -= 1;
            }
        }
        let mut rows: Vec<(Arc<str>, i64, i64)> = (1..self.names.len())
            .filter(|&i| total_v[i] != 0 || self_v[i] != 0)
            .map(|i| (self.names[i].clone(), self_v[i], total_v[i]))
            .collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
        rows
    }
}

/// The diff of two trees as nested JSON: `{"n", "l", "r", "ls", "rs", "c"}` (totals and
/// self values left and right), children by the larger of their totals, at most about
/// `max_nodes` nodes (cut children summed into `other`).
pub fn diff_json(left: &Tree, right: &Tree, max_nodes: usize) -> Json {
    // The union tree: left values in `self_value`/`total`, right values on the side.
    let mut u = Tree::new();
    let mut right_vals: Vec<(i64, i64)> = vec![(0, 0)];
    let add = |t: &Tree, is_left: bool, u: &mut Tree, rv: &mut Vec<(i64, i64)>| {
        let mut map = vec![0u32; t.nodes.len()];
        for (i, n) in t.nodes.iter().enumerate() {
            let id = if i == 0 {
                0
            } else {
                let name = u.name(&t.names[n.name as usize]);
                u.child(map[n.parent as usize], name)
            };
            map[i] = id;
            if rv.len() < u.nodes.len() {
                rv.resize(u.nodes.len(), (0, 0));
            }
            if is_left {
                u.nodes[id as usize].self_value += n.self_value;
                u.nodes[id as usize].total += n.total;
            } else {
                rv[id as usize].0 += n.self_value;
                rv[id as usize].1 += n.total;
            }
        }
    };
    add(left, true, &mut u, &mut right_vals);
    add(right, false, &mut u, &mut right_vals);
    // Rank by the larger side for the cut.
    let size: Vec<i64> = u
        .nodes
        .iter()
        .zip(&right_vals)
        .map(|(n, r)| n.total.max(r.1))
        .collect();
    let min = if max_nodes == 0 || size.len() <= max_nodes {
        i64::MIN
    } else {
        let mut s = size.clone();
        let (_, kth, _) = s.select_nth_unstable_by(max_nodes.max(1) - 1, |a, b| b.cmp(a));
        kth.saturating_add(1)
    };
    let mut kids: Vec<Vec<u32>> = vec![Vec::new(); u.nodes.len()];
    for (i, n) in u.nodes.iter().enumerate().skip(1) {
        kids[n.parent as usize].push(i as u32);
    }
    for k in &mut kids {
        k.sort_by(|a, b| size[*b as usize].cmp(&size[*a as usize]));
    }
    fn walk(
        u: &Tree,
        rv: &[(i64, i64)],
        kids: &[Vec<u32>],
        size: &[i64],
        min: i64,
        i: u32,
    ) -> Json {
        let n = u.nodes[i as usize];
        let mut c = Vec::new();
        let (mut ol, mut or) = (0i64, 0i64);
        for &k in &kids[i as usize] {
            if size[k as usize] >= min {
                c.push(walk(u, rv, kids, size, min, k));
            } else {
                ol += u.nodes[k as usize].total;
                or += rv[k as usize].1;
            }
        }
        if ol != 0 || or != 0 {
            c.push(json!({"n": OTHER_NAME, "l": ol, "r": or, "ls": ol, "rs": or, "c": []}));
        }
        json!({
            "n": &*u.names[n.name as usize],
            "l": n.total, "r": rv[i as usize].1,
            "ls": n.self_value, "rs": rv[i as usize].0,
            "c": c,
        })
    }
    walk(&u, &right_vals, &kids, &size, min, 0)
}

#[cfg(test)]
mod tests;
