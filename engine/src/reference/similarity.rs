//! `similarity_lse` in f64, written from its definition with the whole M×P matrix (the engine
//! op tiles and recomputes; this does neither), and its vector-Jacobian product derived by
//! hand: with w_out = softmax over the allowed keys (and e), w_in = softmax over the positives
//! (and e), and upstream (g0, g1, g3) for (lse_out, pos_sum, lse_in):
//!   ∂/∂s_ij = g0 w_out_ij + g1 [j ∈ pos(i)] + g3 w_in_ij,   dq_i = Σ_j ∂/∂s_ij k_j / τ,
//!   dk_j = Σ_i ∂/∂s_ij q_i / τ,   de_i = g0 w_out_ie + g1 + g3 w_in_ie.

use super::RefTensor;

/// The reference's view of the options: τ, self exclusion, and positives as key sets.
pub struct SimSpec<'a> {
    pub temperature: f64,
    pub exclude_self: bool,
    /// `Some(index)`: key index[i] is query i's positive.
    pub index: Option<&'a [u32]>,
    /// `Some((query labels, key labels))`: keys with the query's label are its positives.
    pub labels: Option<(&'a [u32], &'a [u32])>,
}

impl SimSpec<'_> {
    fn allowed(&self, i: usize, j: usize) -> bool {
        !(self.exclude_self && i == j)
    }
    fn positive(&self, i: usize, j: usize) -> bool {
        self.allowed(i, j)
            && match (self.index, self.labels) {
                (Some(idx), _) => idx[i] as usize == j,
                (_, Some((lq, lk))) => lq[i] == lk[j],
                _ => false,
            }
    }
}

fn sims(q: &RefTensor, k: &RefTensor, t: f64) -> Vec<Vec<f64>> {
    let (m, p, d) = (q.shape[0], k.shape[0], q.shape[1]);
    (0..m)
        .map(|i| {
            (0..p)
                .map(|j| {
                    (0..d)
                        .map(|c| q.data[i * d + c] * k.data[j * d + c])
                        .sum::<f64>()
                        / t
                })
                .collect()
        })
        .collect()
}

/// log Σ exp of `xs` (max-shifted); -inf for none.
fn lse(xs: &[f64]) -> f64 {
    let m = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// [M, 4]: lse_out, pos_sum, pos_count, lse_in per query.
pub fn similarity_lse(q: &RefTensor, k: &RefTensor, e: Option<&[f64]>, s: &SimSpec) -> RefTensor {
    let (m, p) = (q.shape[0], k.shape[0]);
    let sim = sims(q, k, s.temperature);
    let mut out = Vec::with_capacity(m * 4);
    for i in 0..m {
        let mut all: Vec<f64> = (0..p)
            .filter(|&j| s.allowed(i, j))
            .map(|j| sim[i][j])
            .collect();
        let mut pos: Vec<f64> = (0..p)
            .filter(|&j| s.positive(i, j))
            .map(|j| sim[i][j])
            .collect();
        if let Some(e) = e {
            all.push(e[i]);
            pos.push(e[i]);
        }
        out.extend([lse(&all), pos.iter().sum(), pos.len() as f64, lse(&pos)]);
    }
    RefTensor::new(&[m, 4], out)
}

/// (dq, dk, de) for upstream `g` [M, 4] (column 2 is a count: no gradient).
pub fn similarity_lse_vjp(
    q: &RefTensor,
    k: &RefTensor,
    e: Option<&[f64]>,
    s: &SimSpec,
    g: &RefTensor,
) -> (RefTensor, RefTensor, Vec<f64>) {
    let (m, d) = (q.shape[0], q.shape[1]);
    let t = s.temperature;
    let sim = sims(q, k, t);
    let stats = similarity_lse(q, k, e, s);
    let (mut dq, mut dk) = (RefTensor::zeros(&q.shape), RefTensor::zeros(&k.shape));
    let mut de = vec![0.0; if e.is_some() { m } else { 0 }];
    for i in 0..m {
        let (lse_out, lse_in) = (stats.data[i * 4], stats.data[i * 4 + 3]);
        let (g0, g1, g3) = (g.data[i * 4], g.data[i * 4 + 1], g.data[i * 4 + 3]);
        let w = |x: f64, l: f64| {
            if l == f64::NEG_INFINITY {
                0.0
            } else {
                (x - l).exp()
            }
        };
        for (j, &sij) in sim[i].iter().enumerate() {
            let mut dsij = 0.0;
            if s.allowed(i, j) {
                dsij += g0 * w(sij, lse_out);
            }
            if s.positive(i, j) {
                dsij += g1 + g3 * w(sij, lse_in);
            }
            for c in 0..d {
                dq.data[i * d + c] += dsij * k.data[j * d + c] / t;
                dk.data[j * d + c] += dsij * q.data[i * d + c] / t;
            }
        }
        if let Some(e) = e {
            de[i] = g0 * w(e[i], lse_out) + g1 + g3 * w(e[i], lse_in);
        }
    }
    (dq, dk, de)
}
