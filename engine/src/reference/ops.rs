//! The reference ops: forward in f64 and the vector-Jacobian product (VJP) of each, written
//! from the mathematical definition (explicit partial derivatives and Jacobians), not from the
//! GPU path's compositions.

// Index loops here mirror the subscripts of the formulas, which is the point of a reference.
#![allow(clippy::needless_range_loop)]

use super::{ravel, unravel, RefTensor};

// ---------------------------------------------------------------- elementwise, one input

/// Elementwise functions of one tensor; `f64` fields are the scalar operand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Abs,
    Relu,
    Sigmoid,
    Tanh,
    Sin,
    Cos,
    Powf(f64),
    AddS(f64),
    SubS(f64),
    MulS(f64),
    DivS(f64),
    RsubS(f64),
    RdivS(f64),
    MaxS(f64),
    MinS(f64),
    GtS(f64),
    GeS(f64),
    EqS(f64),
}

impl Unary {
    pub fn apply(self, x: f64) -> f64 {
        use Unary::*;
        match self {
            Neg => -x,
            Exp => x.exp(),
            Log => x.ln(),
            Sqrt => x.sqrt(),
            Rsqrt => 1.0 / x.sqrt(),
            Abs => x.abs(),
            Relu => {
                if x > 0.0 {
                    x
                } else {
                    0.0
                }
            }
            Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Tanh => x.tanh(),
            Sin => x.sin(),
            Cos => x.cos(),
            Powf(p) => x.powf(p),
            AddS(s) => x + s,
            SubS(s) => x - s,
            MulS(s) => x * s,
            DivS(s) => x / s,
            RsubS(s) => s - x,
            RdivS(s) => s / x,
            MaxS(s) => {
                if x >= s {
                    x
                } else {
                    s
                }
            }
            MinS(s) => {
                if x <= s {
                    x
                } else {
                    s
                }
            }
            GtS(s) => (x > s) as u8 as f64,
            GeS(s) => (x >= s) as u8 as f64,
            EqS(s) => (x == s) as u8 as f64,
        }
    }

    /// f'(x); `None` for comparisons, which have no gradient.
    pub fn derivative(self, x: f64) -> Option<f64> {
        use Unary::*;
        Some(match self {
            Neg => -1.0,
            Exp => x.exp(),
            Log => 1.0 / x,
            Sqrt => 0.5 / x.sqrt(),
            Rsqrt => -0.5 * x.powf(-1.5),
            Abs => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Sigmoid => {
                let s = 1.0 / (1.0 + (-x).exp());
                s * (1.0 - s)
            }
            Tanh => 1.0 - x.tanh().powi(2),
            Sin => x.cos(),
            Cos => -x.sin(),
            Powf(p) => {
                if p == 0.0 {
                    0.0
                } else {
                    p * x.powf(p - 1.0)
                }
            }
            AddS(_) | SubS(_) => 1.0,
            MulS(s) => s,
            DivS(s) => 1.0 / s,
            RsubS(_) => -1.0,
            RdivS(s) => -s / (x * x),
            MaxS(s) => (x >= s) as u8 as f64,
            MinS(s) => (x <= s) as u8 as f64,
            GtS(_) | GeS(_) | EqS(_) => return None,
        })
    }
}

pub fn unary(op: Unary, x: &RefTensor) -> RefTensor {
    RefTensor::new(&x.shape, x.data.iter().map(|&v| op.apply(v)).collect())
}

pub fn unary_vjp(op: Unary, x: &RefTensor, g: &RefTensor) -> RefTensor {
    RefTensor::new(
        &x.shape,
        x.data
            .iter()
            .zip(&g.data)
            .map(|(&v, &gi)| gi * op.derivative(v).unwrap_or(0.0))
            .collect(),
    )
}

// ---------------------------------------------------------------- elementwise, two inputs

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
    Eq,
    Gt,
    Ge,
}

impl Binary {
    pub fn apply(self, a: f64, b: f64) -> f64 {
        use Binary::*;
        match self {
            Add => a + b,
            Sub => a - b,
            Mul => a * b,
            Div => a / b,
            Maximum => {
                if a >= b {
                    a
                } else {
                    b
                }
            }
            Minimum => {
                if a <= b {
                    a
                } else {
                    b
                }
            }
            Eq => (a == b) as u8 as f64,
            Gt => (a > b) as u8 as f64,
            Ge => (a >= b) as u8 as f64,
        }
    }

