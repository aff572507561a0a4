//! MoCo (He et al. 2020): InfoNCE of each query against its key and a FIFO queue of K past keys,
//!   l = -log( exp(q·k₊/τ) / (exp(q·k₊/τ) + sum_{j<K} exp(q·queue_j/τ)) ),  mean over queries,
//! with q, k, queue L2-normalised. Features [N, 1, D] are the queries (online encoder); the extra
//! input `keys` [N, 1, D] holds the keys (momentum encoder; no gradient flows into them). After
//! each device forward the N keys are enqueued, replacing the oldest. The queue is component state: `save_state` /
//! `load_state` carry it across checkpoints (one array [K + 1, D]: the queue rows, then a row
//! holding the write position). It starts as K seeded random unit vectors (as MoCo's code).
//! Defaults: D = 128, K = 4096, τ = 0.2 (MoCo v2), seed 0.

use std::sync::Mutex;
use vkgrad_plugin::{
    options, Array, Domain, Host, HostTensor, Loss, LossInputs, OptionDomain, OptionSpec, Output,
    Positives, RefInputs, SimilarityLse, Stream,
};

options! {
    pub struct MocoOptions {
        /// D, the dimension of the queries, keys and queue
        pub dim: usize = 128, "integer >= 1", domain = Domain::int(1, 8);
        /// K, the number of past keys kept as negatives
        pub queue_size: usize = 4096, "integer >= 1", domain = Domain::int(1, 64);
        /// τ
        pub temperature: f64 = 0.2, "float > 0", domain = Domain::log_float(0.05, 2.0);
        /// seed of the initial random queue
        pub seed: u64 = 0, "integer", domain = Domain::int(0, 1000);
        /// tiled: the queue as keys of similarity_lse, without the N×K matrix; matrix: the whole matrix; auto: tiled
        pub similarity: String = "auto".into(), "\"auto\" | \"tiled\" | \"matrix\"", domain = Domain::choice(["auto", "tiled", "matrix"]), exempt = "a path choice: tiled and matrix compute the same value";
    }
}

/// The queue: K rows of D values (unit vectors), and the next row to overwrite.
#[derive(Clone)]
struct Queue {
    d: usize,
    rows: Vec<f32>,
    next: usize,
}

pub struct Moco {
    path: crate::masked::Path,
    dim: usize,
    k: usize,
    tau: f64,
    seed: u64,
    queue: Mutex<Option<Queue>>,
}

fn unit(v: &[f64]) -> Vec<f64> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(crate::EPS);
    v.iter().map(|x| x / norm).collect()
}

impl Moco {
    /// The queue, made on first use; `d` is the features' dimension, which must be `dim`.
    fn queue(&self, d: usize) -> Result<Queue, String> {
        if d != self.dim {
            return Err(format!("moco: features have dimension {d}, the queue holds {}-dimensional keys (option dim)", self.dim));
        }
        let mut guard = self.queue.lock().map_err(|_| "moco: queue lock poisoned")?;
        let q = guard.get_or_insert_with(|| {
            let s = Stream { seed: self.seed };
            let rows = (0..self.k)
                .flat_map(|r| {
                    unit(
                        &(0..d)
                            .map(|c| s.normal_at(0, (r * d + c) as u32, 0.0, 1.0))
                            .collect::<Vec<_>>(),
                    )
                })
                .map(|x| x as f32)
                .collect();
            Queue { d, rows, next: 0 }
        });
        if q.d != d {
            return Err(format!(
                "moco: the queue holds {}-dimensional keys, got {d}",
                q.d
            ));
        }
        Ok(q.clone())
    }

    fn enqueue(&self, keys: &[f32], d: usize) -> Result<(), String> {
        let mut guard = self.queue.lock().map_err(|_| "moco: queue lock poisoned")?;
        let q = guard.as_mut().ok_or("moco: no queue")?;
        for key in keys.chunks(d) {
            let at = q.next * d;
            q.rows[at..at + d].copy_from_slice(key);
            q.next = (q.next + 1) % self.k;
        }
        Ok(())
    }
}

fn check(dims: &[usize]) -> Result<(usize, usize), String> {
    let (n, v, d) = crate::check_features("moco", dims, 1)?;
    if v != 1 {
        return Err(format!(
            "moco: queries must be [N, 1, D] (keys come as the extra input `keys`), got {dims:?}"
        ));
    }
    Ok((n, d))
}

impl Loss for Moco {
    type Options = MocoOptions;
    const NAME: &'static str = "moco";
    const DESCRIPTION: &'static str = "MoCo InfoNCE: queries (view 0) vs their keys (view 1) and a FIFO queue of past keys (state)";

    fn options() -> Vec<OptionSpec> {
        MocoOptions::specs()
    }

    fn option_domains() -> Vec<OptionDomain> {
        MocoOptions::domains()
    }

    fn new(o: MocoOptions) -> Result<Self, String> {
        crate::check_temperature("moco", "temperature", o.temperature)?;
        if o.queue_size == 0 || o.dim == 0 {
            return Err(format!(
                "moco: queue_size and dim must be >= 1, got {} and {}",
                o.queue_size, o.dim
            ));
        }
        let moco = Moco {
            path: crate::masked::Path::parse("moco", &o.similarity)?,
            dim: o.dim,
            k: o.queue_size,
            tau: o.temperature,
            seed: o.seed,
            queue: Mutex::new(None),
        };
        // The queue exists from the start, so `save_state` of a new instance is its initial
        // state: restoring it undoes the first forward's enqueue (before, a new instance saved
        // nothing, and a check that restores state saw the queue its own run had changed).
        moco.queue(moco.dim)?;
        Ok(moco)
    }

