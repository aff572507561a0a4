//! Folding evaluation-mode batch norm into the Conv or Linear before it. The traced batch
//! norm is `Reshape [N, C, rest] → Sub(mean [1, C, 1]) → Mul(scale [1, C, 1]) → Add(shift
//! [1, C, 1]) → Reshape back` (the Sub optional; constants already folded from γ, β and the
//! running statistics); after a `Conv` or a `MatMul` by a weight used nowhere else, it becomes
//! part of that op: W'[c] = W[c] · scale[c], b' = (b − mean) · scale + shift — the graph
//! PyTorch's export gives after
//! `fuse_conv_bn_eval`, and one op instead of five at inference.

use super::proto::{GraphProto, NodeProto, TensorProto, FLOAT, INT64};
use std::collections::HashMap;

/// Folds every batch norm that follows a Conv or a MatMul; returns how many were folded.
pub fn batch_norms(g: &mut GraphProto) -> usize {
    let mut folded = 0;
    while let Some(plan) = find(g) {
        apply(g, plan);
        folded += 1;
    }
    prune(g);
    folded
}

struct Plan {
    /// Node indices: the Conv / MatMul, then the chain after it (Reshape, the Sub if any, Mul,
    /// Add, Reshape).
    op: usize,
    /// The op's weight initializer.
    weight: TensorProto,
    chain: Vec<usize>,
    mean: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

fn init<'a>(g: &'a GraphProto, name: &str) -> Option<&'a TensorProto> {
    g.initializer
        .iter()
        .find(|t| t.name == name && t.data_type == FLOAT)
}

fn uses(g: &GraphProto, name: &str) -> usize {
    g.node
        .iter()
        .flat_map(|n| &n.input)
        .filter(|i| *i == name)
        .count()
        + g.output.iter().filter(|o| o.name == name).count()
}

/// The single node that reads `name`, if exactly one does.
fn only_reader(g: &GraphProto, name: &str) -> Option<usize> {
    if uses(g, name) != 1 {
        return None;
    }
    g.node
        .iter()
        .position(|n| n.input.iter().any(|i| i == name))
}

/// A per-channel constant [1, C, 1] (or [C] / [1, C]), as C values.
fn per_channel(g: &GraphProto, name: &str, c: usize) -> Option<Vec<f32>> {
    let t = init(g, name)?;
    let n: i64 = t.dims.iter().product();
    (n as usize == c && t.float_data.len() == c && t.dims.iter().filter(|&&d| d != 1).count() <= 1)
        .then(|| t.float_data.clone())
}