    /// (df/da, df/db); ties of maximum/minimum split the gradient evenly (PyTorch).
    pub fn partials(self, a: f64, b: f64) -> (f64, f64) {
        use Binary::*;
        match self {
            Add => (1.0, 1.0),
            Sub => (1.0, -1.0),
            Mul => (b, a),
            Div => (1.0 / b, -a / (b * b)),
            Maximum => {
                if a > b {
                    (1.0, 0.0)
                } else if a < b {
                    (0.0, 1.0)
                } else {
                    (0.5, 0.5)
                }
            }
            Minimum => {
                if a < b {
                    (1.0, 0.0)
                } else if a > b {
                    (0.0, 1.0)
                } else {
                    (0.5, 0.5)
                }
            }
            Eq | Gt | Ge => (0.0, 0.0),
        }
    }
}

/// The broadcast shape of several shapes (NumPy rules); `None` if they do not broadcast.
pub fn broadcast_shapes(shapes: &[&[usize]]) -> Option<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1; rank];
    for s in shapes {
        for (k, &d) in s.iter().rev().enumerate() {
            let o = &mut out[rank - 1 - k];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return None;
            }
        }
    }
    Some(out)
}

/// Position in a tensor of shape `src` of the output multi-index `idx` it is broadcast to.
fn source_pos(idx: &[usize], src: &[usize]) -> usize {
    let lead = idx.len() - src.len();
    let own: Vec<usize> = src
        .iter()
        .enumerate()
        .map(|(d, &n)| if n == 1 { 0 } else { idx[lead + d] })
        .collect();
    ravel(&own, src)
}

pub fn binary(op: Binary, a: &RefTensor, b: &RefTensor) -> RefTensor {
    let shape =
        broadcast_shapes(&[&a.shape, &b.shape]).expect("reference binary: shapes do not broadcast");
    let n = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            let idx = unravel(i, &shape);
            op.apply(
                a.data[source_pos(&idx, &a.shape)],
                b.data[source_pos(&idx, &b.shape)],
            )
        })
        .collect();
    RefTensor::new(&shape, data)
}

pub fn binary_vjp(
    op: Binary,
    a: &RefTensor,
    b: &RefTensor,
    g: &RefTensor,
) -> (RefTensor, RefTensor) {
    let (mut ga, mut gb) = (RefTensor::zeros(&a.shape), RefTensor::zeros(&b.shape));
    for i in 0..g.len() {
        let idx = unravel(i, &g.shape);
        let (pa, pb) = (source_pos(&idx, &a.shape), source_pos(&idx, &b.shape));
        let (da, db) = op.partials(a.data[pa], b.data[pb]);
        ga.data[pa] += g.data[i] * da;
        gb.data[pb] += g.data[i] * db;
    }
    (ga, gb)
}

pub fn where_(m: &RefTensor, a: &RefTensor, b: &RefTensor) -> RefTensor {
    let shape = broadcast_shapes(&[&m.shape, &a.shape, &b.shape])
        .expect("reference where: shapes do not broadcast");
    let n = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            let idx = unravel(i, &shape);
            if m.data[source_pos(&idx, &m.shape)] != 0.0 {
                a.data[source_pos(&idx, &a.shape)]
            } else {
                b.data[source_pos(&idx, &b.shape)]
            }
        })
        .collect();
    RefTensor::new(&shape, data)
}

pub fn where_vjp(
    m: &RefTensor,
    a: &RefTensor,
    b: &RefTensor,
    g: &RefTensor,
) -> (RefTensor, RefTensor) {
    let (mut ga, mut gb) = (RefTensor::zeros(&a.shape), RefTensor::zeros(&b.shape));
    for i in 0..g.len() {
        let idx = unravel(i, &g.shape);
        if m.data[source_pos(&idx, &m.shape)] != 0.0 {
            ga.data[source_pos(&idx, &a.shape)] += g.data[i];
        } else {
            gb.data[source_pos(&idx, &b.shape)] += g.data[i];
        }
    }
    (ga, gb)
}

// ---------------------------------------------------------------- reductions

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    Sum,
    Mean,
    Max,
    Min,
}

/// Output multi-index (keepdim layout) that input index `idx` reduces into.
fn reduced_index(idx: &[usize], axis: Option<usize>) -> Vec<usize> {
    idx.iter()
        .enumerate()
        .map(|(d, &i)| if axis.is_none_or(|a| a == d) { 0 } else { i })
        .collect()
}