    fn views(&self) -> (usize, usize) {
        (1, 1)
    }
    /// MoCo's negatives come from its queue: one query is a batch.
    fn min_batch(&self) -> usize {
        1
    }

    fn extra_inputs(&self) -> Vec<&'static str> {
        vec!["keys"]
    }

    fn feature_dim(&self) -> Option<usize> {
        Some(self.dim)
    }

    fn forward<'h>(&self, host: &'h Host, x: &LossInputs<'h>) -> Result<HostTensor<'h>, String> {
        let (n, d) = check(&x.features.shape()?)?;
        let queue = self.queue(d)?;
        let keys = &x.extra[0];
        if keys.shape()? != [n, 1, d] {
            return Err(format!(
                "moco: keys of shape {:?}; expected [{n}, 1, {d}] like the queries",
                keys.shape()?
            ));
        }
        let flat = |t: &HostTensor<'h>| -> Result<HostTensor<'h>, String> {
            let u = t.l2_normalize_eps(crate::EPS)?;
            u.reshape(&[n, d])
        };
        let q = flat(&x.features)?;
        let k = flat(&keys.detach()?)?; // the momentum encoder's keys
        let pos = (q.mul(&k)?).sum_axis(-1, true)?;
        let qt = host.tensor(&queue.rows, &[self.k, d])?;
        let loss = if self.path == crate::masked::Path::Tiled {
            // The queue as keys; the positive key is not among them: an external logit.
            let ext = pos.mul_scalar(1.0 / self.tau)?;
            let ext = ext.reshape(&[n])?;
            let stats = q.similarity_lse(
                &qt,
                &SimilarityLse {
                    temperature: self.tau,
                    exclude_self: false,
                    positives: Positives::None,
                    external: Some(&ext),
                },
            )?;
            let column = |c: usize| stats.narrow(1, c, 1);
            let per_query = (column(0)?).sub(&column(1)?)?;
            per_query.mean_all()?
        } else {
            let neg = q.matmul_t(&qt, false, true)?; // [N, K]
            let logits = host.concat(&[&pos, &neg], 1)?;
            let logits = logits.mul_scalar(1.0 / self.tau)?;
            let logp = logits.log_softmax()?;
            let first = logp.narrow(1, 0, 1)?;
            (first.mean_all()?).neg()?
        };
        self.enqueue(&k.read()?, d)?;
        Ok(loss)
    }

    fn reference(&self, x: &RefInputs) -> Result<f64, String> {
        let (n, d) = check(x.features.dims)?;
        let keys = x.extra.first().ok_or("moco needs keys")?;
        if keys.dims != x.features.dims {
            return Err(format!(
                "moco: keys of shape {:?} differ from the queries' {:?}",
                keys.dims, x.features.dims
            ));
        }
        let queue = self.queue(d)?;
        let mut total = 0.0;
        for i in 0..n {
            let q = crate::row(&x.features, i, 0, true);
            let k = crate::row(keys, i, 0, true);
            let dot = |b: &[f64]| q.iter().zip(b).map(|(p, r)| p * r).sum::<f64>() / self.tau;
            let mut logits = vec![dot(&k)];
            logits.extend(
                queue
                    .rows
                    .chunks(d)
                    .map(|r| dot(&unit(&r.iter().map(|&v| v as f64).collect::<Vec<_>>()))),
            );
            let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + logits.iter().map(|l| (l - mx).exp()).sum::<f64>().ln();
            total += lse - logits[0];
        }
        Ok(total / n as f64)
    }

    fn save_state(&self) -> Option<Output> {
        let guard = self.queue.lock().ok()?;
        let q = guard.as_ref()?;
        let mut data: Vec<f64> = q.rows.iter().map(|&v| v as f64).collect();
        data.extend(std::iter::once(q.next as f64).chain(std::iter::repeat_n(0.0, q.d - 1)));
        Some(Output {
            data,
            dims: vec![self.k + 1, q.d],
        })
    }

    fn load_state(&self, state: &Array) -> Result<(), String> {
        let [rows, d] = state.dims[..] else {
            return Err(format!(
                "moco: state must be [K + 1, D], got {:?}",
                state.dims
            ));
        };
        if rows != self.k + 1 || d != self.dim {
            return Err(format!(
                "moco: state of shape {:?} does not fit queue_size {}",
                state.dims, self.k
            ));
        }
        let next = state.data[self.k * d];
        if !(next >= 0.0 && next < self.k as f64 && next.fract() == 0.0) {
            return Err(format!(
                "moco: state write position {next} is not a row of the queue"
            ));
        }
        let rows: Vec<f32> = state.data[..self.k * d].iter().map(|&v| v as f32).collect();
        *self.queue.lock().map_err(|_| "moco: queue lock poisoned")? = Some(Queue {
            d,
            rows,
            next: next as usize,
        });
        Ok(())
    }
}
