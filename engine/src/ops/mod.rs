//! The primitive ops. Each file holds a family: the forward (a kernel dispatch) and, beside
//! it, the backward rule written with other ops, so gradients run on the GPU too.

pub(crate) mod binary;
pub(crate) mod collective;
pub(crate) mod conv;
pub(crate) mod index;
pub mod links;
pub(crate) mod matmul;
pub(crate) mod movement;
pub(crate) mod random;
pub(crate) mod reduce;
pub(crate) mod resample;
pub(crate) mod rowwise;
pub(crate) mod similarity;
pub(crate) mod unary;

use crate::device::Storage;
use crate::error::{Error, Result};
use crate::tensor::{numel, Shape, Tensor};
use std::sync::Arc;

/// Highest rank the strided kernels (broadcast, copy, where) take; shapes travel as push
/// constants, and 6 dimensions keep every push block within Vulkan's guaranteed 128 bytes.
pub const MAX_RANK: usize = 6;

pub(crate) fn check_rank(op: &'static str, shape: &[usize]) -> Result<()> {
    if shape.len() > MAX_RANK {
        return Err(Error::op(
            op,
            format!(
                "shape {shape:?} has rank {}, more than the supported {MAX_RANK}",
                shape.len()
            ),
        ));
    }
    Ok(())
}

/// NumPy broadcasting: shapes are aligned on the right; each pair of sizes must be equal or 1.
pub(crate) fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Shape> {
    let r = a.len().max(b.len());
    let mut out = Shape::with_capacity(r);
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::op(
                    op,
                    format!(
                    "{a:?} and {b:?} cannot be broadcast together (dimension {i}: {da} vs {db})"
                ),
                ))
            }
        });
    }
    Ok(out)
}

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Shape {
    let mut s: Shape = smallvec::smallvec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Element strides that read a tensor of shape `src` as if broadcast to `out` (0 where a
/// dimension is broadcast), padded to MAX_RANK.
pub(crate) fn broadcast_strides(src: &[usize], out: &[usize]) -> [u32; MAX_RANK] {
    let st = strides(src);
    let mut res = [0u32; MAX_RANK];
    let off = out.len() - src.len();
    for (i, &d) in src.iter().enumerate() {
        res[off + i] = if d == 1 && out[off + i] != 1 {
            0
        } else {
            st[i] as u32
        };
    }
    res
}

/// The multiplier `m` with which `fast_div(n, d, m)` (shaders/common.glsl) computes n / d
/// without a division: m = ceil(2^(31 + s) / d), s = ceil(log2 d); 0 for d = 0 (never divided
/// by). Exact for n < 2^31 and d <= 2^31 (test below: the same formula on the CPU).
pub(crate) fn div_magic(d: usize) -> u32 {
    if d == 0 {
        return 0;
    }
    let s = (d as u64).next_power_of_two().trailing_zeros();
    let m = (1u64 << (31 + s)).div_ceil(d as u64);
    u32::try_from(m).expect("m < 2^32 for d <= 2^31")
}

/// [`div_magic`] of each dimension, padded like [`pad6`].
pub(crate) fn div_magics(shape: &[usize]) -> [u32; MAX_RANK] {
    let mut r = [0u32; MAX_RANK];
    for (i, &d) in shape.iter().enumerate() {
        r[i] = div_magic(d);
    }
    r
}

pub(crate) fn pad6(v: &[usize]) -> [u32; MAX_RANK] {
    let mut r = [0u32; MAX_RANK];
    for (i, &x) in v.iter().enumerate() {
        r[i] = x as u32;
    }
    r
}

/// Resolves a possibly negative axis (-1 = last).
pub(crate) fn norm_axis(op: &'static str, axis: isize, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as isize } else { axis };
    if a < 0 || a >= rank as isize {
        return Err(Error::op(
            op,
            format!("axis {axis} is out of range for rank {rank}"),
        ));
    }
    Ok(a as usize)
}

/// Device memory for an f32 result of `shape`.
pub(crate) fn alloc_f32(shape: &[usize]) -> Result<Arc<Storage>> {
    Tensor::ctx()?.alloc(4 * numel(shape) as u64)
}

impl Tensor {
    /// Sums a broadcast gradient back to `shape` (the backward of broadcasting).
    pub(crate) fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let lead = self.rank() - shape.len();
        let mut g = self.clone();
        for ax in 0..self.rank() {
            let target = if ax < lead { 1 } else { shape[ax - lead] };
            if g.shape()[ax] != target {
                g = g.sum_axis(ax as isize, true)?;
            }
        }
        g.reshape(shape)
    }
}

/// The op-code constants a shader declares (`const uint NEG = 0, EXP = 1, ...;`, starting at
/// `first`), sorted by code: the tests of each op family check them against its enum.
#[cfg(test)]
pub(crate) fn shader_codes(src: &str, first: &str) -> Vec<(String, u32)> {
    let start = src
        .find(&format!("const uint {first}"))
        .expect("op-code constants in the shader");
    let decl = &src[start + "const uint".len()..];
    let decl = &decl[..decl.find(';').unwrap()];
    let mut codes: Vec<(String, u32)> = decl
        .split(',')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.trim().to_string(), v.trim().parse().unwrap())
        })
        .collect();
    codes.sort_by_key(|(_, v)| *v);
    codes
}

/// The shader's spelling of an enum variant: `AddS` → `ADD_S`.
#[cfg(test)]
pub(crate) fn shader_name(variant: &str) -> String {
    let mut name = String::new();
    for (i, c) in variant.chars().enumerate() {
        if i > 0 && c.is_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::div_magic;
    use proptest::prelude::*;

    /// `fast_div` of shaders/common.glsl, step for step on the CPU.
    fn fast_div(n: u32, d: u32, m: u32) -> u32 {
        // findMSB(d - 1) + 1
        let s = if d <= 1 {
            0
        } else {
            32 - (d - 1).leading_zeros()
        };
        let p = n as u64 * m as u64;
        let (hi, lo) = ((p >> 32) as u32, p as u32);
        ((hi << 1) | (lo >> 31)) >> s
    }

    fn check(n: u32, d: u32) {
        let q = fast_div(n, d, div_magic(d as usize));
        assert_eq!(q, n / d, "{n} / {d}");
    }

    #[test]
    fn fast_division_is_exact_at_the_edges() {
        const TOP: u32 = (1 << 31) - 1;
        let ds = [
            1,
            2,
            3,
            5,
            6,
            7,
            9,
            10,
            13,
            26,
            28,
            49,
            100,
            255,
            641,
            6700417,
            1 << 30,
        ];
        for d in ds.into_iter().chain([TOP - 1, TOP, 1 << 31]) {
            for k in [0u64, 1, 2, 3, 1000, (TOP / d) as u64] {
                for delta in [-1i64, 0, 1] {
                    let n = k as i64 * d as i64 + delta;
                    if (0..=TOP as i64).contains(&n) {
                        check(n as u32, d);
                    }
                }
            }
            check(TOP, d);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        #[test]
        fn fast_division_is_exact_below_2_pow_31(n in 0u32..(1 << 31), d in 1u32..=(1 << 31)) {
            check(n, d);
        }

        #[test]
        fn fast_division_is_exact_for_small_divisors(n in 0u32..(1 << 31), d in 1u32..=4096) {
            check(n, d);
        }
    }
}