fn keep_shape(shape: &[usize], axis: Option<usize>) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .map(|(d, &s)| if axis.is_none_or(|a| a == d) { 1 } else { s })
        .collect()
}

fn final_shape(shape: &[usize], axis: Option<usize>, keepdim: bool) -> Vec<usize> {
    match (axis, keepdim) {
        (_, true) => keep_shape(shape, axis),
        (None, false) => vec![],
        (Some(a), false) => shape
            .iter()
            .enumerate()
            .filter(|(d, _)| *d != a)
            .map(|(_, &s)| s)
            .collect(),
    }
}

/// Reduces over `axis` (or all axes when `None`).
pub fn reduce(op: Reduce, x: &RefTensor, axis: Option<usize>, keepdim: bool) -> RefTensor {
    let keep = keep_shape(&x.shape, axis);
    let mut groups: Vec<Vec<f64>> = vec![Vec::new(); keep.iter().product()];
    for i in 0..x.len() {
        groups[ravel(&reduced_index(&x.index_of(i), axis), &keep)].push(x.data[i]);
    }
    let data = groups
        .iter()
        .map(|v| match op {
            Reduce::Sum => v.iter().sum(),
            Reduce::Mean => v.iter().sum::<f64>() / v.len() as f64,
            Reduce::Max => v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            Reduce::Min => v.iter().cloned().fold(f64::INFINITY, f64::min),
        })
        .collect();
    RefTensor::new(&final_shape(&x.shape, axis, keepdim), data)
}

/// Sum of |x| over each reduced group, in the output layout (the scale of a sum's rounding).
pub fn reduce_abs_scale(x: &RefTensor, axis: Option<usize>, keepdim: bool) -> RefTensor {
    let abs = RefTensor::new(&x.shape, x.data.iter().map(|v| v.abs()).collect());
    reduce(Reduce::Sum, &abs, axis, keepdim)
}

/// VJP of a reduction: sum/mean spread g evenly; max/min share g among the tied extremes.
pub fn reduce_vjp(op: Reduce, x: &RefTensor, axis: Option<usize>, g: &RefTensor) -> RefTensor {
    let keep = keep_shape(&x.shape, axis);
    let y = reduce(op, x, axis, true);
    let mut count = vec![0.0; y.len()];
    for i in 0..x.len() {
        let o = ravel(&reduced_index(&x.index_of(i), axis), &keep);
        count[o] += match op {
            Reduce::Sum | Reduce::Mean => 1.0,
            Reduce::Max | Reduce::Min => (x.data[i] == y.data[o]) as u8 as f64,
        };
    }
    let mut gx = RefTensor::zeros(&x.shape);
    for i in 0..x.len() {
        let o = ravel(&reduced_index(&x.index_of(i), axis), &keep);
        gx.data[i] = match op {
            Reduce::Sum => g.data[o],
            Reduce::Mean => g.data[o] / count[o],
            Reduce::Max | Reduce::Min => {
                if x.data[i] == y.data[o] {
                    g.data[o] / count[o]
                } else {
                    0.0
                }
            }
        };
    }
    gx
}

/// Index of the max (or min) along `axis`; the first one on ties.
pub fn arg_extreme(x: &RefTensor, axis: usize, keepdim: bool, max: bool) -> (Vec<usize>, Vec<u32>) {
    let keep = keep_shape(&x.shape, Some(axis));
    let mut best: Vec<Option<(f64, usize)>> = vec![None; keep.iter().product()];
    for i in 0..x.len() {
        let idx = x.index_of(i);
        let o = ravel(&reduced_index(&idx, Some(axis)), &keep);
        let v = x.data[i];
        let better = match best[o] {
            None => true,
            Some((b, _)) => {
                if max {
                    v > b
                } else {
                    v < b
                }
            }
        };
        if better {
            best[o] = Some((v, idx[axis]));
        }
    }
    (
        final_shape(&x.shape, Some(axis), keepdim),
        best.iter()
            .map(|b| b.map_or(0, |(_, j)| j as u32))
            .collect(),
    )
}

// ---------------------------------------------------------------- matmul

