//! The host-op table: every op a plugin can call, defined once — its name, the typed method
//! that calls it, its inputs, its attributes (type, required or default) and what it computes.
//! The host checks every call against it, the typed methods of [`crate::HostTensor`] and
//! [`crate::Host`] are tested against it, and the host-op table of `docs/writing-a-plugin.md` is
//! generated from it ([`markdown`]).

/// An attribute's type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ty {
    /// A JSON number, read as f32 (must fit f32's range).
    F32,
    /// An integer that may be negative (axes count from the end).
    Int,
    /// A non-negative integer.
    UInt,
    /// A non-negative integer below 2^32.
    U32,
    /// A non-negative integer below 2^64 (seeds).
    U64,
    Bool,
    /// A list of non-negative integers.
    UList,
    /// One of the listed strings.
    Choice(&'static [&'static str]),
}

/// Required, or optional with the documented default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Need {
    Required,
    Optional(&'static str),
}
use Need::*;
use Ty::*;

/// One attribute of an op: name, type, required or default.
pub type Attr = (&'static str, Ty, Need);

/// One host op.
#[derive(Clone, Copy, Debug)]
pub struct OpSpec {
    /// The name the ABI call uses (`host.op(name, ..)`).
    pub name: &'static str,
    /// The typed call in the SDK (`x.narrow(axis, start, len)`).
    pub method: &'static str,
    /// The inputs, in order, and the result.
    pub inputs: &'static str,
    pub attrs: &'static [Attr],
    /// What it computes, and its gradient where that is not the obvious one.
    pub doc: &'static str,
}

const fn op(
    name: &'static str,
    method: &'static str,
    inputs: &'static str,
    attrs: &'static [Attr],
    doc: &'static str,
) -> OpSpec {
    OpSpec {
        name,
        method,
        inputs,
        attrs,
        doc,
    }
}

const S: &[Attr] = &[("s", F32, Required)];
const REDUCE: &[Attr] = &[
    ("axis", Int, Optional("all axes")),
    ("keepdim", Bool, Optional("false")),
];
const ARG: &[Attr] = &[
    ("axis", Int, Required),
    ("keepdim", Bool, Optional("false")),
];
const SHAPE: &[Attr] = &[("shape", UList, Required)];
const AXIS: &[Attr] = &[("axis", Int, Required)];
const WINDOW: &[Attr] = &[
    ("kernel", UInt, Required),
    ("stride", UInt, Optional("the kernel")),
    ("padding", UInt, Optional("0")),
    ("dilation", UInt, Optional("1")),
];
const X: &str = "x";
const AB: &str = "a, b (broadcasting)";

/// Every host op. Order = the order of the docs' table.
pub const HOST_OPS: &[OpSpec] = &[
    op("neg", "x.neg()", X, &[], "−x"),
    op("exp", "x.exp()", X, &[], "eˣ"),
    op("log", "x.log()", X, &[], "ln x"),
    op("sqrt", "x.sqrt()", X, &[], "√x"),
    op("rsqrt", "x.rsqrt()", X, &[], "1/√x"),
    op("abs", "x.abs()", X, &[], "|x| (gradient 0 at 0)"),
    op("relu", "x.relu()", X, &[], "max(x, 0) (gradient 0 at 0)"),
    op("sigmoid", "x.sigmoid()", X, &[], "1/(1+e⁻ˣ)"),
    op("tanh", "x.tanh()", X, &[], "tanh x"),
    op("sin", "x.sin()", X, &[], "sin x"),
    op("cos", "x.cos()", X, &[], "cos x"),
    op("softmax", "x.softmax()", X, &[], "softmax over the last axis"),
    op("log_softmax", "x.log_softmax()", X, &[], "log-softmax over the last axis"),
    op("logsumexp", "x.logsumexp()", X, &[], "log Σ eˣ over the last axis (drops it)"),
    op("detach", "x.detach()", X, &[], "x, with no gradient flowing back"),
    op(
        "replica_sum",
        "x.replica_sum()",
        X,
        &[],
        "the sum of x over the data-parallel ranks that share batch statistics (every rank when `sync_batch_norm`, else x itself; x itself in one process); gradient: the same sum (ABI 1.5; batch norm's global statistics)",
    ),
    op("powf", "x.powf(p)", X, &[("p", F32, Required)], "xᵖ"),
    op(
        "l2_normalize",
        "x.l2_normalize() / x.l2_normalize_eps(eps)",
        X,
        &[("eps", F32, Optional("1e-12"))],
        "x / max(‖x‖, eps) over the last axis",
    ),
    op("add_scalar", "x.add_scalar(s)", X, S, "x + s"),
    op("sub_scalar", "x.sub_scalar(s)", X, S, "x − s"),
    op("mul_scalar", "x.mul_scalar(s)", X, S, "x · s"),
    op("div_scalar", "x.div_scalar(s)", X, S, "x / s"),
    op("rsub_scalar", "x.rsub_scalar(s)", X, S, "s − x"),
    op("rdiv_scalar", "x.rdiv_scalar(s)", X, S, "s / x"),
    op("maximum_scalar", "x.maximum_scalar(s)", X, S, "max(x, s)"),
    op("minimum_scalar", "x.minimum_scalar(s)", X, S, "min(x, s)"),
    op("gt_scalar", "x.gt_scalar(s)", X, S, "1 where x > s else 0 (no gradient)"),
    op("ge_scalar", "x.ge_scalar(s)", X, S, "1 where x ≥ s else 0 (no gradient)"),
    op("eq_scalar", "x.eq_scalar(s)", X, S, "1 where x = s else 0 (no gradient)"),
    op("add", "a.add(&b)", AB, &[], "a + b"),
    op("sub", "a.sub(&b)", AB, &[], "a − b"),
    op("mul", "a.mul(&b)", AB, &[], "a · b"),
    op("div", "a.div(&b)", AB, &[], "a / b"),
    op("maximum", "a.maximum(&b)", AB, &[], "max(a, b) (ties split the gradient)"),
    op("minimum", "a.minimum(&b)", AB, &[], "min(a, b) (ties split the gradient)"),
    op("eq", "a.eq(&b)", AB, &[], "1 where a = b else 0 (no gradient)"),
    op("gt", "a.gt(&b)", AB, &[], "1 where a > b else 0 (no gradient)"),
    op("ge", "a.ge(&b)", AB, &[], "1 where a ≥ b else 0 (no gradient)"),
    op(
        "where",
        "HostTensor::where_(&mask, &a, &b)",
        "mask, a, b (broadcasting)",
        &[],
        "a where mask ≠ 0, b where it is 0; the gradient reaches each only where it was chosen",
    ),
    op(
        "sum",
        "x.sum_all() / x.sum_axis(axis, keepdim)",
        X,
        REDUCE,
        "sum over one axis or all",
    ),
    op(
        "mean",
        "x.mean_all() / x.mean_axis(axis, keepdim)",
        X,
        REDUCE,
        "mean over one axis or all",
    ),
    op(
        "max",
        "x.max_all() / x.max_axis(axis, keepdim)",
        X,
        REDUCE,
        "maximum over one axis or all (ties split the gradient)",
    ),
    op(
        "min",
        "x.min_all() / x.min_axis(axis, keepdim)",
        X,
        REDUCE,
        "minimum over one axis or all (ties split the gradient)",
    ),
    op(
        "argmax",
        "x.argmax(axis, keepdim)",
        "x → integer",
        ARG,
        "index of the largest (first on ties)",
    ),
    op(
        "argmin",
        "x.argmin(axis, keepdim)",
        "x → integer",
        ARG,
        "index of the smallest (first on ties)",
    ),
    op(
        "matmul",
        "a.matmul(&b) / a.matmul_t(&b, ta, tb)",
        "a [.., M, K], b [.., K, N]",
        &[("ta", Bool, Optional("false")), ("tb", Bool, Optional("false"))],
        "a·b over the last two axes; `ta`/`tb` transpose an operand first; batch axes equal, or one operand 2-D (used with every matrix of the other)",
    ),
    op("reshape", "x.reshape(&shape)", X, SHAPE, "the same values in a new shape"),
    op(
        "permute",
        "x.permute(&dims)",
        X,
        &[("dims", UList, Required)],
        "axes reordered (axis i of the result is axis dims[i] of x)",
    ),
    op(
        "transpose",
        "x.transpose(a, b)",
        X,
        &[("a", Int, Required), ("b", Int, Required)],
        "axes a and b swapped",
    ),
    op(
        "narrow",
        "x.narrow(axis, start, len)",
        X,
        &[
            ("axis", Int, Required),
            ("start", UInt, Required),
            ("len", UInt, Required),
        ],
        "the slice start..start+len along axis",
    ),
    op("expand", "x.expand(&shape)", X, SHAPE, "broadcast to shape (a copy)"),
    op(
        "concat",
        "host.concat(&[&a, &b, ..], axis)",
        "one or more tensors",
        AXIS,
        "joined along axis",
    ),
    op(
        "index_select",
        "x.index_select(axis, &idx)",
        "x, integer idx [K]",
        AXIS,
        "the slices idx[k] along axis",
    ),
    op(
        "gather",
        "x.gather(axis, &idx)",
        "x, integer idx (x's shape but along axis)",
        AXIS,
        "out[.., j, ..] = x[.., idx[.., j, ..], ..] (PyTorch's gather)",
    ),
    op(
        "scatter_add",
        "x.scatter_add(axis, &idx, &src)",
        "x, integer idx, src (idx's shape)",
        AXIS,
        "x with src[.., j, ..] added at idx[.., j, ..] (deterministic)",
    ),
    op(
        "to_f32",
        "idx.to_f32()",
        "integer tensor (labels, argmax)",
        &[],
        "the same values as f32",
    ),
    op(
        "random",
        "host.random(seed, offset, &shape, Dist::Uniform(a, b) / Dist::Normal(mean, std))",
        "none",
        &[
            ("seed", U64, Required),
            ("offset", U32, Required),
            ("shape", UList, Required),
            ("dist", Choice(&["uniform", "normal"]), Required),
            ("a", F32, Required),
            ("b", F32, Required),
        ],
        "Philox 4×32-10 stream `seed` from element `offset`: uniform in [a, b) or normal(a, b)",
    ),
    op(
        "conv2d",
        "x.conv2d(&w, bias, stride, padding, dilation)",
        "x [N, C, H, W], weight [O, C, K, K], optional bias [O]",
        &[
            ("stride", UInt, Optional("1")),
            ("padding", UInt, Optional("0")),
            ("dilation", UInt, Optional("1")),
        ],
        "2-D cross-correlation, as PyTorch's conv2d",
    ),
    op(
        "max_pool2d",
        "x.max_pool2d(kernel, stride, padding, dilation)",
        "x [N, C, H, W]",
        WINDOW,
        "maximum over each window (stride `None` = the kernel)",
    ),
    op(
        "avg_pool2d",
        "x.avg_pool2d(kernel, stride, padding, dilation)",
        "x [N, C, H, W]",
        WINDOW,
        "mean over each window, padding counted (stride `None` = the kernel)",
    ),
    op(
        "global_avg_pool",
        "x.global_avg_pool()",
        "x [N, C, H, W] → [N, C]",
        &[],
        "mean over H and W",
    ),
    op(
        "resample_affine",
        "x.resample_affine(&theta, [h, w], Padding::Zeros / Padding::Border)",
        "images [N, C, H, W], theta [N, 2, 3]",
        &[
            ("size", UList, Required),
            ("padding", Choice(&["zeros", "border"]), Optional("\"zeros\"")),
        ],
        "bilinear resampling through an affine grid (no gradient: asking one is an error)",
    ),
    op(
        "similarity_lse",
        "q.similarity_lse(&k, &SimilarityLse { .. })",
        "q [M, D], k [P, D], then the positives (`index`: key index per query [M]; `labels`: query labels [M], key labels [P]; integer or integral f32), then e [M] if `external`",
        &[
            ("temperature", F32, Required),
            ("exclude_self", Bool, Optional("false")),
            ("positives", Choice(&["none", "index", "labels"]), Optional("\"none\"")),
            ("external", Bool, Optional("false")),
        ],
        "[M, 4] row statistics of q·kᵀ/τ without building M×P (ABI 1.2; below the table)",
    ),
];

/// The op called `name`.
pub fn spec(name: &str) -> Option<&'static OpSpec> {
    HOST_OPS.iter().find(|o| o.name == name)
}

