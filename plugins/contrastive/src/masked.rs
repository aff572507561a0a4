//! The device path shared by NT-Xent and SupCon, in host ops, two ways: `matrix` builds the
//! whole M×M similarity matrix (as PyTorch Metric Learning and lightly do), `tiled` asks the host's `similarity_lse` for
//! the row statistics (log-sum-exp over the other rows, positive sum, count, log-sum-exp over
//! the positives) without it, so memory grows as M·D, not M² (any batch size).
//!
//! Features [N, V, D] are L2-normalised and laid out view-major as M = V N rows (row v N + i is
//! view v of sample i). With s = z zᵀ / τ and self-similarity masked out (-inf on the diagonal,
//! never subtracted), log p = log_softmax(s) row-wise (max-subtracted). Positives P are the other
//! rows with the same label. Anchors (all rows, or view 0 only) without positives are left out
//! of the mean; if none has one, the loss is 0 with a zero gradient.

use vkgrad_plugin::{Host, HostTensor, Positives, SimilarityLse};

pub(crate) enum Form {
    /// L_out: -(1/|P|) sum_p log p_ip (SupCon's default; NT-Xent).
    Out,
    /// L_in: -log((1/|P|) sum_p p_ip).
    In,
}

/// Which way the similarities are computed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Path {
    Tiled,
    Matrix,
}

impl Path {
    /// Parses the `similarity` option. `auto` is the tiled path at every size: with the host's
    /// fused kernel it is faster than the matrix from N = 256 up (docs/performance.md), and it
    /// has no size limit.
    pub(crate) fn parse(loss: &str, s: &str) -> Result<Path, String> {
        match s {
            "auto" => Ok(Path::Tiled),
            "tiled" => Ok(Path::Tiled),
            "matrix" => Ok(Path::Matrix),
            other => Err(format!(
                "{loss}: similarity must be \"auto\", \"tiled\" or \"matrix\", got {other:?}"
            )),
        }
    }
}

pub(crate) struct Spec {
    pub temperature: f64,
    pub path: Path,
    /// Multiplies the loss (SupCon's τ / τ_base; 1 otherwise).
    pub factor: f64,
    pub form: Form,
    /// Only view 0 anchors (SupCon's contrast_mode = one).
    pub first_view_only: bool,
}

/// The loss given features [N, V, D] and per-row labels (f32 values, length V N, view-major).
pub(crate) fn loss<'h>(
    host: &'h Host,
    features: &HostTensor<'h>,
    row_labels: &HostTensor<'h>,
    n: usize,
    v: usize,
    s: &Spec,
) -> Result<HostTensor<'h>, String> {
    if s.path == Path::Tiled {
        self::tiled(host, features, row_labels, n, v, s)
    } else {
        matrix(host, features, row_labels, n, v, s)
    }
}

/// L2-normalised features as view-major rows [V N, D].
fn rows<'h>(features: &HostTensor<'h>, m: usize) -> Result<HostTensor<'h>, String> {
    let d = *features
        .shape()?
        .last()
        .ok_or("features have no dimensions")?;
    let z = features.l2_normalize_eps(crate::EPS)?; // [N, V, D]
    let z = z.permute(&[1, 0, 2])?; // [V, N, D]
    z.reshape(&[m, d]) // view-major rows
}

/// The tiled path: per anchor, from `similarity_lse`'s row statistics,
/// L_out = lse_out − pos_sum / |P| and L_in = lse_out − lse_in + log |P|.
fn tiled<'h>(
    host: &'h Host,
    features: &HostTensor<'h>,
    row_labels: &HostTensor<'h>,
    n: usize,
    v: usize,
    s: &Spec,
) -> Result<HostTensor<'h>, String> {
    let m = n * v;
    let z = rows(features, m)?;
    let lse = |positives| SimilarityLse {
        temperature: s.temperature,
        exclude_self: true,
        positives,
        external: None,
    };
    // Anchors: every row, or view 0's rows (rows 0..N), which are also keys 0..N, so "self" is
    // key i for anchor i either way.
    let stats = if s.first_view_only {
        let q = z.narrow(0, 0, n)?;
        let q_labels = row_labels.narrow(0, 0, n)?;
        q.similarity_lse(&z, &lse(Positives::Labels(&q_labels, row_labels)))?
    } else {
        z.similarity_lse(&z, &lse(Positives::Labels(row_labels, row_labels)))?
    }; // [anchors, 4]
    let column = |c: usize| stats.narrow(1, c, 1);
    let (lse_out, pos_sum, count, lse_in) = (column(0)?, column(1)?, column(2)?, column(3)?);
    let valid = count.gt_scalar(0.0)?;
    let count_safe = count.maximum_scalar(1.0)?;
    let per_anchor = match s.form {
        Form::Out => {
            let mean = pos_sum.div(&count_safe)?;
            lse_out.sub(&mean)?
        }
        Form::In => {
            let log_count = count_safe.log()?;
            let gap = lse_out.sub(&lse_in)?;
            gap.add(&log_count)?
        }
    };
    finish(host, &per_anchor, &valid, s)
}

