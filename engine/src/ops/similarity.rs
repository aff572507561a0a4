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
//! memory. A tile is two kernels forward — the matmul kernel's dot products, then one fused
//! pass (`shaders/similarity.comp`) that applies τ, the exclusion and the positives and keeps
//! each row's maxima and sums of exponentials without writing anything but the four numbers —
//! and four backward: the dot products again, one fused pass that turns them into dL/ds, and
//! the two matmuls of dQ and dK.

use super::alloc_f32;
use crate::device::push::SimilarityPush;
use crate::device::{grid, Bind, Context, Kernel, Storage};
use crate::error::{Error, Result};
use crate::grad_mode::no_grad;
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
    /// Every allowed key whose code equals the query's, with the codes on the device: (query
    /// codes [M], key codes [P]), f32 values compared for equality (labels below 2^24, or the
    /// positive index per query against 0..P). Nothing is read back, so a step recorded for
    /// replay can take its positives from its inputs; the host forms above are validated.
    Codes(Tensor, Tensor),
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

/// The codes the tile masks are built from: (query codes [M], key codes [P]), compared for
/// equality. Host labels are renumbered densely first so f32 compares them exactly.
fn codes(p: &Positives, m: usize, n_keys: usize) -> Result<Option<(Tensor, Tensor)>> {
    if let Positives::Codes(q, k) = p {
        if q.numel() != m || k.numel() != n_keys {
            return Err(Error::op(
                OP,
                format!(
                    "query codes {:?} and key codes {:?} for {m} queries and {n_keys} keys",
                    q.shape(),
                    k.shape()
                ),
            ));
        }
        return Ok(Some((
            q.detach().reshape(&[m])?,
            k.detach().reshape(&[n_keys])?,
        )));
    }
    keys(p, m, n_keys)?
        .map(|(kq, kk)| -> Result<_> {
            Ok((
                Tensor::from_vec(kq, &[m])?,
                Tensor::from_vec(kk, &[n_keys])?,
            ))
        })
        .transpose()
}

/// Host positives as small f32 vectors: (query keys, key keys).
fn keys(p: &Positives, m: usize, n_keys: usize) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
    match p {
        Positives::None | Positives::Codes(..) => Ok(None),
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

/// The fused tile kernel (`shaders/similarity.comp`): its mode and what it is bound to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Statistics = 0,
    Gradient = 1,
}

/// What every tile of one call shares: the keys, the codes the positives are read from, the
/// external logits and the options as the kernel takes them.
struct Tiles {
    q: Tensor,
    k: Tensor,
    /// (query codes [M], key codes [P]); `None`: no positives among the keys.
    codes: Option<(Tensor, Tensor)>,
    ext: Option<Tensor>,
    o: SimilarityLse,
    /// Query rows per tile.
    rows: usize,
}

impl Tiles {
    /// The raw dot products of query rows `r0 .. r0 + b` with every key: [b, P].
    fn dots(&self, r0: usize, b: usize) -> Result<Tensor> {
        Tensor::matmul_t(&self.q.narrow(0, r0, b)?, &self.k, false, true)
    }

    /// One dispatch of the fused kernel over the tile `d` of rows `r0..`, writing `out`.
    fn run(
        &self,
        mode: Mode,
        d: &Tensor,
        r0: usize,
        saved: Option<(&Tensor, &Tensor)>,
        out: &Arc<Storage>,
    ) -> Result<()> {
        let (b, n) = (d.shape()[0], d.shape()[1]);
        let ctx = Tensor::ctx()?;
        // Unused bindings are bound to the tile: the kernel never reads them (flags below).
        let (qc, kc) = match &self.codes {
            Some((qc, kc)) => (qc.storage()?, kc.storage()?),
            None => (d.storage()?, d.storage()?),
        };
        let ext = match &self.ext {
            Some(e) => e.storage()?,
            None => d.storage()?,
        };
        let (stats, g) = match saved {
            Some((s, g)) => (s.storage()?, g.storage()?),
            None => (d.storage()?, d.storage()?),
        };
        let group = mode == Mode::Statistics && grouped(ctx, n);
        let groups = match (mode, group) {
            (Mode::Gradient, _) => grid((b * n) as u64, 64),
            (_, true) => {
                ctx.check_loop(OP, 2 * n.div_ceil(64) + 16, || format!("{n} keys"))?;
                grid(b as u64, 1)
            }
            (_, false) => grid(b as u64, 64),
        };
        ctx.dispatch(
            Kernel::Similarity,
            &[mode as u32, group as u32],
            &[
                Bind::texels(d.storage()?),
                Bind::texels(qc),
                Bind::texels(kc),
                Bind::texels(ext),
                Bind::texels(stats),
                Bind::texels(g),
                Bind::write(out),
            ],
            &SimilarityPush {
                rows: b as u32,
                n: n as u32,
                r0: r0 as u32,
                inv_t: 1.0 / self.o.temperature,
                exclude_self: self.o.exclude_self as u32,
                positives: self.codes.is_some() as u32,
                ext: self.ext.is_some() as u32,
            },
            groups,
        )
    }
}

