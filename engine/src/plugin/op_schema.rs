//! The attribute schema of every host op: which attributes it takes, of which type, which are
//! required. A call is checked against it before the op runs, so a mistyped, unknown,
//! missing or out-of-range attribute is an error naming the op and the attribute — never a
//! silent default. Optional attributes have the documented defaults of
//! `docs/writing-a-plugin.md`.

use crate::error::{Error, Result};
use serde_json::Value;

/// An attribute's type.
#[derive(Clone, Copy, Debug)]
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
#[derive(Clone, Copy, Debug)]
pub enum Need {
    Required,
    Optional(&'static str),
}
use Need::*;
use Ty::*;

/// One attribute of an op.
pub type Attr = (&'static str, Ty, Need);

const SCALAR: &[Attr] = &[("s", F32, Required)];
const REDUCE: &[Attr] = &[
    ("axis", Int, Optional("all axes")),
    ("keepdim", Bool, Optional("false")),
];
const WINDOW: &[Attr] = &[
    ("kernel", UInt, Required),
    ("stride", UInt, Optional("the kernel")),
    ("padding", UInt, Optional("0")),
    ("dilation", UInt, Optional("1")),
];

/// The attributes of host op `name`; `None` for an op the host does not have.
pub fn attrs(name: &str) -> Option<&'static [Attr]> {
    Some(match name {
        "neg" | "exp" | "log" | "sqrt" | "rsqrt" | "abs" | "relu" | "sigmoid" | "tanh" | "sin"
        | "cos" | "softmax" | "log_softmax" | "logsumexp" | "detach" | "add" | "sub" | "mul"
        | "div" | "maximum" | "minimum" | "eq" | "gt" | "ge" | "where" | "global_avg_pool"
        | "to_f32" => &[],
        "powf" => &[("p", F32, Required)],
        "l2_normalize" => &[("eps", F32, Optional("1e-12"))],
        "add_scalar" | "sub_scalar" | "mul_scalar" | "div_scalar" | "rsub_scalar"
        | "rdiv_scalar" | "maximum_scalar" | "minimum_scalar" | "gt_scalar" | "ge_scalar"
        | "eq_scalar" => SCALAR,
        "sum" | "mean" | "max" | "min" => REDUCE,
        "argmax" | "argmin" => &[
            ("axis", Int, Required),
            ("keepdim", Bool, Optional("false")),
        ],
        "matmul" => &[
            ("ta", Bool, Optional("false")),
            ("tb", Bool, Optional("false")),
        ],
        "reshape" | "expand" => &[("shape", UList, Required)],
        "permute" => &[("dims", UList, Required)],
        "transpose" => &[("a", Int, Required), ("b", Int, Required)],
        "narrow" => &[
            ("axis", Int, Required),
            ("start", UInt, Required),
            ("len", UInt, Required),
        ],
        "concat" | "index_select" | "gather" | "scatter_add" => &[("axis", Int, Required)],
        "random" => &[
            ("seed", U64, Required),
            ("offset", U32, Required),
            ("shape", UList, Required),
            ("dist", Choice(&["uniform", "normal"]), Required),
            ("a", F32, Required),
            ("b", F32, Required),
        ],
        "conv2d" => &[
            ("stride", UInt, Optional("1")),
            ("padding", UInt, Optional("0")),
            ("dilation", UInt, Optional("1")),
        ],
        "max_pool2d" | "avg_pool2d" => WINDOW,
        "similarity_lse" => &[
            ("temperature", F32, Required),
            ("exclude_self", Bool, Optional("false")),
            (
                "positives",
                Choice(&["none", "index", "labels"]),
                Optional("\"none\""),
            ),
            ("external", Bool, Optional("false")),
        ],
        "resample_affine" => &[
            ("size", UList, Required),
            (
                "padding",
                Choice(&["zeros", "border"]),
                Optional("\"zeros\""),
            ),
        ],
        _ => return None,
    })
}

/// Every host op name, for error messages and the documentation check.
pub const OPS: &[&str] = &[
    "neg",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "abs",
    "relu",
    "sigmoid",
    "tanh",
    "sin",
    "cos",
    "softmax",
    "log_softmax",
    "logsumexp",
    "detach",
    "powf",
    "l2_normalize",
    "add_scalar",
    "sub_scalar",
    "mul_scalar",
    "div_scalar",
    "rsub_scalar",
    "rdiv_scalar",
    "maximum_scalar",
    "minimum_scalar",
    "gt_scalar",
    "ge_scalar",
    "eq_scalar",
    "add",
    "sub",
    "mul",
    "div",
    "maximum",
    "minimum",
    "eq",
    "gt",
    "ge",
    "where",
    "sum",
    "mean",
    "max",
    "min",
    "argmax",
    "argmin",
    "matmul",
    "reshape",
    "permute",
    "transpose",
    "narrow",
    "expand",
    "concat",
    "index_select",
    "gather",
    "scatter_add",
    "random",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool",
    "resample_affine",
    "to_f32",
];

fn describe(t: Ty) -> String {
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

fn fits(t: Ty, v: &Value) -> bool {
    match t {
        F32 => v
            .as_f64()
            .is_some_and(|x| x.is_finite() && x.abs() <= f32::MAX as f64),
        Int => v.as_i64().is_some_and(|x| isize::try_from(x).is_ok()),
        UInt => v.as_u64().is_some_and(|x| usize::try_from(x).is_ok()),
        U32 => v.as_u64().is_some_and(|x| x <= u32::MAX as u64),
        U64 => v.as_u64().is_some(),
        Bool => v.is_boolean(),
        UList => v.as_array().is_some_and(|a| {
            a.iter()
                .all(|x| x.as_u64().is_some_and(|u| usize::try_from(u).is_ok()))
        }),
        Choice(c) => v.as_str().is_some_and(|s| c.contains(&s)),
    }
}

/// Checks a call's attributes against the op's schema.
pub fn check(op: &str, a: &Value) -> Result<()> {
    let Some(schema) = attrs(op) else {
        return Err(Error::Other(format!(
            "unknown host op `{op}`; the host ops are: {} (docs/writing-a-plugin.md)",
            OPS.join(", ")
        )));
    };
    let Some(given) = a.as_object() else {
        return Err(Error::Other(format!(
            "{op}: attributes must be a JSON object, got {a}"
        )));
    };
    for (k, v) in given {
        let Some((_, t, _)) = schema.iter().find(|(n, _, _)| n == k) else {
            let known: Vec<&str> = schema.iter().map(|(n, _, _)| *n).collect();
            return Err(Error::Other(format!(
                "{op}: unknown attribute `{k}` ({op} takes {})",
                if known.is_empty() {
                    "no attributes".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        if !fits(*t, v) {
            return Err(Error::Other(format!(
                "{op}: attribute `{k}` must be {}, got {v}",
                describe(*t)
            )));
        }
    }
    for (n, t, need) in schema {
        if matches!(need, Required) && !given.contains_key(*n) {
            return Err(Error::Other(format!(
                "{op}: attribute `{n}` ({}) is missing",
                describe(*t)
            )));
        }
    }
    Ok(())
}
