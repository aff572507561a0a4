//! The device path shared by NT-Xent and SupCon, in host ops, two ways: `matrix` builds the
//! whole M×M similarity matrix (fast at small M), `tiled` asks the host's `similarity_lse` for
//! the row statistics (log-sum-exp over the other rows, positive sum, count, log-sum-exp over
//! the positives) without it, so memory grows as M·D, not M² (any batch size).
//!
//! Features [N, V, D] are L2-normalised and laid out view-major as M = V N rows (row v N + i is
//! view v of sample i). With s = z zᵀ / τ and self-similarity masked out (-inf on the diagonal,
//! never subtracted), log p = log_softmax(s) row-wise (max-subtracted). Positives P are the other
//! rows with the same label. Anchors (all rows, or view 0 only) without positives are left out
//! of the mean; if none has one, the loss is 0 with a zero gradient.

use vkgrad_plugin::{json, Host, HostTensor};

pub(crate) enum Form {
    /// L_out: -(1/|P|) sum_p log p_ip (SupCon's default; NT-Xent).
    Out,
    /// L_in: -log((1/|P|) sum_p p_ip).
    In,
}

/// Which way the similarities are computed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Path {
    /// `Tiled` when the matrix would have more than `AUTO_TILED` entries, else `Matrix`.
    Auto,
    Tiled,
    Matrix,
}

/// Above this many similarity entries (M², M = V N) `Auto` takes the tiled path: 2048 rows.
pub(crate) const AUTO_TILED: usize = 2048 * 2048;

