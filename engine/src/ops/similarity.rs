//! `similarity_lse`: the row statistics every softmax-contrastive loss needs, without the M×P
//! similarity matrix. For queries Q [M, D], keys K [P, D] and s_ij = q_i·k_j / τ it returns
//! [M, 4] per row i:
//!   0: lse_out = log Σ_{j allowed} exp(s_ij)   (+ exp(e_i) with an external positive e)
//!   1: pos_sum = Σ_{j ∈ pos(i)} s_ij            (+ e_i)
//!   2: pos_count = |pos(i)|                     (+ 1)
//!   3: lse_in  = log Σ_{j ∈ pos(i)} exp(s_ij)   (with e_i among them)
//! where "allowed" is every key but j = i when self-pairs are excluded (NT-Xent, SupCon), and
//! the positives are the allowed keys with index `index[i]` or with the query's label. A row
//! with no allowed key has lse_out = -inf; a row with no positive has lse_in = -inf.
//!
//! Memory: rows are processed in tiles of B rows with B·P bounded (`TILE_ELEMENTS`), so the
//! working set is O((M + P)·D + B·P), not O(M·P); the backward pass recomputes each tile's
//! similarities (as FlashAttention and Inf-CL do) and returns dQ, dK (and de) in the same
//! memory. Each tile is a handful of engine kernels (matmul, masks, reductions); a single fused
//! kernel per tile is the next step (docs/performance.md).

use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

/// Elements of one [B, P] tile: 2^21 f32 = 8 MiB per temporary.
pub const TILE_ELEMENTS: usize = 1 << 21;

/// Which keys are a query's positives.
#[derive(Debug, Clone)]
pub enum Positives {
    /// None among the keys (only an external positive, or none at all).
    None,
    /// One key per query: `index[i]` (values are key indices).
    Index(Vec<u32>),
    /// Every allowed key whose label equals the query's: (query labels [M], key labels [P]).
    Labels(Vec<u32>, Vec<u32>),
}

/// The options of `similarity_lse`.
#[derive(Debug, Clone)]
pub struct SimilarityLse {
    pub temperature: f32,
    /// Leave out key j = i for query i (queries and keys are the same rows, NT-Xent/SupCon).
    pub exclude_self: bool,
    pub positives: Positives,
    /// Query rows per tile; `None`: as many as keep a tile within `TILE_ELEMENTS` (tests set
    /// small tiles to cross tile edges).
    pub tile_rows: Option<usize>,
}

const OP: &str = "similarity_lse";

/// Positives as small f32 vectors the tile masks are built from: (query keys, key keys),
/// compared for equality. Labels are renumbered densely first so f32 compares them exactly.
fn keys(p: &Positives, m: usize, n_keys: usize) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
    match p {
        Positives::None => Ok(None),
        Positives::Index(idx) => {
            if idx.len() != m {
                return Err(Error::op(
                    OP,
                    format!("{} positive indices for {m} queries", idx.len()),
                ));
            }
            if let Some(&bad) = idx.iter().find(|&&j| j as usize >= n_keys) {
                return Err(Error::op(
                    OP,
                    format!("positive index {bad} is out of range for {n_keys} keys"),
                ));
            }
            if n_keys > 1 << 24 {
                return Err(Error::op(
                    OP,
                    format!("{n_keys} keys: index positives take at most 2^24"),
                ));
            }
            Ok(Some((
                idx.iter().map(|&j| j as f32).collect(),
                (0..n_keys).map(|j| j as f32).collect(),
            )))
        }
        Positives::Labels(q, k) => {
            if q.len() != m || k.len() != n_keys {
                return Err(Error::op(
                    OP,
                    format!(
                        "{} query labels and {} key labels for {m} queries and {n_keys} keys",
                        q.len(),
                        k.len()
                    ),
                ));
            }
            let mut dense: HashMap<u32, f32> = HashMap::new();
            let mut id = |l: u32| {
                let next = dense.len() as f32;
                *dense.entry(l).or_insert(next)
            };
            let kq: Vec<f32> = q.iter().map(|&l| id(l)).collect();
            let kk: Vec<f32> = k.iter().map(|&l| id(l)).collect();
            Ok(Some((kq, kk)))
        }
    }
}

/// One tile's similarities and masks, rows `r0 .. r0 + b`.
struct Tile {
    /// s = q kᵀ / τ with -inf where not allowed: [b, P].
    logits: Tensor,
    /// 1 where key j is a positive of query i (and allowed), else 0: [b, P] (None: no positives).
    pos: Option<Tensor>,
}

