//! Matrix product, 2-D and batched, with transpose flags read through strides (no copy for
//! A^T B). Kernel `shaders/matmul.comp`; the register tile is chosen per device.

use super::alloc_f32;
use crate::device::{Bind, Kernel};
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};

impl Tensor {
    /// `self · other` for `[.., M, K] x [.., K, N]`.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        Tensor::matmul_t(self, other, false, false)
    }

    /// op(a) · op(b) where op transposes the last two dimensions when its flag is set.
    /// Leading (batch) dimensions must be equal.
    pub fn matmul_t(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Result<Tensor> {
        let (sa, sb) = (a.shape(), b.shape());
        let shapes = || {
            format!(
                "{sa:?}{} x {sb:?}{}",
                if ta { "ᵀ" } else { "" },
                if tb { "ᵀ" } else { "" }
            )
        };
        if sa.len() < 2 || sb.len() < 2 {
            return Err(Error::op(
                "matmul",
                format!("{}: both operands need at least 2 dimensions", shapes()),
            ));
        }
        let (ra, rb) = (sa.len(), sb.len());
        if sa[..ra - 2] != sb[..rb - 2] {
            return Err(Error::op(
                "matmul",
                format!("{}: batch dimensions differ", shapes()),
            ));
        }
        let (m, ka) = if ta {
            (sa[ra - 1], sa[ra - 2])
        } else {
            (sa[ra - 2], sa[ra - 1])
        };
        let (kb, n) = if tb {
            (sb[rb - 1], sb[rb - 2])
        } else {
            (sb[rb - 2], sb[rb - 1])
        };
        if ka != kb {
            return Err(Error::op(
                "matmul",
                format!("{}: inner dimensions differ ({ka} vs {kb})", shapes()),
            ));
        }
        let batch: usize = sa[..ra - 2].iter().product();
        let mut out: Shape = sa[..ra - 2].into();
        out.extend([m, n]);
        let st = alloc_f32(&out)?;
        if m * n * batch > 0 {
            if ka == 0 {
                Tensor::ctx()?.fill(&st, 0)?;
            } else {
                let ctx = Tensor::ctx()?;
                // The vec4 path walks K in steps of 4 and loads vec4s along each operand's
                // contiguous dimension, so all of those must be multiples of 4. It uses a fixed
                // 8 x 8 tile, the scalar path 4 x 4 (see shaders/matmul.comp).
                let vec = ka % 4 == 0 && (!ta || m % 4 == 0) && (tb || n % 4 == 0);
                let push = [m, n, ka, m * ka, ka * n, m * n].map(|v| v as u32);
                let (sa_, sb_) = (a.storage(), b.storage());
                // K loop iterations: K/4 with vec4 loads, K without.
                ctx.check_loop("matmul", if vec { ka / 4 } else { ka }, shapes)?;
                let lanes = vec && !ctx.group_rows;
                let binds = if lanes {
                    [Bind::texels(sa_), Bind::texels(sb_), Bind::write(&st)]
                } else {
                    [Bind::read(sa_), Bind::read(sb_), Bind::write(&st)]
                };
                let (kernel, spec, groups) = if lanes {
                    // CPU drivers: 8-lane workgroups sharing A rows, inputs read as texel
                    // buffers (shaders/matmul_lanes.comp).
                    (
                        Kernel::MatmulLanes,
                        vec![ta as u32, tb as u32],
                        [n.div_ceil(64), m.div_ceil(8), batch],
                    )
                } else {
                    let (tm, tn) = if vec { (8, 8) } else { (4, 4) };
                    let spec = vec![tm as u32, tn as u32, ta as u32, tb as u32, vec as u32];
                    (
                        Kernel::Matmul,
                        spec,
                        [n.div_ceil(8 * tn), m.div_ceil(8 * tm), batch],
                    )
                };
                if groups.iter().any(|&g| g > 65535) {
                    return Err(Error::op(
                        "matmul",
                        format!("{}: too large for one dispatch", shapes()),
                    ));
                }
                ctx.dispatch(kernel, &spec, &binds, &push, groups.map(|g| g as u32))?;
            }
        }
        let (a2, b2) = (a.clone(), b.clone());
        Ok(Tensor::from_op(out, st, "matmul", &[a, b], move |g| {
            // C = op(A) op(B):  dop(A) = G op(B)ᵀ,  dop(B) = op(A)ᵀ G; a transposed operand
            // takes the transpose of that, written as another flag choice rather than a copy.
            let ga = if ta {
                Tensor::matmul_t(&b2, g, tb, true)?
            } else {
                Tensor::matmul_t(g, &b2, false, !tb)?
            };
            let gb = if tb {
                Tensor::matmul_t(g, &a2, true, ta)?
            } else {
                Tensor::matmul_t(&a2, g, !ta, false)?
            };
            Ok(vec![Some(ga), Some(gb)])
        }))
    }
}
