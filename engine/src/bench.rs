//! `vkgrad bench`: medians, after warm-up, of the engine's core workloads. Numbers are for
//! comparing builds and devices measured in one run; see docs/performance.md.

use crate::device::context;
use crate::error::Result;
use crate::nn::Linear;
use crate::ops::random::Rng;
use crate::optim::Sgd;
use crate::replay::Replay;
use crate::tensor::{IntTensor, Tensor};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    pub ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gflops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gbps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub us_per_op: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_us_per_op: Option<f64>,
    /// Kernels dispatched per run (`simclr_mlp_step`, `contrastive_loss`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernels: Option<u64>,
    /// `contrastive_loss`: which similarity path (`tiled`, `matrix`); `op_chain` and
    /// `simclr_mlp_step`: `replay` for the step recorded once and replayed (`Replay`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Replayed runs: the host's time per run in µs (copying inputs in, submitting, copying
    /// outputs out), before the device's work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_us: Option<f64>,
    pub runs: usize,
}

impl BenchResult {
    fn new(name: &str, ms: f64, runs: usize) -> Self {
        BenchResult {
            name: name.into(),
            size: None,
            batch: None,
            ms,
            gflops: None,
            gbps: None,
            us_per_op: None,
            record_us_per_op: None,
            kernels: None,
            path: None,
            host_us: None,
            runs,
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        let mut s = format!("{:<16}", self.name);
        if let Some(n) = self.size {
            s += &format!(" size {n:<5}");
        }
        if let Some(b) = self.batch {
            s += &format!(" batch {b:<5}");
        }
        if let Some(p) = &self.path {
            s += &format!(" {p:<6}");
        }
        s += &format!(" {:>10.3} ms", self.ms);
        if let Some(g) = self.gflops {
            s += &format!("  {g:>8.2} GFLOP/s");
        }
        if let Some(g) = self.gbps {
            s += &format!("  {g:>8.2} GB/s");
        }
        if let Some(u) = self.us_per_op {
            s += &format!("  {u:>8.2} µs/op");
        }
        if let Some(u) = self.record_us_per_op {
            s += &format!(" ({u:.2} µs/op to record)");
        }
        if let Some(k) = self.kernels {
            s += &format!("  {k:>6} kernels");
        }
        if let Some(h) = self.host_us {
            s += &format!("  ({h:.1} µs on the host)");
        }
        s + &format!("  (median of {})", self.runs)
    }
}

/// Median wall time in ms of `f` (which must synchronise), after `warmup` untimed runs.
fn time(warmup: usize, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut ts = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        ts.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&mut ts))
}

