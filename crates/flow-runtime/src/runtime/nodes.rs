//! The nodes modules add to the graph (custom component instances, their arguments and
//! exports): where each node publishes its value, how the runtime evaluates the module nodes
//! itself, and how the API shows a node (an argument or export node stands for its instance).

use super::{ComponentInfo, State};
use crate::component::{Health, HealthState};
use crate::loader::{GraphDef, NodeKind};
use river_parser::eval::{BodyItem, BodyValue};
use river_parser::{Diagnostics, Value};
use std::collections::BTreeSet;

/// Where node `i` of `graph` publishes: a component in its module's scope at its local ID, an
/// argument at `argument.NAME` of its module, an export at `INSTANCE.NAME` of the instance's
/// module; an instance nowhere (its exports are its export nodes').
pub(super) fn publish_target(graph: &GraphDef, i: usize) -> Option<(usize, Vec<String>)> {
    let def = &graph.nodes[i];
    let split = |s: &str| s.split('.').map(str::to_string).collect::<Vec<_>>();
    match &def.kind {
        NodeKind::Component => Some((def.scope, split(&def.local_id))),
        NodeKind::Instance { .. } => None,
        NodeKind::Argument { name, .. } => {
            Some((def.scope, vec!["argument".to_string(), name.clone()]))
        }
        NodeKind::Export { name, instance } => {
            let inst = &graph.nodes[*instance];
            let mut path = split(&inst.local_id);
            path.push(name.clone());
            Some((inst.scope, path))
        }
    }
}

/// Evaluates a node of a module from its evaluated body: an instance's value is its
/// arguments, an argument's `{ value = ... }` (the instance's attribute, else `default`, else
/// null), an export's its `value`. The value goes out through the node's exports handle.
pub(super) fn evaluate_module_node(
    st: &mut State,
    i: usize,
    body: BodyValue,
) -> Result<(), Diagnostics> {
    let value = match &st.graph.nodes[i].kind {
        NodeKind::Component => return Ok(()),
        NodeKind::Instance { .. } => Value::Object(
            body.items
                .iter()
                .filter_map(|item| match item {
                    BodyItem::Attr { name, value, .. } => Some((name.clone(), value.clone())),
                    BodyItem::Block { .. } => None,
                })
                .collect(),
        ),
        NodeKind::Argument { name, instance } => {
            let given = st.nodes[*instance]
                .args_body
                .as_ref()
                .and_then(|b| b.attr(name))
                .cloned();
            let v = given
                .or_else(|| body.attr("default").cloned())
                .unwrap_or(Value::Null);
            Value::Object([("value".to_string(), v)].into())
        }
        NodeKind::Export { .. } => body.attr("value").cloned().unwrap_or(Value::Null),
    };
    let node = &mut st.nodes[i];
    node.exports.publish(value);
    node.args_body = Some(body);
    node.set_eval_health(Health::healthy("evaluated"));
    Ok(())
}

/// The visible nodes `links` stand for (an argument or export node is shown as its
/// instance), without `i` itself, in source order.
fn visible_ids(st: &State, i: usize, links: &[usize]) -> Vec<String> {
    links
        .iter()
        .map(|&r| st.graph.visible_of(r))
        .filter(|&r| r != i)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|r| st.nodes[r].id.clone())
        .collect()
}

pub(super) fn info(st: &State, i: usize, full: bool) -> ComponentInfo {
    let n = &st.nodes[i];
    let def = &st.graph.nodes[i];
    let is_instance = matches!(def.kind, NodeKind::Instance { .. });
    // An instance's own nodes (arguments, exports): their failures are the instance's.
    let own: Vec<usize> = if is_instance {
        (i + 1..st.nodes.len())
            .filter(|&j| j != st.graph.visible_of(j) && st.graph.visible_of(j) == i)
            .collect()
    } else {
        Vec::new()
    };
    let health = own
        .iter()
        .map(|&j| st.nodes[j].health())
        .find(|h| h.state == HealthState::Unhealthy)
        .unwrap_or_else(|| n.health());
    let exports = if !full {
        None
    } else if is_instance {
        Some(Value::Object(
            own.iter()
                .filter_map(|&j| match &st.graph.nodes[j].kind {
                    NodeKind::Export { name, .. } => Some((
                        name.clone(),
                        st.nodes[j].propagated.clone().unwrap_or(Value::Null),
                    )),
                    _ => None,
                })
                .collect(),
        ))
    } else {
        n.propagated.clone()
    };
    ComponentInfo {
        id: n.id.clone(),
        local_id: def.local_id.clone(),
        module_id: def.module_id.clone(),
        created_modules: if is_instance {
            vec![n.id.clone()]
        } else {
            Vec::new()
        },
        name: n.name.clone(),
        label: n.label.clone(),
        health,
        references_to: visible_ids(st, i, &def.refs),
        // Outside, an instance is referenced through its exports.
        referenced_by: visible_ids(
            st,
            i,
            &own.iter()
                .filter(|&&j| matches!(st.graph.nodes[j].kind, NodeKind::Export { .. }))
                .flat_map(|&j| st.graph.dependants[j].iter().copied())
                .chain(st.graph.dependants[i].iter().copied())
                .collect::<Vec<_>>(),
        ),
        arguments: if full { n.args_body.clone() } else { None },
        exports,
        debug_info: if full {
            n.instance
                .as_ref()
                .and_then(|i| n.span.in_scope(|| i.debug_info()))
        } else {
            None
        },
        health_history: if full {
            n.history.iter().cloned().collect()
        } else {
            Vec::new()
        },
    }
}