/// Element (r, c) of op(x) in matrix `batch`; a 2-D x is the same matrix for every batch.
fn mat_at(x: &RefTensor, batch: usize, r: usize, c: usize, t: bool) -> f64 {
    let k = x.shape.len();
    let (rows, cols) = (x.shape[k - 2], x.shape[k - 1]);
    let (i, j) = if t { (c, r) } else { (r, c) };
    let batch = if k == 2 { 0 } else { batch };
    x.data[batch * rows * cols + i * cols + j]
}

/// The batch dimensions of a product: the operands' (equal), or the batched one's when the
/// other is a single matrix.
fn matmul_lead<'a>(a: &'a RefTensor, b: &'a RefTensor) -> &'a [usize] {
    if a.shape.len() == 2 {
        &b.shape[..b.shape.len() - 2]
    } else {
        &a.shape[..a.shape.len() - 2]
    }
}

fn mat_dims(x: &RefTensor, t: bool) -> (usize, usize) {
    let k = x.shape.len();
    if t {
        (x.shape[k - 1], x.shape[k - 2])
    } else {
        (x.shape[k - 2], x.shape[k - 1])
    }
}

/// op(a) · op(b), batched over equal leading dimensions, or a single (2-D) matrix with each
/// matrix of a batched other. Returns (product, scale), where scale holds sum_k |a_ik b_kj|
/// for each output (the rounding scale of the dot product).
pub fn matmul(a: &RefTensor, b: &RefTensor, ta: bool, tb: bool) -> (RefTensor, RefTensor) {
    let (m, k) = mat_dims(a, ta);
    let (_, n) = mat_dims(b, tb);
    let lead = matmul_lead(a, b);
    let batch: usize = lead.iter().product();
    let mut shape = lead.to_vec();
    shape.extend([m, n]);
    let (mut c, mut s) = (RefTensor::zeros(&shape), RefTensor::zeros(&shape));
    for z in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let (mut acc, mut abs) = (0.0, 0.0);
                for l in 0..k {
                    let p = mat_at(a, z, i, l, ta) * mat_at(b, z, l, j, tb);
                    acc += p;
                    abs += p.abs();
                }
                c.data[(z * m + i) * n + j] = acc;
                s.data[(z * m + i) * n + j] = abs;
            }
        }
    }
    (c, s)
}

/// VJP of op(a) · op(b): d a_stored[p] = sum over outputs of g_ij * d c_ij / d a_stored[p].
pub fn matmul_vjp(
    a: &RefTensor,
    b: &RefTensor,
    ta: bool,
    tb: bool,
    g: &RefTensor,
) -> (RefTensor, RefTensor) {
    let (m, k) = mat_dims(a, ta);
    let (_, n) = mat_dims(b, tb);
    let batch: usize = matmul_lead(a, b).iter().product();
    let (mut ga, mut gb) = (RefTensor::zeros(&a.shape), RefTensor::zeros(&b.shape));
    // A single matrix's entries are shared by every batch: their gradients add up.
    let (single_a, single_b) = (a.shape.len() == 2, b.shape.len() == 2);
    let a_pos = |z: usize, i: usize, l: usize| {
        let z = if single_a { 0 } else { z };
        if ta {
            z * m * k + l * m + i
        } else {
            z * m * k + i * k + l
        }
    };
    let b_pos = |z: usize, l: usize, j: usize| {
        let z = if single_b { 0 } else { z };
        if tb {
            z * k * n + j * k + l
        } else {
            z * k * n + l * n + j
        }
    };
    for z in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let gij = g.data[(z * m + i) * n + j];
                for l in 0..k {
                    ga.data[a_pos(z, i, l)] += gij * b.data[b_pos(z, l, j)];
                    gb.data[b_pos(z, l, j)] += gij * a.data[a_pos(z, i, l)];
                }
            }
        }
    }
    (ga, gb)
}

// ---------------------------------------------------------------- movement

pub fn permute(x: &RefTensor, dims: &[usize]) -> RefTensor {
    let shape: Vec<usize> = dims.iter().map(|&d| x.shape[d]).collect();
    let mut out = RefTensor::zeros(&shape);
    for i in 0..out.len() {
        let oi = unravel(i, &shape);
        let mut src = vec![0; dims.len()];
        for (k, &d) in dims.iter().enumerate() {
            src[d] = oi[k];
        }
        out.data[i] = x.at(&src);
    }
    out
}

pub fn permute_vjp(dims: &[usize], g: &RefTensor) -> RefTensor {
    let mut inv = vec![0; dims.len()];
    for (k, &d) in dims.iter().enumerate() {
        inv[d] = k;
    }
    permute(g, &inv)
}