/// The attributes of op `name`; `None` for an op the host does not have.
pub fn attrs(name: &str) -> Option<&'static [Attr]> {
    spec(name).map(|o| o.attrs)
}

/// Every op name.
pub fn names() -> impl Iterator<Item = &'static str> {
    HOST_OPS.iter().map(|o| o.name)
}

/// The host-op table of `docs/writing-a-plugin.md`, generated (a test keeps the docs equal).
pub fn markdown() -> String {
    let mut out = String::from(
        "| op | typed call | inputs | attributes (default) | computes |\n|---|---|---|---|---|\n",
    );
    for o in HOST_OPS {
        let attrs: Vec<String> = o
            .attrs
            .iter()
            .map(|(n, t, need)| match need {
                Required => format!("`{n}` {}", short(*t)),
                Optional(d) => format!("`{n}` {} ({d})", short(*t)),
            })
            .collect();
        let attrs = if attrs.is_empty() {
            "–".to_string()
        } else {
            attrs.join(", ")
        };
        out += &format!(
            "| `{}` | `{}` | {} | {} | {} |\n",
            o.name, o.method, o.inputs, attrs, o.doc
        );
    }
    out
}

fn short(t: Ty) -> String {
    match t {
        F32 => "f32".into(),
        Int => "int".into(),
        UInt => "uint".into(),
        U32 => "u32".into(),
        U64 => "u64".into(),
        Bool => "bool".into(),
        UList => "[uint]".into(),
        Choice(c) => c
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join("/"),
    }
}

/// A type in words, for error messages.
pub fn describe(t: Ty) -> String {
    match t {
        F32 => "a number (read as f32)".into(),
        Int => "an integer".into(),
        UInt => "a non-negative integer".into(),
        U32 => "an integer in 0..2^32".into(),
        U64 => "an integer in 0..2^64".into(),
        Bool => "true or false".into(),
        UList => "a list of non-negative integers".into(),
        Choice(c) => format!("one of {}", c.join(", ")),
    }
}