/// The statistics variant for rows of `n` keys — the one place it is chosen: a 64-lane
/// workgroup per row on devices with workgroup kernels, and wherever one invocation's two
/// passes of n iterations would pass the driver's loop budget; one invocation per row
/// otherwise (CPU drivers).
fn grouped(ctx: &Context, n: usize) -> bool {
    ctx.caps.workgroup_kernels || ctx.check_loop(OP, 2 * n + 4, String::new).is_err()
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
        let codes = codes(&o.positives, m, n_keys)?;
        let tiles = Tiles {
            q: q.detach(),
            k: p.detach(),
            codes,
            ext: ext.map(Tensor::detach),
            o: o.clone(),
            rows: o.tile_rows.unwrap_or(TILE_ELEMENTS / n_keys).clamp(1, m),
        };
        let out = alloc_f32(&[m, 4])?;
        no_grad(|| -> Result<()> {
            for r0 in (0..m).step_by(tiles.rows) {
                let b = tiles.rows.min(m - r0);
                let d = tiles.dots(r0, b)?;
                tiles.run(Mode::Statistics, &d, r0, None, &out)?;
            }
            Ok(())
        })?;
        let stats = Tensor::leaf([m, 4].as_slice().into(), out.clone());
        let mut inputs = vec![q, p];
        inputs.extend(ext);
        Ok(Tensor::from_op_masked(
            stats.0.shape.clone(),
            out,
            OP,
            &inputs,
            move |g, needs| tiles.backward(&stats, g, needs),
        ))
    }
}

impl Tiles {
    /// dQ, dK (and de) for the upstream gradient `g` [M, 4] (column 2, the count, has none),
    /// recomputing each tile's dot products; only those `needs` asks for (MoCo's queue of
    /// keys needs none).
    fn backward(&self, stats: &Tensor, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (m, n) = (self.q.shape()[0], self.k.shape()[0]);
        let mut dq_parts = Vec::new();
        let mut dk: Option<Tensor> = None;
        if needs[0] || needs[1] {
            for r0 in (0..m).step_by(self.rows) {
                let b = self.rows.min(m - r0);
                let d = self.dots(r0, b)?;
                let ds = alloc_f32(&[b, n])?;
                self.run(Mode::Gradient, &d, r0, Some((stats, g)), &ds)?;
                let ds = Tensor::leaf([b, n].as_slice().into(), ds);
                if needs[0] {
                    dq_parts.push(Tensor::matmul_t(&ds, &self.k, false, false)?);
                }
                if needs[1] {
                    let qb = self.q.narrow(0, r0, b)?;
                    let part = Tensor::matmul_t(&ds, &qb, true, false)?;
                    dk = Some(match dk {
                        None => part,
                        Some(acc) => acc.add(&part)?,
                    });
                }
            }
        }
        let dq = match dq_parts.len() {
            0 => None,
            1 => dq_parts.pop(),
            _ => Some(Tensor::concat(&dq_parts.iter().collect::<Vec<_>>(), 0)?),
        };
        let mut grads = vec![dq, dk];
        if let Some(e) = &self.ext {
            grads.push(
                needs[2]
                    .then(|| self.external_grad(e, stats, g))
                    .transpose()?,
            );
        }
        Ok(grads)
    }

    /// de for the external positive logits: it is one more member of both log-sum-exps and of
    /// the positive sum. A row whose lse is -inf has weight 0 there (a finite stand-in shift).
    fn external_grad(&self, e: &Tensor, stats: &Tensor, g: &Tensor) -> Result<Tensor> {
        let m = e.shape()[0];
        let col = |t: &Tensor, c: usize| t.narrow(1, c, 1);
        let e = e.reshape(&[m, 1])?;
        let weight = |c: usize| e.sub(&col(stats, c)?.maximum_scalar(-1e30)?)?.exp();
        weight(0)?
            .mul(&col(g, 0)?)?
            .add(&col(g, 1)?)?
            .add(&weight(3)?.mul(&col(g, 3)?)?)?
            .reshape(&[m])
    }
}