pub fn narrow(x: &RefTensor, axis: usize, start: usize, len: usize) -> RefTensor {
    let mut shape = x.shape.clone();
    shape[axis] = len;
    let mut out = RefTensor::zeros(&shape);
    for i in 0..out.len() {
        let mut idx = unravel(i, &shape);
        idx[axis] += start;
        out.data[i] = x.at(&idx);
    }
    out
}

pub fn narrow_vjp(x_shape: &[usize], axis: usize, start: usize, g: &RefTensor) -> RefTensor {
    let mut gx = RefTensor::zeros(x_shape);
    for i in 0..g.len() {
        let mut idx = unravel(i, &g.shape);
        idx[axis] += start;
        gx.data[ravel(&idx, x_shape)] = g.data[i];
    }
    gx
}

pub fn concat(xs: &[&RefTensor], axis: usize) -> RefTensor {
    let mut shape = xs[0].shape.clone();
    shape[axis] = xs.iter().map(|x| x.shape[axis]).sum();
    let mut out = RefTensor::zeros(&shape);
    let mut offset = 0;
    for x in xs {
        for i in 0..x.len() {
            let mut idx = x.index_of(i);
            idx[axis] += offset;
            out.data[ravel(&idx, &shape)] = x.data[i];
        }
        offset += x.shape[axis];
    }
    out
}

pub fn concat_vjp(shapes: &[Vec<usize>], axis: usize, g: &RefTensor) -> Vec<RefTensor> {
    let mut start = 0;
    shapes
        .iter()
        .map(|s| {
            let part = narrow(g, axis, start, s[axis]);
            start += s[axis];
            part
        })
        .collect()
}

pub fn expand(x: &RefTensor, shape: &[usize]) -> RefTensor {
    let n = shape.iter().product();
    RefTensor::new(
        shape,
        (0..n)
            .map(|i| x.data[source_pos(&unravel(i, shape), &x.shape)])
            .collect(),
    )
}

pub fn expand_vjp(x_shape: &[usize], g: &RefTensor) -> RefTensor {
    let mut gx = RefTensor::zeros(x_shape);
    for i in 0..g.len() {
        gx.data[source_pos(&g.index_of(i), x_shape)] += g.data[i];
    }
    gx
}

// ---------------------------------------------------------------- indexing

pub fn index_select(x: &RefTensor, axis: usize, idx: &[u32]) -> RefTensor {
    let mut shape = x.shape.clone();
    shape[axis] = idx.len();
    let mut out = RefTensor::zeros(&shape);
    for i in 0..out.len() {
        let mut p = unravel(i, &shape);
        p[axis] = idx[p[axis]] as usize;
        out.data[i] = x.at(&p);
    }
    out
}

pub fn index_select_vjp(x_shape: &[usize], axis: usize, idx: &[u32], g: &RefTensor) -> RefTensor {
    let mut gx = RefTensor::zeros(x_shape);
    for i in 0..g.len() {
        let mut p = g.index_of(i);
        p[axis] = idx[p[axis]] as usize;
        gx.data[ravel(&p, x_shape)] += g.data[i];
    }
    gx
}

/// out[p] = x[p with p[axis] replaced by idx[p]] (idx has the output's shape).
pub fn gather(x: &RefTensor, axis: usize, idx_shape: &[usize], idx: &[u32]) -> RefTensor {
    let mut out = RefTensor::zeros(idx_shape);
    for i in 0..out.len() {
        let mut p = unravel(i, idx_shape);
        p[axis] = idx[i] as usize;
        out.data[i] = x.at(&p);
    }
    out
}

pub fn gather_vjp(x_shape: &[usize], axis: usize, idx: &[u32], g: &RefTensor) -> RefTensor {
    let mut gx = RefTensor::zeros(x_shape);
    for i in 0..g.len() {
        let mut p = g.index_of(i);
        p[axis] = idx[i] as usize;
        gx.data[ravel(&p, x_shape)] += g.data[i];
    }
    gx
}

/// base with src[p] added at p with p[axis] replaced by idx[p].
pub fn scatter_add(base: &RefTensor, axis: usize, idx: &[u32], src: &RefTensor) -> RefTensor {
    let mut out = base.clone();
    for i in 0..src.len() {
        let mut p = src.index_of(i);
        p[axis] = idx[i] as usize;
        out.data[ravel(&p, &base.shape)] += src.data[i];
    }
    out
}