/// The mean over anchors with positives (0 with a zero gradient if none has one), × factor.
fn finish<'h>(
    host: &'h Host,
    per_anchor: &HostTensor<'h>,
    valid: &HostTensor<'h>,
    s: &Spec,
) -> Result<HostTensor<'h>, String> {
    let zero = host.tensor(&[0.0], &[])?;
    // where(), not a product: an anchor without positives has an infinite or NaN term.
    let per_anchor = HostTensor::where_(valid, per_anchor, &zero)?;
    let total = per_anchor.sum_all()?;
    let anchors = valid.sum_all()?;
    let anchors = anchors.maximum_scalar(1.0)?;
    let mean = total.div(&anchors)?;
    mean.mul_scalar(s.factor)
}

/// The matrix path: the whole [M, M] similarity matrix, masked.
fn matrix<'h>(
    host: &'h Host,
    features: &HostTensor<'h>,
    row_labels: &HostTensor<'h>,
    n: usize,
    v: usize,
    s: &Spec,
) -> Result<HostTensor<'h>, String> {
    let m = n * v;
    let z = rows(features, m)?;
    let sim = z.matmul_t(&z, false, true)?;
    let sim = sim.mul_scalar(1.0 / s.temperature)?;
    let eye: Vec<f32> = (0..m * m).map(|k| (k / m == k % m) as u8 as f32).collect();
    let eye = host.tensor(&eye, &[m, m])?;
    let neg_inf = host.tensor(&[f32::NEG_INFINITY], &[])?;
    let logits = HostTensor::where_(&eye, &neg_inf, &sim)?;
    // positives: same label, not self
    let col = row_labels.reshape(&[m, 1])?;
    let row = row_labels.reshape(&[1, m])?;
    let same = col.eq(&row)?;
    let not_self = eye.rsub_scalar(1.0)?;
    let mut pos = same.mul(&not_self)?; // [M, M] 0/1
    let mut logits = logits;
    if s.first_view_only {
        logits = logits.narrow(0, 0, n)?;
        pos = pos.narrow(0, 0, n)?;
    }
    let zero = host.tensor(&[0.0], &[])?;
    let count = pos.sum_axis(-1, true)?; // |P(i)|
    let valid = count.gt_scalar(0.0)?;
    // Denominators never 0: anchors without positives divide by 1 and are masked out below (a
    // 0/0 there would turn the gradient NaN even where it is not used).
    let count_safe = count.maximum_scalar(1.0)?;
    let per_anchor = match s.form {
        Form::Out => {
            let logp = logits.log_softmax()?;
            // where(), not a product: log p is -inf on the diagonal and 0 * -inf is NaN.
            let picked = HostTensor::where_(&pos, &logp, &zero)?;
            let sum = picked.sum_axis(-1, true)?;
            let mean = sum.div(&count_safe)?;
            mean.neg()?
        }
        Form::In => {
            let p = logits.softmax()?;
            let picked = HostTensor::where_(&pos, &p, &zero)?;
            let sum = picked.sum_axis(-1, true)?;
            let mean = sum.div(&count_safe)?;
            let one = host.tensor(&[1.0], &[])?;
            let mean_safe = HostTensor::where_(&valid, &mean, &one)?; // log(1) = 0 for invalid
            let log = mean_safe.log()?;
            log.neg()?
        }
    };
    finish(host, &per_anchor, &valid, s)
}
