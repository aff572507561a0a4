//! Computing a pending value: one op whose inputs are all computed runs its hand-written kernel
//! (`shaders/unary.comp`, `binary.comp`, `where.comp`: no run-time compile for the common
//! single op); a tree of several runs one generated kernel.

use super::{codegen, Arg, Expr, Op, Pieces};
use crate::device::push::{BinaryPush, UnaryPush, WherePush};
use crate::device::{context, grid, Bind, Kernel, Storage};
use crate::error::Result;
use crate::ops::{broadcast_strides, div_magics, pad6, MAX_RANK};
use crate::tensor::numel;
use std::sync::Arc;

/// The binding of a prologue's leaf `i` in a consumer kernel that declares its input at binding
/// 0 and its output at 1 (`shaders/reduce.comp`, `rowwise.comp`): leaf 0 takes the input's
/// place, the others follow the output.
pub(crate) fn prologue_binding(i: usize) -> usize {
    if i == 0 {
        0
    } else {
        i + 1
    }
}

/// Dispatches the kernel `template` (a file of `shaders/` with its input at binding 0, its
/// output at 1, and the fused-prologue markers) with the tree `pro` computed in place of its
/// input; `spec` fixes its specialisation constants, `push` is its own push-constant block.
pub(crate) fn dispatch_with_prologue(
    template: &str,
    spec: &[u32],
    pro: &Pieces,
    out: &Storage,
    push: &[u8],
    label: &str,
    groups: [u32; 3],
) -> Result<()> {
    let source = codegen::fused_variant(template, spec, pro)?;
    let mut binds = vec![Bind::texels(&pro.leaves[0]), Bind::write(out)];
    binds.extend(pro.leaves[1..].iter().map(|l| Bind::texels(l)));
    let mut words = push.to_vec();
    words.extend_from_slice(bytemuck::cast_slice(&pro.push));
    context()?.dispatch_generated(
        &source,
        &format!("{label}+Fused {} ops", pro.nodes),
        &binds,
        &words,
        groups,
    )
}

pub(super) fn run(shape: &[usize], expr: &Expr) -> Result<Arc<Storage>> {
    let ctx = context()?;
    let out = ctx.alloc(4 * numel(shape) as u64)?;
    if numel(shape) == 0 {
        return Ok(out);
    }
    // Inputs computed since this tree was recorded are leaves now.
    let mut leaves = Vec::with_capacity(expr.args.len());
    for a in &expr.args {
        match a {
            Arg::Leaf { st, shape } => leaves.push((st.clone(), shape.clone())),
            Arg::Inline(v) if v.is_ready() => leaves.push((v.storage()?.clone(), v.shape.clone())),
            Arg::Inline(_) => {
                codegen::run_fused(shape, expr, &out)?;
                return Ok(out);
            }
        }
    }
    let leaf = |i: usize| (&*leaves[i].0, leaves[i].1.as_slice());
    match expr.op {
        Op::Unary { code, s } => unary(code, s, leaf(0).0, shape, &out)?,
        Op::Binary { code } => binary(code, leaf(0), leaf(1), shape, &out)?,
        Op::Where => where_(leaf(0), leaf(1), leaf(2), shape, &out)?,
        Op::Product { ta, tb, dims } => {
            crate::ops::matmul::launch(leaf(0), leaf(1), (ta, tb), dims, &out, None)?
        }
    }
    Ok(out)
}

fn unary(code: u32, s: f32, x: &Storage, shape: &[usize], out: &Storage) -> Result<()> {
    let n = numel(shape) as u64;
    context()?.dispatch(
        Kernel::Unary,
        &[code],
        &[Bind::texels(x), Bind::write(out)],
        &UnaryPush { n: n as u32, s },
        grid(n.div_ceil(4), 256),
    )
}

/// Whether the broadcast kernel can take four elements of a row at once: the innermost size is
/// a multiple of 4, and each input either steps by 1 along it (from 4-aligned starts) or is
/// constant along it.
fn vec4_rows(shape: &[usize], strides: &[&[u32; MAX_RANK]]) -> bool {
    let r = shape.len();
    r > 0
        && shape[r - 1].is_multiple_of(4)
        && strides.iter().all(|s| match s[r - 1] {
            0 => true,
            1 => s[..r - 1].iter().all(|v| v % 4 == 0),
            _ => false,
        })
}

fn binary(
    code: u32,
    (a, a_shape): (&Storage, &[usize]),
    (b, b_shape): (&Storage, &[usize]),
    shape: &[usize],
    out: &Storage,
) -> Result<()> {
    let n = numel(shape) as u64;
    let (sa, sb) = (
        broadcast_strides(a_shape, shape),
        broadcast_strides(b_shape, shape),
    );
    let mode = if a_shape == shape && b_shape == shape {
        1
    } else if vec4_rows(shape, &[&sa, &sb]) {
        2
    } else {
        0
    };
    // How mode 2 reads each input along a row (binary.comp: STEPS).
    let last = shape.len().saturating_sub(1);
    let how = |in_shape: &[usize], s: &[u32; MAX_RANK]| match s[last] {
        _ if in_shape == shape => 2,
        1 => 1,
        _ => 0,
    };
    let steps = if mode == 2 {
        how(a_shape, &sa) | how(b_shape, &sb) << 2
    } else {
        0
    };
    let push = BinaryPush {
        n: n as u32,
        shape: pad6(shape),
        sa,
        sb,
        magic: div_magics(shape),
    };
    context()?.dispatch(
        Kernel::Binary,
        &[code, mode, shape.len().max(1) as u32, steps],
        &[Bind::texels(a), Bind::texels(b), Bind::write(out)],
        &push,
        // the contiguous and row paths handle four elements per invocation
        grid(if mode > 0 { n.div_ceil(4) } else { n }, 256),
    )
}

fn where_(
    (m, m_shape): (&Storage, &[usize]),
    (a, a_shape): (&Storage, &[usize]),
    (b, b_shape): (&Storage, &[usize]),
    shape: &[usize],
    out: &Storage,
) -> Result<()> {
    let n = numel(shape) as u64;
    let push = WherePush {
        n: n as u32,
        rank: shape.len() as u32,
        shape: pad6(shape),
        sm: broadcast_strides(m_shape, shape),
        sa: broadcast_strides(a_shape, shape),
        sb: broadcast_strides(b_shape, shape),
        magic: div_magics(shape),
    };
    context()?.dispatch(
        Kernel::Where,
        &[],
        &[
            Bind::texels(m),
            Bind::texels(a),
            Bind::texels(b),
            Bind::write(out),
        ],
        &push,
        grid(n, 256),
    )
}