/// (d base, d src) of scatter_add.
pub fn scatter_add_vjp(
    axis: usize,
    idx: &[u32],
    src_shape: &[usize],
    g: &RefTensor,
) -> (RefTensor, RefTensor) {
    let mut gs = RefTensor::zeros(src_shape);
    for i in 0..gs.len() {
        let mut p = unravel(i, src_shape);
        p[axis] = idx[i] as usize;
        gs.data[i] = g.at(&p);
    }
    (g.clone(), gs)
}

// ---------------------------------------------------------------- row-wise (last axis)

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rowwise {
    Softmax,
    LogSoftmax,
    LogSumExp,
    L2Normalize(f64),
}

fn rows(x: &RefTensor) -> impl Iterator<Item = &[f64]> {
    let n = *x.shape.last().expect("row-wise op on a rank-0 tensor");
    x.data.chunks(n.max(1))
}

/// One row's output (a single value for logsumexp).
fn row_forward(op: Rowwise, r: &[f64]) -> Vec<f64> {
    match op {
        Rowwise::Softmax => {
            // e^(x_i - c) / sum e^(x_j - c) is the same number for any c; c = max keeps f64 finite.
            let c = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = r.iter().map(|v| (v - c).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        }
        Rowwise::LogSoftmax => {
            let lse = row_forward(Rowwise::LogSumExp, r)[0];
            r.iter().map(|v| v - lse).collect()
        }
        Rowwise::LogSumExp => {
            // Exact in f64 for the test ranges; shifted only to stay finite.
            let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            vec![m + r.iter().map(|v| (v - m).exp()).sum::<f64>().ln()]
        }
        Rowwise::L2Normalize(eps) => {
            let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            r.iter().map(|v| v / norm.max(eps)).collect()
        }
    }
}

/// Jacobian of one row: J[i][j] = d out_i / d x_j.
fn row_jacobian(op: Rowwise, r: &[f64]) -> Vec<Vec<f64>> {
    let n = r.len();
    let delta = |i: usize, j: usize| (i == j) as u8 as f64;
    match op {
        Rowwise::Softmax => {
            let y = row_forward(Rowwise::Softmax, r);
            (0..n)
                .map(|i| (0..n).map(|j| y[i] * (delta(i, j) - y[j])).collect())
                .collect()
        }
        Rowwise::LogSoftmax => {
            let y = row_forward(Rowwise::Softmax, r);
            (0..n)
                .map(|i| (0..n).map(|j| delta(i, j) - y[j]).collect())
                .collect()
        }
        Rowwise::LogSumExp => vec![row_forward(Rowwise::Softmax, r)],
        Rowwise::L2Normalize(eps) => {
            let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            if norm > eps {
                // (I - y yᵀ) / ||x|| with y = x / ||x||: the same value as I/||x|| - x xᵀ/||x||³,
                // without its cancellation when one entry dominates.
                let y: Vec<f64> = r.iter().map(|v| v / norm).collect();
                (0..n)
                    .map(|i| (0..n).map(|j| (delta(i, j) - y[i] * y[j]) / norm).collect())
                    .collect()
            } else {
                (0..n)
                    .map(|i| (0..n).map(|j| delta(i, j) / eps).collect())
                    .collect()
            }
        }
    }
}

pub fn rowwise(op: Rowwise, x: &RefTensor) -> RefTensor {
    let data: Vec<f64> = rows(x).flat_map(|r| row_forward(op, r)).collect();
    let shape = if op == Rowwise::LogSumExp {
        x.shape[..x.shape.len() - 1].to_vec()
    } else {
        x.shape.clone()
    };
    RefTensor::new(&shape, data)
}

pub fn rowwise_vjp(op: Rowwise, x: &RefTensor, g: &RefTensor) -> RefTensor {
    let n = *x.shape.last().expect("row-wise op on a rank-0 tensor");
    let outs = if op == Rowwise::LogSumExp { 1 } else { n };
    let mut gx = Vec::with_capacity(x.len());
    for (ri, r) in rows(x).enumerate() {
        let jac = row_jacobian(op, r);
        let gr = &g.data[ri * outs..(ri + 1) * outs];
        gx.extend((0..n).map(|j| (0..outs).map(|i| gr[i] * jac[i][j]).sum::<f64>()));
    }
    RefTensor::new(&x.shape, gx)
}