impl SimilarityLse {
    fn tile(
        &self,
        q: &Tensor,
        k: &Tensor,
        r0: usize,
        b: usize,
        keys: &Option<(Vec<f32>, Vec<f32>)>,
    ) -> Result<Tile> {
        let p = k.shape()[0];
        let qb = q.narrow(0, r0, b)?;
        let s = Tensor::matmul_t(&qb, k, false, true)?.mul_scalar(1.0 / self.temperature)?;
        let allowed = if self.exclude_self {
            let rows = Tensor::from_vec((r0..r0 + b).map(|i| i as f32).collect(), &[b, 1])?;
            let cols = Tensor::from_vec((0..p).map(|j| j as f32).collect(), &[1, p])?;
            Some(rows.eq(&cols)?.rsub_scalar(1.0)?)
        } else {
            None
        };
        let neg_inf = Tensor::full(&[], f32::NEG_INFINITY)?;
        let logits = match &allowed {
            Some(a) => Tensor::where_(a, &s, &neg_inf)?,
            None => s,
        };
        let pos = match keys {
            None => None,
            Some((kq, kk)) => {
                let rows = Tensor::from_vec(kq[r0..r0 + b].to_vec(), &[b, 1])?;
                let cols = Tensor::from_vec(kk.clone(), &[1, p])?;
                let same = rows.eq(&cols)?;
                Some(match &allowed {
                    Some(a) => same.mul(a)?,
                    None => same,
                })
            }
        };
        Ok(Tile { logits, pos })
    }
}

/// log Σ exp over the last axis of `x` [b, P] (with -inf entries) and of an extra column
/// `e` [b, 1]: (lse [b, 1], max used [b, 1]). Rows of only -inf give -inf, not NaN.
fn masked_lse(x: &Tensor, e: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
    let mut m = x.max_axis(-1, true)?;
    if let Some(e) = e {
        m = m.maximum(e)?;
    }
    // A row of only -inf has max -inf; shifting by a finite stand-in keeps exp at 0 there.
    let shift = m.maximum_scalar(-1e30)?;
    let mut sum = x.sub(&shift)?.exp()?.sum_axis(-1, true)?;
    if let Some(e) = e {
        sum = sum.add(&e.sub(&shift)?.exp()?)?;
    }
    Ok((sum.log()?.add(&shift)?, shift))
}

impl Tensor {
    /// The row statistics of `SimilarityLse` for queries `self` [M, D] against keys `k`
    /// [P, D], with an optional external positive logit per query `ext` [M] (MoCo's
    /// positive key is not among the queue's keys). Returns [M, 4]; see the module doc.
    pub fn similarity_lse(
        &self,
        k: &Tensor,
        ext: Option<&Tensor>,
        o: &SimilarityLse,
    ) -> Result<Tensor> {
        let (q, p) = (self, k);
        if q.rank() != 2 || p.rank() != 2 || q.shape()[1] != p.shape()[1] {
            return Err(Error::op(
                OP,
                format!(
                    "queries {:?} and keys {:?} must be [M, D] and [P, D]",
                    q.shape(),
                    p.shape()
                ),
            ));
        }
        let (m, n_keys) = (q.shape()[0], p.shape()[0]);
        if m == 0 || n_keys == 0 {
            return Err(Error::op(
                OP,
                format!("needs at least one query and one key, got {m} and {n_keys}"),
            ));
        }
        if let Some(e) = ext {
            if e.shape() != [m] {
                return Err(Error::op(
                    OP,
                    format!(
                        "external positives {:?} for {m} queries; expected [{m}]",
                        e.shape()
                    ),
                ));
            }
        }
        if !(o.temperature.is_finite() && o.temperature > 0.0) {
            return Err(Error::op(
                OP,
                format!(
                    "temperature must be positive and finite, got {}",
                    o.temperature
                ),
            ));
        }
        if o.exclude_self && n_keys < m {
            return Err(Error::op(
                OP,
                format!("exclude_self pairs query i with key i: {m} queries but {n_keys} keys"),
            ));
        }
        let keys = Arc::new(keys(&o.positives, m, n_keys)?);
        let rows = o.tile_rows.unwrap_or(TILE_ELEMENTS / n_keys).clamp(1, m);
        let out = no_grad(|| -> Result<Tensor> {
            let mut parts = Vec::new();
            for r0 in (0..m).step_by(rows) {
                let b = rows.min(m - r0);
                let t = o.tile(q, p, r0, b, &keys)?;
                let e = ext
                    .map(|e| e.narrow(0, r0, b)?.reshape(&[b, 1]))
                    .transpose()?;
                let (lse_out, _) = masked_lse(&t.logits, e.as_ref())?;
                let zero = Tensor::zeros(&[])?;
                let neg_inf = Tensor::full(&[], f32::NEG_INFINITY)?;
                let (mut sum, mut count, lse_in) = match &t.pos {
                    Some(pm) => {
                        let inside = Tensor::where_(pm, &t.logits, &neg_inf)?;
                        let picked = Tensor::where_(pm, &t.logits, &zero)?;
                        (
                            picked.sum_axis(-1, true)?,
                            pm.sum_axis(-1, true)?,
                            masked_lse(&inside, e.as_ref())?.0,
                        )
                    }
                    None => {
                        let none = Tensor::full(&[b, 1], f32::NEG_INFINITY)?;
                        let lse_in = match &e {
                            Some(e) => e.clone(),
                            None => none,
                        };
                        (Tensor::zeros(&[b, 1])?, Tensor::zeros(&[b, 1])?, lse_in)
                    }
                };
                if let Some(e) = &e {
                    sum = sum.add(e)?;
                    count = count.add_scalar(1.0)?;
                }
                parts.push(Tensor::concat(&[&lse_out, &sum, &count, &lse_in], 1)?);
            }
            let refs: Vec<&Tensor> = parts.iter().collect();
            match refs.len() {
                1 => Ok(parts[0].clone()),
                _ => Tensor::concat(&refs, 0),
            }
        })?;
        let stats = out.clone();
        let (q0, k0, e0, o0) = (q.clone(), p.clone(), ext.cloned(), o.clone());
        let mut inputs = vec![q, p];
        inputs.extend(ext);
        Ok(Tensor::from_op_masked(
            out.0.shape.clone(),
            out.0.storage.clone(),
            OP,
            &inputs,
            move |g, needs| o0.backward(&q0, &k0, e0.as_ref(), &stats, &keys, rows, g, needs),
        ))
    }
}