/// Kernels `f` dispatches (one more run, untimed).
fn kernels_of(f: impl FnOnce() -> Result<()>) -> Result<u64> {
    let before = crate::device::dispatch_count();
    f()?;
    Ok(crate::device::dispatch_count() - before)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The benchmarks, by the names `--filter` matches.
pub const NAMES: [&str; 5] = [
    "matmul",
    "add",
    "op_chain",
    "simclr_mlp_step",
    "contrastive_loss",
];

/// Runs every benchmark whose name contains `filter`, calling `report` as each finishes.
pub fn run(
    filter: Option<&str>,
    quick: bool,
    mut report: impl FnMut(&BenchResult),
) -> Result<Vec<BenchResult>> {
    let ctx = context()?;
    let wanted = |name: &str| filter.is_none_or(|f| name.contains(f));
    let runs = if quick { 3 } else { 7 };
    let mut out = Vec::new();
    let mut push = |r: BenchResult, out: &mut Vec<BenchResult>| {
        report(&r);
        out.push(r);
    };
    let mut rng = Rng::new(0);

    if wanted("matmul") {
        for n in [256, 512, 1024] {
            let a = rng.normal(&[n, n], 0.0, 1.0)?;
            let b = rng.normal(&[n, n], 0.0, 1.0)?;
            let ms = time(2, runs, || {
                // The product is lazy (a consumer could fuse into it): without `realize`
                // nothing would run.
                a.matmul(&b)?.realize()?;
                ctx.sync()
            })?;
            let mut r = BenchResult::new("matmul", ms, runs);
            r.size = Some(n);
            r.gflops = Some(2.0 * (n as f64).powi(3) / (ms * 1e-3) / 1e9);
            push(r, &mut out);
        }
    }
    if wanted("add") {
        let n = 16 * 1024 * 1024;
        let a = rng.normal(&[n], 0.0, 1.0)?;
        let b = rng.normal(&[n], 0.0, 1.0)?;
        let ms = time(2, runs, || {
            // Elementwise ops are lazy: without `realize` nothing would run.
            a.add(&b)?.realize()?;
            ctx.sync()
        })?;
        let mut r = BenchResult::new("add", ms, runs);
        r.size = Some(n);
        r.gbps = Some(3.0 * 4.0 * n as f64 / (ms * 1e-3) / 1e9);
        push(r, &mut out);
    }
    if wanted("op_chain") {
        // 1000 dependent elementwise ops on 256 floats: the cost of an op that does almost no
        // work. `record_us_per_op` is the host's share (recording into the command buffer),
        // `us_per_op` everything including the driver executing the dispatches. The chain is
        // lazy: recording includes computing it (`realize`), as fused kernels of up to 48 ops
        // (one kernel per op with VKGRAD_FUSION=0).
        let x0 = Tensor::ones(&[256])?;
        let ops = 1000;
        let (mut total, mut record) = (Vec::new(), Vec::new());
        for i in 0..runs + 2 {
            ctx.sync()?;
            let t = Instant::now();
            let mut x = x0.clone();
            for _ in 0..ops {
                x = x.mul_scalar(1.0001)?;
            }
            x.realize()?;
            let recorded = t.elapsed();
            ctx.sync()?;
            if i >= 2 {
                record.push(recorded.as_secs_f64() * 1e3);
                total.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        let ms = median(&mut total);
        let mut r = BenchResult::new("op_chain", ms, runs);
        r.size = Some(ops);
        r.us_per_op = Some(ms * 1e3 / ops as f64);
        r.record_us_per_op = Some(median(&mut record) * 1e3 / ops as f64);
        push(r, &mut out);

        // The same chain recorded once and replayed: the host only submits.
        let chain = |a: &[Tensor]| {
            let mut x = a[0].clone();
            for _ in 0..ops {
                x = x.mul_scalar(1.0001)?;
            }
            Ok(vec![x])
        };
        let (mut replay, _) = Replay::record(&[&x0], chain)?;
        let (mut total, mut host) = (Vec::new(), Vec::new());
        for i in 0..runs + 2 {
            ctx.sync()?;
            let t = Instant::now();
            let y = replay.run(&[&x0])?;
            let submitted = t.elapsed();
            ctx.sync()?;
            drop(y);
            if i >= 2 {
                host.push(submitted.as_secs_f64() * 1e6);
                total.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        let ms = median(&mut total);
        let mut r = BenchResult::new("op_chain", ms, runs);
        r.size = Some(ops);
        r.path = Some("replay".into());
        r.us_per_op = Some(ms * 1e3 / ops as f64);
        let host = median(&mut host);
        r.record_us_per_op = Some(host / ops as f64);
        r.host_us = Some(host);
        push(r, &mut out);
    }
    if wanted("simclr_mlp_step") {
        for batch in [256, 1024] {
            let mut step = SimclrMlpStep::new(batch, &mut rng)?;
            let ms = time(2, if quick { 2 } else { 5 }, || step.step().map(|_| ()))?;
            let mut r = BenchResult::new("simclr_mlp_step", ms, if quick { 2 } else { 5 });
            r.batch = Some(batch);
            r.kernels = Some(kernels_of(|| step.step().map(|_| ()))?);
            push(r, &mut out);

            // The same step recorded once and replayed.
            let runs = if quick { 2 } else { 5 };
            let mut state = step.functional_state()?;
            let refs: Vec<&Tensor> = state.iter().collect();
            let (mut replay, first) = Replay::record(&refs, |a| step.functional(a))?;
            state = first[..first.len() - 1].to_vec();
            let mut host = Vec::new();
            let ms = time(2, runs, || {
                let refs: Vec<&Tensor> = state.iter().collect();
                let t = Instant::now();
                let mut next = replay.run(&refs)?;
                host.push(t.elapsed().as_secs_f64() * 1e6);
                let loss = next.pop().expect("the step returns its loss");
                loss.item()?;
                state = next;
                Ok(())
            })?;
            let mut r = BenchResult::new("simclr_mlp_step", ms, runs);
            r.batch = Some(batch);
            r.path = Some("replay".into());
            r.kernels = Some(replay.commands() as u64);
            r.host_us = Some(median(&mut host));
            push(r, &mut out);
        }
    }
    if wanted("contrastive_loss") {
        // The plugin loss path: contrastive::nt_xent forward + backward on [N, 2, 128]
        // features, through the tiled similarity_lse and through the whole matrix (where the
        // device can hold the (2N)² matrix in one buffer).
        let reg = crate::plugin::Registry::load_for(&[])?;
        let comp = reg.find("loss", "contrastive::nt_xent")?;
        let max_bytes = context()?.buffer_limits().0;
        for n in [256usize, 1024, 4096] {
            let x = rng.normal(&[n, 2, 128], 0.0, 1.0)?;
            for path in ["matrix", "tiled"] {
                if path == "matrix" && (2 * n * 2 * n * 4) as u64 > max_bytes {
                    continue; // the matrix path refuses it on this device (docs/performance.md)
                }
                let loss = comp.create_loss(&format!(r#"{{"similarity":"{path}"}}"#))?;
                let runs = if quick { 1 } else { 3 };
                let ms = time(1, runs, || {
                    let xg = x.detach().requires_grad();
                    let y = loss.forward(&xg, None)?;
                    y.backward()?;
                    xg.grad().map(|g| g.to_vec()).transpose()?;
                    Ok(())
                })?;
                let mut r = BenchResult::new("contrastive_loss", ms, runs);
                r.batch = Some(n);
                r.kernels = Some(kernels_of(|| {
                    let xg = x.detach().requires_grad();
                    loss.forward(&xg, None)?.backward()
                })?);
                r.path = Some(path.into());
                push(r, &mut out);
            }
        }
    }
    Ok(out)
}

/// One SimCLR training step written directly with engine ops: encoder Linear(64,512)-ReLU-
/// Linear(512,512)-ReLU, head Linear(512,512)-ReLU-Linear(512,128), NT-Xent (τ = 0.5) over
/// the 2N views, backward, SGD with momentum 0.9.
pub struct SimclrMlpStep {
    layers: Vec<Linear>,
    views: Tensor,
    self_mask: Tensor,
    positives: IntTensor,
    sgd: Sgd,
}

impl SimclrMlpStep {
    pub fn new(n: usize, rng: &mut Rng) -> Result<Self> {
        let dims = [64, 512, 512, 512, 128];
        let layers = dims
            .windows(2)
            .map(|d| Linear::new(d[0], d[1], rng))
            .collect::<Result<Vec<_>>>()?;
        let two_n = 2 * n;
        // Views 2i and 2i+1... here: rows [0, N) are view 1 and [N, 2N) view 2 of the same samples.
        let views = rng.normal(&[two_n, 64], 0.0, 1.0)?;
        let eye: Vec<f32> = (0..two_n * two_n)
            .map(|k| (k / two_n == k % two_n) as u8 as f32)
            .collect();
        let positives: Vec<u32> = (0..two_n).map(|i| ((i + n) % two_n) as u32).collect();
        Ok(SimclrMlpStep {
            layers,
            views,
            self_mask: Tensor::from_vec(eye, &[two_n, two_n])?,
            positives: IntTensor::from_vec(positives, &[two_n, 1])?,
            sgd: Sgd::new(0.01, 0.9),
        })
    }

    /// The inputs of [`SimclrMlpStep::functional`]: the parameters (requiring gradients) and
    /// zero momenta.
    pub fn functional_state(&self) -> Result<Vec<Tensor>> {
        let params: Vec<Tensor> = self
            .layers
            .iter()
            .flat_map(|l| {
                [
                    l.weight.detach().requires_grad(),
                    l.bias.detach().requires_grad(),
                ]
            })
            .collect();
        let zeros = params
            .iter()
            .map(|p| Tensor::zeros(p.shape()))
            .collect::<Result<Vec<_>>>()?;
        Ok(params.into_iter().chain(zeros).collect())
    }

    /// The same step as a function, for recording with [`Replay`]: (parameters, momenta) →
    /// (new parameters, new momenta, loss), SGD with momentum 0.9 and learning rate 0.01 as
    /// [`Sgd`] computes it.
    pub fn functional(&self, a: &[Tensor]) -> Result<Vec<Tensor>> {
        let np = 2 * self.layers.len();
        let mut h = self.views.clone();
        for i in 0..self.layers.len() {
            h = h.matmul(&a[2 * i])?.add(&a[2 * i + 1])?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        let loss = nt_xent(&h, &self.self_mask, &self.positives, 0.5)?;
        loss.backward()?;
        let (mut out, mut momenta) = (Vec::with_capacity(2 * np + 1), Vec::with_capacity(np));
        for i in 0..np {
            let g = a[i]
                .grad()
                .ok_or_else(|| crate::error::Error::Other("a parameter got no gradient".into()))?;
            let v = a[np + i].mul_scalar(0.9)?.add(&g)?;
            out.push(a[i].detach().sub(&v.mul_scalar(0.01)?)?);
            momenta.push(v);
        }
        out.extend(momenta);
        out.push(loss.detach());
        Ok(out)
    }

    /// One synchronised step; returns the loss.
    pub fn step(&mut self) -> Result<f32> {
        let mut h = self.views.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        let loss = nt_xent(&h, &self.self_mask, &self.positives, 0.5)?;
        loss.backward()?;
        let mut params: Vec<&mut Tensor> = self
            .layers
            .iter_mut()
            .flat_map(|l| l.parameters_mut())
            .collect();
        self.sgd.step(&mut params)?;
        loss.item()
    }
}

/// NT-Xent over 2N embeddings: mean over anchors of -log softmax_k≠i(sim(i,k)/τ)[positive(i)].
fn nt_xent(z: &Tensor, self_mask: &Tensor, positives: &IntTensor, tau: f32) -> Result<Tensor> {
    let zn = z.l2_normalize(1e-12)?;
    let sim = Tensor::matmul_t(&zn, &zn, false, true)?.mul_scalar(1.0 / tau)?;
    // Self-similarity is masked out (not subtracted): -inf drops it from the log-sum-exp.
    let logits = Tensor::where_(self_mask, &Tensor::scalar(f32::NEG_INFINITY)?, &sim)?;
    logits
        .log_softmax()?
        .gather(1, positives)?
        .mean_all()?
        .neg()
}