impl Path {
    /// Parses the `similarity` option.
    pub(crate) fn parse(loss: &str, s: &str) -> Result<Path, String> {
        match s {
            "auto" => Ok(Path::Auto),
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
    let m = n * v;
    let tiled = match s.path {
        Path::Auto => m * m > AUTO_TILED,
        p => p == Path::Tiled,
    };
    if tiled {
        self::tiled(host, features, row_labels, n, v, s)
    } else {
        matrix(host, features, row_labels, n, v, s)
    }
}

/// L2-normalised features as view-major rows [V N, D].
fn rows<'h>(host: &'h Host, features: &HostTensor<'h>, m: usize) -> Result<HostTensor<'h>, String> {
    let d = *features
        .shape()?
        .last()
        .ok_or("features have no dimensions")?;
    let z = host.op("l2_normalize", &[features], json!({ "eps": crate::EPS }))?; // [N, V, D]
    let z = host.op("permute", &[&z], json!({ "dims": [1, 0, 2] }))?; // [V, N, D]
    host.op("reshape", &[&z], json!({ "shape": [m, d] })) // view-major rows
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
    let z = rows(host, features, m)?;
    let attrs =
        json!({ "temperature": s.temperature, "exclude_self": true, "positives": "labels" });
    // Anchors: every row, or view 0's rows (rows 0..N), which are also keys 0..N, so "self" is
    // key i for anchor i either way.
    let stats = if s.first_view_only {
        let first = json!({ "axis": 0, "start": 0, "len": n });
        let q = host.op("narrow", &[&z], first.clone())?;
        let q_labels = host.op("narrow", &[row_labels], first)?;
        host.op("similarity_lse", &[&q, &z, &q_labels, row_labels], attrs)?
    } else {
        host.op("similarity_lse", &[&z, &z, row_labels, row_labels], attrs)?
    }; // [anchors, 4]
    let column = |c: usize| {
        host.op(
            "narrow",
            &[&stats],
            json!({ "axis": 1, "start": c, "len": 1 }),
        )
    };
    let (lse_out, pos_sum, count, lse_in) = (column(0)?, column(1)?, column(2)?, column(3)?);
    let valid = host.op("gt_scalar", &[&count], json!({ "s": 0.0 }))?;
    let count_safe = host.op("maximum_scalar", &[&count], json!({ "s": 1.0 }))?;
    let per_anchor = match s.form {
        Form::Out => {
            let mean = host.op("div", &[&pos_sum, &count_safe], json!({}))?;
            host.op("sub", &[&lse_out, &mean], json!({}))?
        }
        Form::In => {
            let log_count = host.op("log", &[&count_safe], json!({}))?;
            let gap = host.op("sub", &[&lse_out, &lse_in], json!({}))?;
            host.op("add", &[&gap, &log_count], json!({}))?
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
    let per_anchor = host.op("where", &[valid, per_anchor, &zero], json!({}))?;
    let total = host.op("sum", &[&per_anchor], json!({}))?;
    let anchors = host.op("sum", &[valid], json!({}))?;
    let anchors = host.op("maximum_scalar", &[&anchors], json!({ "s": 1.0 }))?;
    let mean = host.op("div", &[&total, &anchors], json!({}))?;
    host.op("mul_scalar", &[&mean], json!({ "s": s.factor }))
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
    let z = rows(host, features, m)?;
    let sim = host.op("matmul", &[&z, &z], json!({ "tb": true }))?;
    let sim = host.op("mul_scalar", &[&sim], json!({ "s": 1.0 / s.temperature }))?;
    let eye: Vec<f32> = (0..m * m).map(|k| (k / m == k % m) as u8 as f32).collect();
    let eye = host.tensor(&eye, &[m, m])?;
    let neg_inf = host.tensor(&[f32::NEG_INFINITY], &[])?;
    let logits = host.op("where", &[&eye, &neg_inf, &sim], json!({}))?;
    // positives: same label, not self
    let col = host.op("reshape", &[row_labels], json!({ "shape": [m, 1] }))?;
    let row = host.op("reshape", &[row_labels], json!({ "shape": [1, m] }))?;
    let same = host.op("eq", &[&col, &row], json!({}))?;
    let not_self = host.op("rsub_scalar", &[&eye], json!({ "s": 1.0 }))?;
    let mut pos = host.op("mul", &[&same, &not_self], json!({}))?; // [M, M] 0/1
    let mut logits = logits;
    if s.first_view_only {
        logits = host.op(
            "narrow",
            &[&logits],
            json!({ "axis": 0, "start": 0, "len": n }),
        )?;
        pos = host.op(
            "narrow",
            &[&pos],
            json!({ "axis": 0, "start": 0, "len": n }),
        )?;
    }
    let zero = host.tensor(&[0.0], &[])?;
    let count = host.op("sum", &[&pos], json!({ "axis": -1, "keepdim": true }))?; // |P(i)|
    let valid = host.op("gt_scalar", &[&count], json!({ "s": 0.0 }))?;
    // Denominators never 0: anchors without positives divide by 1 and are masked out below (a
    // 0/0 there would turn the gradient NaN even where it is not used).
    let count_safe = host.op("maximum_scalar", &[&count], json!({ "s": 1.0 }))?;
    let per_anchor = match s.form {
        Form::Out => {
            let logp = host.op("log_softmax", &[&logits], json!({}))?;
            // where(), not a product: log p is -inf on the diagonal and 0 * -inf is NaN.
            let picked = host.op("where", &[&pos, &logp, &zero], json!({}))?;
            let sum = host.op("sum", &[&picked], json!({ "axis": -1, "keepdim": true }))?;
            let mean = host.op("div", &[&sum, &count_safe], json!({}))?;
            host.op("neg", &[&mean], json!({}))?
        }
        Form::In => {
            let p = host.op("softmax", &[&logits], json!({}))?;
            let picked = host.op("where", &[&pos, &p, &zero], json!({}))?;
            let sum = host.op("sum", &[&picked], json!({ "axis": -1, "keepdim": true }))?;
            let mean = host.op("div", &[&sum, &count_safe], json!({}))?;
            let one = host.tensor(&[1.0], &[])?;
            let mean_safe = host.op("where", &[&valid, &mean, &one], json!({}))?; // log(1) = 0 for invalid
            let log = host.op("log", &[&mean_safe], json!({}))?;
            host.op("neg", &[&log], json!({}))?
        }
    };
    finish(host, &per_anchor, &valid, s)
}