fn find(g: &GraphProto) -> Option<Plan> {
    for (i, n) in g.node.iter().enumerate() {
        if n.op_type != "Conv" && n.op_type != "MatMul" {
            continue;
        }
        let Some(w) = n.input.get(1).and_then(|name| init(g, name)) else {
            continue;
        };
        if uses(g, &w.name) != 1 {
            continue;
        }
        let c = if n.op_type == "Conv" {
            w.dims[0] as usize
        } else if w.dims.len() == 2 {
            w.dims[1] as usize
        } else {
            continue;
        };
        let r1 = only_reader(g, &n.output[0]).filter(|&j| g.node[j].op_type == "Reshape");
        let Some(r1) = r1 else { continue };
        // The centring z − mean, when the batch norm subtracts before it scales.
        let sub = only_reader(g, &g.node[r1].output[0]).filter(|&j| {
            g.node[j].op_type == "Sub" && g.node[j].input.first() == Some(&g.node[r1].output[0])
        });
        let before_mul = sub.unwrap_or(r1);
        let Some(m) =
            only_reader(g, &g.node[before_mul].output[0]).filter(|&j| g.node[j].op_type == "Mul")
        else {
            continue;
        };
        let Some(a) = only_reader(g, &g.node[m].output[0]).filter(|&j| g.node[j].op_type == "Add")
        else {
            continue;
        };
        let Some(r2) =
            only_reader(g, &g.node[a].output[0]).filter(|&j| g.node[j].op_type == "Reshape")
        else {
            continue;
        };
        let other = |node: &NodeProto, mine: &str| {
            node.input
                .iter()
                .find(|x| *x != mine)
                .cloned()
                .unwrap_or_default()
        };
        // The batch norm's view [N, C, rest] with C = this op's channels, and back to the
        // op's own rank (4 for Conv, 2 for a Linear's MatMul).
        let target = |j: usize| -> Option<Vec<i64>> {
            let name = g.node[j].input.get(1)?;
            let t = g
                .initializer
                .iter()
                .find(|t| &t.name == name && t.data_type == INT64)?;
            Some(t.int64_data.clone())
        };
        let rank = if n.op_type == "Conv" { 4 } else { 2 };
        let fits = target(r1)
            .is_some_and(|s| s.len() == 3 && s[1] == c as i64 && (rank == 4 || s[2] == 1))
            && target(r2).is_some_and(|s| s.len() == rank);
        if !fits {
            continue;
        }
        let mean = match sub {
            Some(j) => per_channel(g, &g.node[j].input[1], c),
            None => Some(vec![0.0; c]),
        };
        let scale = per_channel(g, &other(&g.node[m], &g.node[before_mul].output[0]), c);
        let shift = per_channel(g, &other(&g.node[a], &g.node[m].output[0]), c);
        if let (Some(mean), Some(scale), Some(shift)) = (mean, scale, shift) {
            return Some(Plan {
                op: i,
                weight: w.clone(),
                chain: [Some(r1), sub, Some(m), Some(a), Some(r2)]
                    .into_iter()
                    .flatten()
                    .collect(),
                mean,
                scale,
                shift,
            });
        }
    }
    None
}

fn apply(g: &mut GraphProto, p: Plan) {
    let node = g.node[p.op].clone();
    let w = p.weight;
    let c = p.scale.len();
    let mut w2 = w.clone();
    w2.name = format!("{}.bn_folded", w.name);
    if node.op_type == "Conv" {
        let per = w.float_data.len() / c;
        for (o, chunk) in w2.float_data.chunks_mut(per).enumerate() {
            chunk.iter_mut().for_each(|v| *v *= p.scale[o]);
        }
    } else {
        for row in w2.float_data.chunks_mut(c) {
            row.iter_mut().zip(&p.scale).for_each(|(v, s)| *v *= s);
        }
    }
    let old_bias = (node.op_type == "Conv" && node.input.len() > 2)
        .then(|| init(g, &node.input[2]).map(|t| t.float_data.clone()))
        .flatten()
        .unwrap_or_else(|| vec![0.0; c]);
    let bias: Vec<f32> = (0..c)
        .map(|i| (old_bias[i] - p.mean[i]) * p.scale[i] + p.shift[i])
        .collect();
    let b_name = format!("{}.bn_folded_bias", w.name);
    g.initializer.push(w2.clone());
    g.initializer.push(TensorProto {
        dims: vec![c as i64],
        data_type: FLOAT,
        float_data: bias,
        name: b_name.clone(),
        ..Default::default()
    });
    let out = g.node[*p.chain.last().expect("a chain")].output[0].clone();
    let mut fused = node.clone();
    fused.input = vec![node.input[0].clone(), w2.name.clone(), b_name];
    fused.output = vec![out];
    if node.op_type == "MatMul" {
        // Gemm: Y = A B + C, for the [N, in] x [in, out] of a Linear layer.
        fused.op_type = "Gemm".into();
        fused.name = format!("{}_bn", node.name);
    }
    let mut drop: Vec<usize> = p.chain.clone();
    drop.push(p.op);
    drop.sort_unstable();
    g.node[p.op] = fused;
    drop.retain(|&d| d != p.op);
    for d in drop.into_iter().rev() {
        g.node.remove(d);
    }
}

/// Removes initializers no node reads any more.
fn prune(g: &mut GraphProto) {
    let used: HashMap<&str, ()> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(|s| (s.as_str(), ())))
        .collect();
    let keep: Vec<TensorProto> = g
        .initializer
        .iter()
        .filter(|t| used.contains_key(t.name.as_str()))
        .cloned()
        .collect();
    g.initializer = keep;
}