impl SimilarityLse {
    /// dQ, dK (and de) for the upstream gradient `g` [M, 4] (column 2, the count, has none),
    /// recomputing each tile's similarities; only those `needs` asks for (MoCo's queue of
    /// keys needs none).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        q: &Tensor,
        k: &Tensor,
        ext: Option<&Tensor>,
        stats: &Tensor,
        keys: &Option<(Vec<f32>, Vec<f32>)>,
        rows: usize,
        g: &Tensor,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor>>> {
        let m = q.shape()[0];
        let inv_t = 1.0 / self.temperature;
        let mut dq_parts = Vec::new();
        let mut de_parts = Vec::new();
        let mut dk = Tensor::zeros(k.shape())?;
        for r0 in (0..m).step_by(rows.max(1)) {
            let b = rows.min(m - r0);
            let t = self.tile(q, k, r0, b, keys)?;
            let st = stats.narrow(0, r0, b)?;
            let gt = g.narrow(0, r0, b)?;
            let col = |t: &Tensor, c: usize| t.narrow(1, c, 1);
            let (lse_out, lse_in) = (col(&st, 0)?, col(&st, 3)?);
            let (g_out, g_sum, g_in) = (col(&gt, 0)?, col(&gt, 1)?, col(&gt, 3)?);
            // Softmax weights from the saved log-sum-exp; a row whose lse is -inf has no
            // weight (exp(-inf - stand-in) = 0), never 0/0.
            let weights = |x: &Tensor, lse: &Tensor| x.sub(&lse.maximum_scalar(-1e30)?)?.exp();
            let mut ds = weights(&t.logits, &lse_out)?.mul(&g_out)?;
            if let Some(pm) = &t.pos {
                let neg_inf = Tensor::full(&[], f32::NEG_INFINITY)?;
                let inside = Tensor::where_(pm, &t.logits, &neg_inf)?;
                ds = ds
                    .add(&pm.mul(&g_sum)?)?
                    .add(&weights(&inside, &lse_in)?.mul(&g_in)?)?;
            }
            let ds = ds.mul_scalar(inv_t)?;
            if needs[0] {
                dq_parts.push(Tensor::matmul_t(&ds, k, false, false)?);
            }
            if needs[1] {
                let qb = q.narrow(0, r0, b)?;
                dk = dk.add(&Tensor::matmul_t(&ds, &qb, true, false)?)?;
            }
            if let (Some(e), true) = (ext, needs.get(2) == Some(&true)) {
                let eb = e.narrow(0, r0, b)?.reshape(&[b, 1])?;
                let w_out = weights(&eb, &lse_out)?;
                let w_in = weights(&eb, &lse_in)?;
                let de = w_out.mul(&g_out)?.add(&g_sum)?.add(&w_in.mul(&g_in)?)?;
                de_parts.push(de.reshape(&[b])?);
            }
        }
        let join = |parts: &[Tensor], shape: &[usize]| -> Result<Tensor> {
            let refs: Vec<&Tensor> = parts.iter().collect();
            match refs.len() {
                0 => Tensor::zeros(shape),
                1 => Ok(parts[0].clone()),
                _ => Tensor::concat(&refs, 0),
            }
        };
        let mut grads = vec![
            needs[0].then(|| join(&dq_parts, q.shape())).transpose()?,
            needs[1].then_some(dk),
        ];
        if let Some(e) = ext {
            grads.push(needs[2].then(|| join(&de_parts, e.shape())).transpose()?);
        }
        Ok(grads)
    }
}
