//! Random DAGs of elementwise ops (unary, binary, `where`, reshaped views) over broadcast
//! leaves with special values mixed in, and maybe a matrix product of the output's shape among
//! the values they read (a fused matmul epilogue): the generator behind the fusion and replay
//! properties.

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

/// A matrix product op(A) · op(B) whose result has the DAG's output shape: one more value
/// the nodes may read (pending, so consumers of its shape fuse into the matmul kernel).
#[derive(Debug, Clone)]
pub struct Product {
    pub a: RefTensor,
    pub b: RefTensor,
    pub ta: bool,
    pub tb: bool,
}

/// The factors of a product of shape `out` (rank ≥ 2): K is often a multiple of 4, so both
/// CPU-driver kernels (vec4 lanes and scalar) are drawn.
pub fn product(out: Vec<usize>) -> impl Strategy<Value = Product> {
    let r = out.len();
    let (m, n) = (out[r - 2], out[r - 1]);
    let batch = out[..r - 2].to_vec();
    (
        prop_oneof![dim(), (1usize..=8).prop_map(|k| 4 * k)],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(move |(k, ta, tb)| {
            let with = |x: usize, y: usize| {
                let mut s = batch.clone();
                s.extend([x, y]);
                s
            };
            let sa = if ta { with(k, m) } else { with(m, k) };
            let sb = if tb { with(n, k) } else { with(k, n) };
            (leaf(sa), leaf(sb)).prop_map(move |(a, b)| Product { a, b, ta, tb })
        })
}

#[derive(Debug, Clone)]
pub struct Dag {
    pub leaves: Vec<RefTensor>,
    /// A product among the values (after the leaves, before the nodes).
    pub product: Option<Product>,
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
    /// The tensors [`Dag::eval`] takes: the leaves, then the product's factors.
    pub fn inputs(&self) -> Vec<RefTensor> {
        let mut v = self.leaves.clone();
        if let Some(p) = &self.product {
            v.extend([p.a.clone(), p.b.clone()]);
        }
        v
    }

    /// The index of the first node's value in [`Dag::eval`]'s result.
    pub fn first_node(&self) -> usize {
        self.leaves.len() + self.product.is_some() as usize
    }

    /// Every value of the DAG on `inputs` (as [`Dag::inputs`]): the leaves first, the product,
    /// then one per node.
    pub fn eval(&self, inputs: &[Tensor]) -> vkgrad::Result<Vec<Tensor>> {
        let nl = self.leaves.len();
        let mut vals = inputs[..nl].to_vec();
        if let Some(p) = &self.product {
            vals.push(Tensor::matmul_t(&inputs[nl], &inputs[nl + 1], p.ta, p.tb)?);
        }
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
            let product = if out.len() >= 2 {
                prop::option::of(product(out.clone())).boxed()
            } else {
                Just(None).boxed()
            };
            // The product is drawn last, so the seeds kept in the regression files still give
            // the DAGs (leaves, nodes, probes) they were saved for.
            (
                prop::collection::vec(side(out.clone()).prop_flat_map(leaf), 1..=3),
                prop::collection::vec(node(), 1..=30),
                0usize..64,
                any::<bool>(),
                0..=REDUCE_OPS.len(),
                0usize..4,
                product,
            )
        })
        .prop_map(
            |(leaves, nodes, probe_at, probe_first, reduce_op, reduce_axis, product)| Dag {
                leaves,
                product,
                nodes,
                probe_at,
                probe_first,
                reduce_op,
                reduce_axis,
            },
        )
}
