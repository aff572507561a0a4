//! Random DAGs of elementwise ops (unary, binary, `where`, reshaped views) over broadcast
//! leaves with special values mixed in: the generator behind the fusion and replay properties.

use crate::*;
use proptest::prelude::*;
use vkgrad::{Tensor, BINARY_OPS, REDUCE_OPS, UNARY_OPS};

/// One node of a DAG: the op and its inputs, as indices taken modulo the values made so far
/// (leaves first), so any earlier value can be shared by several nodes.
#[derive(Debug, Clone)]
pub enum Node {
    Unary {
        op: usize,
        s: usize,
        x: usize,
    },
    Binary {
        op: usize,
        a: usize,
        b: usize,
    },
    Where {
        m: usize,
        a: usize,
        b: usize,
    },
    /// Flattened and reshaped back: a view of another shape of the same (maybe pending) value.
    Reshape {
        x: usize,
    },
}

pub fn node() -> impl Strategy<Value = Node> {
    let i = || 0usize..64;
    prop_oneof![
        4 => (0..UNARY_OPS.len(), 0usize..4, i()).prop_map(|(op, s, x)| Node::Unary { op, s, x }),
        4 => (0..BINARY_OPS.len(), i(), i()).prop_map(|(op, a, b)| Node::Binary { op, a, b }),
        1 => (i(), i(), i()).prop_map(|(m, a, b)| Node::Where { m, a, b }),
        1 => i().prop_map(|x| Node::Reshape { x }),
    ]
}

/// A sub-shape of `out` that broadcasts to it: some leading dimensions dropped, some set to 1.
pub fn side(out: Vec<usize>) -> impl Strategy<Value = Vec<usize>> {
    let r = out.len();
    (0..=r, prop::collection::vec(any::<bool>(), r)).prop_map(move |(drop, ones)| {
        out.iter()
            .enumerate()
            .skip(drop)
            .map(|(i, &d)| if ones[i] { 1 } else { d })
            .collect()
    })
}

pub const SPECIAL: [f32; 5] = [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];

/// Leaf values: one magnitude class, with a few special values (±0, ±inf, NaN) mixed in.
pub fn leaf(shape: Vec<usize>) -> impl Strategy<Value = RefTensor> {
    let n: usize = shape.iter().product();
    (
        tensor_of(shape),
        prop::collection::vec((0..n.max(1), 0..SPECIAL.len()), 0..3),
    )
        .prop_map(move |(mut t, specials)| {
            if n > 0 {
                for (at, k) in specials {
                    t.data[at] = SPECIAL[k] as f64;
                }
            }
            t
        })
}

#[derive(Debug, Clone)]
pub struct Dag {
    pub leaves: Vec<RefTensor>,
    pub nodes: Vec<Node>,
    /// A node read back before the last one (it is then computed on its own first), or after
    /// it (it was inlined into the last node's kernel and is computed again alone).
    pub probe_at: usize,
    pub probe_first: bool,
    /// A reduction of the last node while it is still pending (a fused prologue): the op of
    /// REDUCE_OPS (or argmax past them) and the axis (past the rank: all axes).
    pub reduce_op: usize,
    pub reduce_axis: usize,
}

impl Dag {
    /// Every value of the DAG on `leaves` (the leaves first, then one per node).
    pub fn eval(&self, leaves: &[Tensor]) -> vkgrad::Result<Vec<Tensor>> {
        let mut vals = leaves.to_vec();
        for n in &self.nodes {
            let at = |i: usize| vals[i % vals.len()].clone();
            let v = match *n {
                Node::Unary { op, s, x } => {
                    let op = &UNARY_OPS[op];
                    (op.call)(&at(x), op.scalars[s % op.scalars.len()] as f32)?
                }
                Node::Binary { op, a, b } => (BINARY_OPS[op].call)(&at(a), &at(b))?,
                Node::Where { m, a, b } => Tensor::where_(&at(m), &at(a), &at(b))?,
                Node::Reshape { x } => {
                    let x = at(x);
                    x.reshape(&[x.numel()])?.reshape(x.shape())?
                }
            };
            vals.push(v);
        }
        Ok(vals)
    }
}

pub fn dag() -> impl Strategy<Value = Dag> {
    shape(0..=3, 300)
        .prop_flat_map(|out| {
            (
                prop::collection::vec(side(out.clone()).prop_flat_map(leaf), 1..=3),
                prop::collection::vec(node(), 1..=30),
                0usize..64,
                any::<bool>(),
                0..=REDUCE_OPS.len(),
                0usize..4,
            )
        })
        .prop_map(
            |(leaves, nodes, probe_at, probe_first, reduce_op, reduce_axis)| Dag {
                leaves,
                nodes,
                probe_at,
                probe_first,
                reduce_op,
                reduce_axis,
            },
        )
}
