//! Evaluation of an embedding: weighted kNN, a linear probe trained with the engine on frozen
//! features, a few-label probe, alignment / uniformity, and a 2-D PCA for plots. The same
//! functions score raw pixels, so a run reports what was learned over them.

use crate::error::Result;
use crate::tensor::{IntTensor, Tensor};
use crate::{no_grad, optim::AdamW};
use serde::Serialize;

/// Features of `n` samples, `d` wide, row-major, with labels.
pub struct Features<'a> {
    pub x: &'a [f32],
    pub y: &'a [u32],
    pub d: usize,
}

impl Features<'_> {
    fn n(&self) -> usize {
        self.y.len()
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Scores {
    /// The label-based scores; absent for data without labels.
    pub knn_accuracy: Option<f64>,
    pub linear_probe_accuracy: Option<f64>,
    pub few_label_accuracy: Option<f64>,
    pub alignment: Option<f64>,
    pub uniformity: Option<f64>,
}

fn unit_rows(x: &[f32], d: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    for row in out.chunks_mut(d.max(1)) {
        let n = row
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        row.iter_mut().for_each(|v| *v = (*v as f64 / n) as f32);
    }
    out
}

/// kNN with cosine similarity: the k most similar training samples vote for their label with
/// weight exp(sim / t) (the InstDisc / lightly benchmark rule). Similarities on the device.
pub fn knn(train: &Features, test: &Features, k: usize, t: f64) -> Result<f64> {
    let classes = train
        .y
        .iter()
        .chain(test.y)
        .max()
        .map_or(1, |&m| m as usize + 1);
    let f = Tensor::from_vec(unit_rows(train.x, train.d), &[train.n(), train.d])?;
    let q = unit_rows(test.x, test.d);
    let k = k.min(train.n());
    let mut correct = 0usize;
    let chunk = 256;
    for start in (0..test.n()).step_by(chunk) {
        let m = chunk.min(test.n() - start);
        let qt = Tensor::from_slice(&q[start * test.d..(start + m) * test.d], &[m, test.d])?;
        let sim = no_grad(|| Tensor::matmul_t(&qt, &f, false, true))?.to_vec()?;
        for (r, row) in sim.chunks(train.n()).enumerate() {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
            let mut votes = vec![0.0f64; classes];
            for &j in &order[..k] {
                votes[train.y[j] as usize] += (row[j] as f64 / t).exp();
            }
            let pred = (0..classes)
                .max_by(|&a, &b| votes[a].total_cmp(&votes[b]))
                .unwrap_or(0);
            correct += (pred as u32 == test.y[start + r]) as usize;
        }
    }
    Ok(correct as f64 / test.n().max(1) as f64)
}

/// Per-feature mean and standard deviation of the training features, applied to both sets.
fn standardise(train: &Features, others: &[&[f32]]) -> (Vec<f32>, Vec<Vec<f32>>) {
    let (n, d) = (train.n().max(1), train.d);
    let mut mean = vec![0.0f64; d];
    let mut var = vec![0.0f64; d];
    for row in train.x.chunks(d) {
        for (j, v) in row.iter().enumerate() {
            mean[j] += *v as f64 / n as f64;
        }
    }
    for row in train.x.chunks(d) {
        for (j, v) in row.iter().enumerate() {
            var[j] += (*v as f64 - mean[j]).powi(2) / n as f64;
        }
    }
    let apply = |x: &[f32]| -> Vec<f32> {
        x.chunks(d)
            .flat_map(|row| {
                row.iter()
                    .enumerate()
                    .map(|(j, v)| ((*v as f64 - mean[j]) / (var[j].sqrt() + 1e-6)) as f32)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    (apply(train.x), others.iter().map(|x| apply(x)).collect())
}

/// Softmax regression on frozen, standardised features: full-batch AdamW (lr 0.01, weight
/// decay 1e-4, `steps` steps) minimising cross-entropy, on the device; returns test accuracy.
pub fn linear_probe(train: &Features, test: &Features, steps: usize, seed: u64) -> Result<f64> {
    let classes = train
        .y
        .iter()
        .chain(test.y)
        .max()
        .map_or(1, |&m| m as usize + 1);
    let (xtr, rest) = standardise(train, &[test.x]);
    let d = train.d;
    let x = Tensor::from_vec(xtr, &[train.n(), d])?;
    let y = IntTensor::from_vec(train.y.to_vec(), &[train.n(), 1])?;
    let bound = 1.0 / (d as f32).sqrt();
    let mut rng = crate::Rng::new(seed);
    // The classes are padded to a multiple of 4 with columns masked to −∞, which take no
    // probability and get no gradient (their weights stay 0 under AdamW): the products then
    // run the vec4 matmul kernel on CPU drivers instead of the scalar one (10 classes: ~4×
    // slower). Each real logit, and so the probe, is the same bits as without the padding.
    let padded = classes.next_multiple_of(4);
    let w0 = rng.uniform(&[d, classes], -bound, bound)?;
    let mut w = if padded > classes {
        Tensor::concat(&[&w0, &Tensor::zeros(&[d, padded - classes])?], 1)?
    } else {
        w0
    }
    .requires_grad();
    let mut b = Tensor::zeros(&[padded])?.requires_grad();
    let mask: Vec<f32> = (0..padded)
        .map(|j| if j < classes { 0.0 } else { f32::NEG_INFINITY })
        .collect();
    let mask = Tensor::from_vec(mask, &[padded])?;
    let mut opt = AdamW::new(0.01, 1e-4);
    for _ in 0..steps {
        let logits = x.matmul(&w)?.add(&b)?.add(&mask)?;
        let loss = logits.log_softmax()?.gather(1, &y)?.mean_all()?.neg()?;
        loss.backward()?;
        opt.step(&mut [&mut w, &mut b])?;
    }
    let xt = Tensor::from_vec(rest[0].clone(), &[test.n(), d])?;
    let pred = no_grad(|| xt.matmul(&w)?.add(&b)?.add(&mask)?.argmax(1, false))?.to_vec()?;
    let correct = pred.iter().zip(test.y).filter(|(p, y)| p == y).count();
    Ok(correct as f64 / test.n().max(1) as f64)
}

/// The linear probe fitted on `per_class` labelled training samples of each class, averaged
/// over `draws` seeded draws.
pub fn few_label(
    train: &Features,
    test: &Features,
    per_class: usize,
    draws: usize,
    seed: u64,
) -> Result<f64> {
    let classes = train.y.iter().max().map_or(0, |&m| m as usize + 1);
    let mut total = 0.0;
    for draw in 0..draws {
        let order = super::permutation(train.n(), super::mix(seed, 0xFE, draw as u64));
        let mut taken = vec![0usize; classes];
        let mut pick = Vec::new();
        for i in order {
            let c = train.y[i] as usize;
            if taken[c] < per_class {
                taken[c] += 1;
                pick.push(i);
            }
        }
        let x: Vec<f32> = pick
            .iter()
            .flat_map(|&i| train.x[i * train.d..(i + 1) * train.d].iter().copied())
            .collect();
        let y: Vec<u32> = pick.iter().map(|&i| train.y[i]).collect();
        let sub = Features {
            x: &x,
            y: &y,
            d: train.d,
        };
        total += linear_probe(&sub, test, 300, seed ^ draw as u64)?;
    }
    Ok(total / draws.max(1) as f64)
}

/// Wang & Isola's alignment (mean ‖ẑ_a − ẑ_b‖² over positive pairs, α = 2) and uniformity
/// (log mean over pairs i < j of exp(−2 ‖ẑ_i − ẑ_j‖²), over the first views), in f64.
pub fn align_uniform(a: &[f32], b: &[f32], d: usize) -> (f64, f64) {
    let (za, zb) = (unit_rows(a, d), unit_rows(b, d));
    let n = za.len() / d.max(1);
    let dist2 = |p: &[f32], q: &[f32]| {
        p.iter()
            .zip(q)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum::<f64>()
    };
    let align = (0..n)
        .map(|i| dist2(&za[i * d..(i + 1) * d], &zb[i * d..(i + 1) * d]))
        .sum::<f64>()
        / n.max(1) as f64;
    let (mut acc, mut pairs) = (0.0, 0usize);
    for i in 0..n {
        for j in i + 1..n {
            acc += (-2.0 * dist2(&za[i * d..(i + 1) * d], &za[j * d..(j + 1) * d])).exp();
            pairs += 1;
        }
    }
    (align, (acc / pairs.max(1) as f64).ln())
}

/// Projection onto the two leading principal components (power iteration with deflation).
pub fn pca2(x: &[f32], d: usize) -> Vec<(f64, f64)> {
    let n = x.len() / d.max(1);
    let mut mean = vec![0.0; d];
    for row in x.chunks(d) {
        for (j, v) in row.iter().enumerate() {
            mean[j] += *v as f64 / n as f64;
        }
    }
    let mut cov = vec![0.0; d * d];
    for row in x.chunks(d) {
        let c: Vec<f64> = row.iter().zip(&mean).map(|(v, m)| *v as f64 - m).collect();
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] += c[i] * c[j];
            }
        }
    }
    let mut comps: Vec<Vec<f64>> = Vec::new();
    for k in 0..2 {
        let mut v: Vec<f64> = (0..d).map(|i| ((i + 1 + k) as f64 * 0.618).sin()).collect();
        for _ in 0..200 {
            let mut w: Vec<f64> = (0..d)
                .map(|i| (0..d).map(|j| cov[i * d + j] * v[j]).sum())
                .collect();
            for c in &comps {
                let dot: f64 = w.iter().zip(c).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(c).for_each(|(a, b)| *a -= dot * b);
            }
            let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-300);
            v = w.iter().map(|a| a / norm).collect();
        }
        comps.push(v);
    }
    x.chunks(d)
        .map(|row| {
            let c: Vec<f64> = row.iter().zip(&mean).map(|(v, m)| *v as f64 - m).collect();
            let p = |k: usize| c.iter().zip(&comps[k]).map(|(a, b)| a * b).sum::<f64>();
            (p(0), p(1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe as written before its classes were padded: the same draws, no padding.
    fn unpadded_predictions(
        train: &Features,
        test: &Features,
        steps: usize,
        seed: u64,
    ) -> Vec<u32> {
        let classes = 10;
        let (xtr, rest) = standardise(train, &[test.x]);
        let d = train.d;
        let x = Tensor::from_vec(xtr, &[train.n(), d]).unwrap();
        let y = IntTensor::from_vec(train.y.to_vec(), &[train.n(), 1]).unwrap();
        let bound = 1.0 / (d as f32).sqrt();
        let mut rng = crate::Rng::new(seed);
        let mut w = rng
            .uniform(&[d, classes], -bound, bound)
            .unwrap()
            .requires_grad();
        let mut b = Tensor::zeros(&[classes]).unwrap().requires_grad();
        let mut opt = AdamW::new(0.01, 1e-4);
        for _ in 0..steps {
            let logits = x.matmul(&w).unwrap().add(&b).unwrap();
            let loss = logits.log_softmax().unwrap().gather(1, &y).unwrap();
            loss.mean_all().unwrap().neg().unwrap().backward().unwrap();
            opt.step(&mut [&mut w, &mut b]).unwrap();
        }
        let xt = Tensor::from_vec(rest[0].clone(), &[test.n(), d]).unwrap();
        no_grad(|| xt.matmul(&w)?.add(&b)?.argmax(1, false))
            .unwrap()
            .to_vec()
            .unwrap()
    }

    /// Padding 10 classes to 12 masked ones changes nothing the probe computes: on
    /// overlapping, noisy classes (some predictions wrong) it scores exactly what the unpadded
    /// probe's predictions score (and fails when the mask is left out of training).
    #[test]
    fn the_padded_probe_predicts_as_the_unpadded_one() {
        let (n, d) = (64, 8);
        let mut rng = crate::Rng::new(7);
        let x: Vec<f32> = rng.normal(&[2 * n, d], 0.0, 1.0).unwrap().to_vec().unwrap();
        let y: Vec<u32> = (0..2 * n as u32).map(|i| (i * 7) % 10).collect();
        // Class-dependent shift on a few features: learnable, not separable.
        let x: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v + 0.6 * ((y[i / d] as usize + i % d) % 3) as f32)
            .collect();
        let train = Features {
            x: &x[..n * d],
            y: &y[..n],
            d,
        };
        let test = Features {
            x: &x[n * d..],
            y: &y[n..],
            d,
        };
        let want = unpadded_predictions(&train, &test, 40, 3);
        let correct = want.iter().zip(test.y).filter(|(p, y)| p == y).count();
        let acc = linear_probe(&train, &test, 40, 3).unwrap();
        assert_eq!(acc, correct as f64 / n as f64);
        assert!(
            correct > 6 && correct < n,
            "a probe that learns but errs: {correct}/{n}"
        );
    }
}
