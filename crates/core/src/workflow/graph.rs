//! A workflow drawn as a graph: its nodes laid out left to right by dependency, computed here
//! (so every client draws the same picture and a browser never lays out ten thousand boxes).
//!
//! - **Folding.** A fan-out's children (nodes named `parent/000017`) fold into one node
//!   `parent/*` with their count and a tally by state, so a 10,000-child fan-out is one box.
//! - **Layers.** A node's layer is the longest chain of parents before it.
//! - **Order.** Within a layer, nodes start in submission order and are then moved a few times
//!   towards the mean position of their neighbours (parents, then children), which untangles
//!   most crossings at little cost.
//! - **Critical path.** The chain the speedup report found longest is marked, nodes and edges.
//! - **Fan-outs.** Children are drawn after the task that fanned them out, which made them while
//!   it ran (so they are not its dependents in the speedup report's sense).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::WorkflowNode;
use crate::id::TaskId;
use crate::task::TaskState;

/// A box's size and the gaps between boxes, in the drawing's units.
pub const NODE_WIDTH: u32 = 180;
pub const NODE_HEIGHT: u32 = 48;
const LAYER_GAP: u32 = 70;
const ROW_GAP: u32 = 18;
/// Barycenter passes (each one down and one up).
const PASSES: usize = 4;

/// The laid-out graph (`GET /v1/workflows/{id}/graph`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkflowGraph {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
    /// The drawing's size: every node lies within it.
    pub width: u32,
    pub height: u32,
}

/// One box: a node, or a fan-out's children folded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphNode {
    /// The node's id (`split`), or for folded children their parent's with `/*` (`split/*`).
    pub label: String,
    /// How many workflow nodes the box stands for.
    pub count: u32,
    /// How many of them are in each state.
    #[schema(value_type = Object)]
    pub states: BTreeMap<TaskState, u32>,
    /// The task, when the box is one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    /// Its column, from 0.
    pub layer: u32,
    /// Its top-left corner.
    pub x: u32,
    pub y: u32,
    /// Whether it is on the critical path.
    pub critical: bool,
}

/// An arrow from a box to one that depends on it (indexes into `nodes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphEdge {
    pub from: u32,
    pub to: u32,
    pub critical: bool,
}

/// The box a node belongs to: its own, or `parent/*` for a fan-out child (`parent/000017`).
fn fold_key(node: &str) -> String {
    match node.rsplit_once('/') {
        Some((parent, index)) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{parent}/*")
        }
        _ => node.to_owned(),
    }
}

/// Lays out `nodes` (a workflow's, parents first, with their `parents`), marking `critical`
/// (indexes into `nodes`, parents first: the speedup report's `critical_nodes`).
pub fn layout(nodes: &[WorkflowNode], critical: &[u32]) -> WorkflowGraph {
    // Fold nodes into boxes, in order of first appearance.
    let mut boxes: Vec<GraphNode> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    let mut box_of = Vec::with_capacity(nodes.len());
    for n in nodes {
        let key = fold_key(&n.node);
        let b = *by_key.entry(key.clone()).or_insert_with(|| {
            boxes.push(GraphNode {
                label: key,
                count: 0,
                states: BTreeMap::new(),
                task_id: Some(n.task_id),
                layer: 0,
                x: 0,
                y: 0,
                critical: false,
            });
            boxes.len() - 1
        });
        let g = &mut boxes[b];
        g.count += 1;
        if g.count > 1 {
            g.task_id = None;
        }
        *g.states.entry(n.state).or_default() += 1;
        box_of.push(b);
    }
    // Edges between boxes, once each. A fan-out's children have no parents of their own (the
    // task that fanned out made them while it ran): they are drawn after it.
    let by_name: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.node.as_str(), i)).collect();
    let mut edge_set: BTreeMap<(usize, usize), bool> = BTreeMap::new();
    for (child, n) in nodes.iter().enumerate() {
        let implied = match n.node.rsplit_once('/') {
            Some((parent, _)) if n.parents.is_empty() && fold_key(&n.node) != n.node => by_name.get(parent).copied(),
            _ => None,
        };
        for p in n.parents.iter().map(|&p| p as usize).chain(implied) {
            let (from, to) = (box_of.get(p).copied(), box_of[child]);
            if let Some(from) = from.filter(|&f| f != to) {
                edge_set.entry((from, to)).or_insert(false);
            }
        }
    }
    for w in critical.windows(2) {
        if let (Some(&a), Some(&b)) = (box_of.get(w[0] as usize), box_of.get(w[1] as usize))
            && let Some(c) = edge_set.get_mut(&(a, b))
        {
            *c = true;
        }
    }
    for &i in critical {
        if let Some(&b) = box_of.get(i as usize) {
            boxes[b].critical = true;
        }
    }
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); boxes.len()];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); boxes.len()];
    for &(from, to) in edge_set.keys() {
        parents[to].push(from);
        children[from].push(to);
    }
    // Layers by longest path, over a topological order (Kahn's); a box in a cycle, which a
    // valid workflow cannot have, stays in layer 0 rather than looping.
    let mut waiting: Vec<usize> = parents.iter().map(Vec::len).collect();
    let mut ready: std::collections::VecDeque<usize> = (0..boxes.len()).filter(|&b| waiting[b] == 0).collect();
    let mut layer = vec![0u32; boxes.len()];
    while let Some(b) = ready.pop_front() {
        for &c in &children[b] {
            layer[c] = layer[c].max(layer[b] + 1);
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.push_back(c);
            }
        }
    }
    let layers = layer.iter().max().map_or(0, |&l| l as usize + 1);
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for (b, &l) in layer.iter().enumerate() {
        rows[l as usize].push(b);
    }
    // Order within layers: towards the mean position of parents (going right), then of children
    // (going left).
    let mut position = vec![0f64; boxes.len()];
    let place = |rows: &[Vec<usize>], position: &mut [f64]| {
        for row in rows {
            for (i, &b) in row.iter().enumerate() {
                position[b] = i as f64;
            }
        }
    };
    place(&rows, &mut position);
    let mean = |of: &[usize], position: &[f64], own: f64| {
        if of.is_empty() { own } else { of.iter().map(|&n| position[n]).sum::<f64>() / of.len() as f64 }
    };
    for _ in 0..PASSES {
        for l in 1..layers {
            let key: HashMap<usize, f64> =
                rows[l].iter().map(|&b| (b, mean(&parents[b], &position, position[b]))).collect();
            rows[l].sort_by(|a, b| key[a].total_cmp(&key[b]));
            place(&rows, &mut position);
        }
        for l in (0..layers.saturating_sub(1)).rev() {
            let key: HashMap<usize, f64> =
                rows[l].iter().map(|&b| (b, mean(&children[b], &position, position[b]))).collect();
            rows[l].sort_by(|a, b| key[a].total_cmp(&key[b]));
            place(&rows, &mut position);
        }
    }
    // Coordinates: columns by layer, each column centred on the tallest.
    let tallest = rows.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let height = tallest * (NODE_HEIGHT + ROW_GAP);
    for (l, row) in rows.iter().enumerate() {
        let offset = (height - row.len() as u32 * (NODE_HEIGHT + ROW_GAP)) / 2;
        for (i, &b) in row.iter().enumerate() {
            let g = &mut boxes[b];
            g.layer = l as u32;
            g.x = l as u32 * (NODE_WIDTH + LAYER_GAP);
            g.y = offset + i as u32 * (NODE_HEIGHT + ROW_GAP) + ROW_GAP / 2;
        }
    }
    let edges = edge_set
        .into_iter()
        .map(|((from, to), critical)| GraphEdge { from: from as u32, to: to as u32, critical })
        .collect();
    WorkflowGraph {
        nodes: boxes,
        edges,
        width: (layers as u32 * (NODE_WIDTH + LAYER_GAP)).saturating_sub(LAYER_GAP),
        height,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, parents: &[u32], state: TaskState) -> WorkflowNode {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(name.len() as u64 * 7919 + parents.len() as u64).to_be_bytes());
        id[8..].copy_from_slice(&(name.bytes().map(u64::from).sum::<u64>()).to_be_bytes());
        WorkflowNode { node: name.into(), task_id: TaskId::from_bytes(id), state, parents: parents.to_vec() }
    }

    /// split, its 10,000 children, their join, then a report after the join.
    fn fan_out(children: u32) -> Vec<WorkflowNode> {
        let mut nodes = vec![node("split", &[], TaskState::Succeeded)];
        for i in 0..children {
            let state = if i % 10 == 0 { TaskState::Running } else { TaskState::Succeeded };
            nodes.push(node(&format!("split/{i:06}"), &[], state));
        }
        nodes.push(node("split/join", &(1..=children).collect::<Vec<_>>(), TaskState::Scheduled));
        nodes.push(node("report", &[children + 1], TaskState::Scheduled));
        nodes
    }

    #[test]
    fn a_fan_out_folds_into_one_box_with_its_states() {
        let g = layout(&fan_out(10_000), &[0, 17, 10_001]);
        let labels: Vec<_> = g.nodes.iter().map(|n| (n.label.as_str(), n.count, n.layer)).collect();
        assert_eq!(labels, vec![("split", 1, 0), ("split/*", 10_000, 1), ("split/join", 1, 2), ("report", 1, 3)]);
        let children = &g.nodes[1];
        assert_eq!(children.states[&TaskState::Running], 1000);
        assert_eq!(children.states[&TaskState::Succeeded], 9000);
        assert_eq!(children.task_id, None);
        assert!(g.nodes[0].task_id.is_some());
        let edges: Vec<_> = g.edges.iter().map(|e| (e.from, e.to, e.critical)).collect();
        assert_eq!(edges, vec![(0, 1, true), (1, 2, true), (2, 3, false)]);
        assert_eq!([g.nodes[0].critical, g.nodes[1].critical, g.nodes[3].critical], [true, true, false]);
    }

    #[test]
    fn layers_follow_the_longest_chain_and_boxes_stay_inside_the_drawing() {
        // a → b → d, a → c → d, a → d: d is after the longest chain, in layer 2.
        let nodes = vec![
            node("a", &[], TaskState::Succeeded),
            node("b", &[0], TaskState::Succeeded),
            node("c", &[0], TaskState::Failed),
            node("d", &[0, 1, 2], TaskState::Cancelled),
        ];
        let g = layout(&nodes, &[]);
        assert_eq!(g.nodes.iter().map(|n| n.layer).collect::<Vec<_>>(), vec![0, 1, 1, 2]);
        for n in &g.nodes {
            assert!(n.x + NODE_WIDTH <= g.width && n.y + NODE_HEIGHT <= g.height, "{n:?} in {}x{}", g.width, g.height);
        }
        let (b, c) = (&g.nodes[1], &g.nodes[2]);
        assert_eq!(b.x, c.x);
        assert!(b.y.abs_diff(c.y) >= NODE_HEIGHT, "boxes in one layer do not overlap");
        assert!(g.edges.iter().all(|e| !e.critical));
    }

    #[test]
    fn ordering_by_neighbours_uncrosses_edges() {
        // Layer 0: p, q. Layer 1 in submission order: from_q, from_p; the barycenter puts
        // from_p beside p.
        let nodes = vec![
            node("p", &[], TaskState::Ready),
            node("q", &[], TaskState::Ready),
            node("from_q", &[1], TaskState::Scheduled),
            node("from_p", &[0], TaskState::Scheduled),
        ];
        let g = layout(&nodes, &[]);
        let y = |label: &str| g.nodes.iter().find(|n| n.label == label).unwrap().y;
        assert_eq!(y("p") < y("q"), y("from_p") < y("from_q"), "{g:?}");
    }

    #[test]
    fn nested_fan_outs_fold_each_on_its_own() {
        let mut nodes = vec![node("root", &[], TaskState::Succeeded)];
        nodes.push(node("root/000000", &[0], TaskState::Succeeded));
        nodes.push(node("root/000001", &[0], TaskState::Succeeded));
        nodes.push(node("root/000000/000000", &[1], TaskState::Ready));
        nodes.push(node("root/000000/000001", &[1], TaskState::Ready));
        nodes.push(node("root/000000/join", &[3, 4], TaskState::Scheduled));
        nodes.push(node("root/join", &[5, 2], TaskState::Scheduled));
        let g = layout(&nodes, &[]);
        let labels: Vec<_> = g.nodes.iter().map(|n| (n.label.as_str(), n.count)).collect();
        assert_eq!(
            labels,
            vec![("root", 1), ("root/*", 2), ("root/000000/*", 2), ("root/000000/join", 1), ("root/join", 1)]
        );
    }

    #[test]
    fn an_empty_workflow_is_an_empty_drawing() {
        let g = layout(&[], &[]);
        assert!(g.nodes.is_empty() && g.edges.is_empty());
        assert_eq!((g.width, g.height), (0, 0));
    }
}
