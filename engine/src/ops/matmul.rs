//! Matrix product, 2-D and batched, with transpose flags read through strides (no copy for
//! A^T B). Kernels `shaders/matmul*.comp`, chosen per device in [`variant`]. The product is
//! recorded lazily (`lazy::record_product`): an elementwise consumer (bias, activation, scale,
//! mask) is then computed by the matmul kernel before it stores (a fused epilogue).

use super::alloc_f32;
use crate::device::caps::{Caps, TILED_MATMUL_SHARED};
use crate::device::push::MatmulPush;
use crate::device::{Bind, Kernel, Storage};
use crate::error::{Error, Result};
use crate::lazy::{self, Epilogue};
use crate::tensor::{Shape, Tensor};
use std::sync::Arc;

impl Tensor {
    /// `self · other` for `[.., M, K] x [.., K, N]` (batch axes as in [`Tensor::matmul_t`]).
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        Tensor::matmul_t(self, other, false, false)
    }

    /// op(a) · op(b) where op transposes the last two dimensions when its flag is set.
    /// Leading (batch) dimensions must be equal, or one operand a single matrix (2-D), which
    /// is then used with every matrix of the other (as PyTorch's matmul broadcasts it): a
    /// weight `[M, K]` against a batch `[B, K, N]` gives `[B, M, N]` without copying the weight.
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
        let (lead_a, lead_b) = (&sa[..ra - 2], &sb[..rb - 2]);
        let lead = if lead_a == lead_b || rb == 2 {
            lead_a
        } else if ra == 2 {
            lead_b
        } else {
            return Err(Error::op(
                "matmul",
                format!(
                    "{}: batch dimensions differ (they must be equal, or one operand a single matrix)",
                    shapes()
                ),
            ));
        };
        // A single matrix used with every matrix of a batched other.
        let (bcast_a, bcast_b) = (ra == 2 && rb > 2, rb == 2 && ra > 2);
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
        let batch: usize = lead.iter().product();
        let mut out: Shape = lead.into();
        out.extend([m, n]);
        let value = matmul_value(a, b, ta, tb, [batch, m, ka, n], &out, &shapes)?;
        let (a2, b2) = (a.clone(), b.clone());
        Ok(Tensor::from_op_masked(
            out,
            value,
            "matmul",
            &[a, b],
            move |g, needs| {
                // C = op(A) op(B):  dop(A) = G op(B)ᵀ,  dop(B) = op(A)ᵀ G; a transposed operand
                // takes the transpose of that, written as another flag choice rather than a copy.
                // A broadcast operand's gradient sums those over the batch, as one product.
                let ga = match (needs[0], bcast_a, ta) {
                    (false, ..) => None,
                    (true, true, _) => {
                        Some(broadcast_grad(g, &b2, tb, ta, Side::A, [batch, m, ka, n])?)
                    }
                    (true, false, true) => Some(Tensor::matmul_t(&b2, g, tb, true)?),
                    (true, false, false) => Some(Tensor::matmul_t(g, &b2, false, !tb)?),
                };
                let gb = match (needs[1], bcast_b, tb) {
                    (false, ..) => None,
                    (true, true, _) => {
                        Some(broadcast_grad(g, &a2, ta, tb, Side::B, [batch, m, ka, n])?)
                    }
                    (true, false, true) => Some(Tensor::matmul_t(g, &a2, true, ta)?),
                    (true, false, false) => Some(Tensor::matmul_t(&a2, g, !ta, false)?),
                };
                Ok(vec![ga, gb])
            },
        ))
    }
}

/// Which operand of a product a gradient is for.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    A,
    B,
}

/// The gradient of a broadcast (2-D) operand of C = op(A) op(B) over `dims` = [batch, M, K, N]:
/// the sum over the batch of each matrix's gradient, computed as one product whose inner
/// dimension runs over the batch too. `other` is the batched operand (transposed by `t_other`),
/// `t_self` the broadcast operand's flag.
///   dop(A) = Σ_b G_b op(B_b)ᵀ = [G_0 … G_b] (M × bN) · [op(B_0)ᵀ; …] (bN × K)
///   dop(B) = Σ_b op(A_b)ᵀ G_b = [op(A_0)ᵀ … ] (K × bM) · [G_0; …] (bM × N)
/// The stacked G of dop(B) and the stacked B of a transposed B (A of a plain A) are the stored
/// tensors reshaped; the others take one permute.
fn broadcast_grad(
    g: &Tensor,
    other: &Tensor,
    t_other: bool,
    t_self: bool,
    side: Side,
    [batch, m, ka, n]: [usize; 4],
) -> Result<Tensor> {
    // `rows` is the side's stacked gradient factor as [R, batch·C] or [batch·R, C];
    // (x, tx) the stacked other so that the gradient of op(self) = rows · op(x).
    let stacked_rows_of = |t: &Tensor, r: usize, c: usize| -> Result<Tensor> {
        // [batch, r, c] -> [r, batch·c]
        t.reshape(&[batch, r, c])?
            .permute(&[1, 0, 2])?
            .reshape(&[r, batch * c])
    };
    let (d, x, tx) = match side {
        Side::A => {
            let d = stacked_rows_of(g, m, n)?; // [M, bN]
                                               // op(B_b)ᵀ is [N, K]: stored so when tb; else B_b [K, N] stacked as [K, bN], transposed.
            if t_other {
                (d, other.reshape(&[batch * n, ka])?, false)
            } else {
                (d, stacked_rows_of(other, ka, n)?, true)
            }
        }
        Side::B => {
            let d = g.reshape(&[batch * m, n])?; // [bM, N]
                                                 // op(A_b)ᵀ is [K, M]: stored so when ta (stacked as [K, bM]); else A_b [M, K] stacked
                                                 // as [bM, K], transposed. Here the product is x · d.
            let (x, tx) = if t_other {
                (stacked_rows_of(other, ka, m)?, false)
            } else {
                (other.reshape(&[batch * m, ka])?, true)
            };
            return if t_self {
                // stored Bᵀ = dᵀ · op(x)ᵀ
                Tensor::matmul_t(&d, &x, true, !tx)
            } else {
                Tensor::matmul_t(&x, &d, tx, false)
            };
        }
    };
    if t_self {
        // stored Aᵀ = op(x)ᵀ · dᵀ
        Tensor::matmul_t(&x, &d, !tx, true)
    } else {
        Tensor::matmul_t(&d, &x, false, tx)
    }
}

/// Rows of K per block where a long K is split for the CPU's cache (`matmul_value`): 2048
/// rows of a 288-column matrix are 2.4 MB. Measured on lavapipe (2 cores) for K = 100352:
/// blocks of 1024–2048 rows 103–110 ms, 512 110 ms, 256 117–120 ms, 3136 113 ms, none 180 ms.
const K_BLOCK: usize = 2048;

/// The inner dimension K in which to store a product's operands, for an op that can pad them
/// with zeros (conv2d's column matrix and weight): K rounded up to a multiple of 4 where this
/// device takes the CPU kernels (the vec4 one needs it; the scalar one runs several times
/// slower), else K.
pub(crate) fn padded_inner(caps: &Caps, k: usize) -> usize {
    if uses_tiled(caps) {
        k
    } else {
        k.next_multiple_of(4)
    }
}

/// Whether products run the tiled workgroup kernel on this device (see `variant`).
fn uses_tiled(caps: &Caps) -> bool {
    caps.workgroup_kernels && caps.shared_memory >= TILED_MATMUL_SHARED
}

/// A matmul kernel variant: the kernel, its workgroups, and its loop iterations per invocation
/// (`loops`; `per_k` per element of K) for drivers with a loop budget.
struct Variant {
    kernel: Kernel,
    groups: [usize; 3],
    loops: usize,
    per_k: f64,
}

/// The matmul kernel for this device and shape — the one place it is chosen (see shaders/):
/// devices with workgroup kernels and the shared memory for two 16×64 tiles take the tiled
/// one; the others (CPU drivers) take the 8-lane vec4 one when K and each operand's contiguous
/// dimension are multiples of 4, and a scalar 4×4 one otherwise. Loops per invocation: K/16
/// slices of up to ~400 iterations, K/4, K.
fn variant(caps: &Caps, [batch, m, ka, n]: [usize; 4], ta: bool, tb: bool) -> Variant {
    let vec = ka % 4 == 0 && (!ta || m % 4 == 0) && (tb || n % 4 == 0);
    if uses_tiled(caps) {
        Variant {
            kernel: Kernel::MatmulTiled,
            groups: [n.div_ceil(64), m.div_ceil(64), batch],
            loops: ka.div_ceil(16) * 400,
            per_k: 25.0,
        }
    } else if vec {
        Variant {
            kernel: Kernel::MatmulLanes,
            groups: [n.div_ceil(64), m.div_ceil(8), batch],
            loops: ka / 4,
            per_k: 0.25,
        }
    } else {
        Variant {
            kernel: Kernel::Matmul,
            groups: [n.div_ceil(32), m.div_ceil(32), batch],
            loops: ka,
            per_k: 1.0,
        }
    }
}

/// The product's values (no graph): `dims` = [batch, M, K, N]. Pending (`lazy`) when one
/// dispatch computes it; where the driver caps loop iterations per invocation (llvmpipe), a K
/// too long for one pass is split into chunks whose products are summed.
fn matmul_value(
    a: &Tensor,
    b: &Tensor,
    ta: bool,
    tb: bool,
    [batch, m, ka, n]: [usize; 4],
    out: &[usize],
    shapes: &dyn Fn() -> String,
) -> Result<Arc<lazy::Value>> {
    let ready = |st| Ok(lazy::Value::ready(out.into(), st));
    if m * n * batch == 0 {
        return ready(alloc_f32(out)?);
    }
    let ctx = Tensor::ctx()?;
    if ka == 0 {
        let st = alloc_f32(out)?;
        ctx.fill(&st, 0)?;
        return ready(st);
    }
    let Variant {
        kernel,
        groups,
        loops,
        per_k,
    } = variant(&ctx.caps, [batch, m, ka, n], ta, tb);
    if groups.iter().any(|&g| g > 65535) {
        return Err(Error::op(
            "matmul",
            format!("{}: too large for one dispatch", shapes()),
        ));
    }
    // Blocks of K whose rows stay in the CPU's cache while every workgroup reads them: the
    // vec4 kernel reads B once per 8 rows of the product and A once per 64 columns, so a
    // convolution's weight gradient (Aᵀ·B with K = N·OH·OW ≫ M, N) streamed its column
    // matrix from memory M/8 times; in blocks of K_BLOCK rows (one batched dispatch, then a
    // sum) it reads it from cache: 180 → 110 ms for [100352, 64]ᵀ · [100352, 288] on lavapipe.
    let cache_chunk =
        (kernel == Kernel::MatmulLanes && ta && !tb && ka >= 4 * K_BLOCK).then_some(K_BLOCK);
    let budget_chunk = ctx
        .caps
        .loop_budget
        .filter(|&b| loops > b)
        // Chunks of K that fit, a multiple of 16 so the vec4 path stays available.
        .map(|budget| (((budget as f64 / per_k) as usize) / 16 * 16).max(16));
    if let (Some(chunk), None) = (cache_chunk, budget_chunk) {
        if let Some(parts) = split_k_as_batch(a, b, (ta, tb), [batch, m, ka, n], chunk) {
            return crate::grad_mode::no_grad(|| {
                let y = parts?.reshape(out)?;
                ready(y.storage()?.clone())
            });
        }
    }
    if let Some(budget_chunk) = budget_chunk {
        let chunk = budget_chunk.min(cache_chunk.unwrap_or(usize::MAX));
        if let Some(parts) = split_k_as_batch(a, b, (ta, tb), [batch, m, ka, n], chunk) {
            return crate::grad_mode::no_grad(|| {
                let y = parts?.reshape(out)?;
                ready(y.storage()?.clone())
            });
        }
        return crate::grad_mode::no_grad(|| {
            let (ra, rb) = (a.rank() as isize, b.rank() as isize);
            let (axa, axb) = (
                if ta { ra - 2 } else { ra - 1 },
                if tb { rb - 1 } else { rb - 2 },
            );
            let mut acc: Option<Tensor> = None;
            let mut k0 = 0;
            while k0 < ka {
                let len = chunk.min(ka - k0);
                let (pa, pb) = (a.narrow(axa, k0, len)?, b.narrow(axb, k0, len)?);
                let part = Tensor::leaf_value(
                    out.into(),
                    matmul_value(&pa, &pb, ta, tb, [batch, m, len, n], out, shapes)?,
                );
                acc = Some(match acc {
                    None => part,
                    Some(s) => s.add(&part)?,
                });
                k0 += len;
            }
            ready(acc.expect("K > 0").storage()?.clone())
        });
    }
    lazy::record_product(
        (a.storage()?, a.shape()),
        (b.storage()?, b.shape()),
        (ta, tb),
        [batch, m, ka, n],
        out,
    )
}

/// A product whose K is too long for one pass, as a batch of products over equal chunks of K
/// computed side by side in one dispatch, then summed in chunk order — where the chunks are
/// free: Aᵀ stored [K, M] and B stored [K, N] are split into row blocks by a reshape (a
/// convolution's weight gradient, K = N·OH·OW, ran its chunks one after another on one
/// workgroup each and copied every chunk out first). `None` (chunks in sequence) for other
/// layouts, a single matrix with a batch, or a K without a divisor into chunks of at most
/// `chunk` (keeping the vec4 kernel's multiple of 4 where K had it).
fn split_k_as_batch(
    a: &Tensor,
    b: &Tensor,
    (ta, tb): (bool, bool),
    [batch, m, ka, n]: [usize; 4],
    chunk: usize,
) -> Option<Result<Tensor>> {
    if !ta || tb || a.rank() != b.rank() {
        return None;
    }
    let first = ka.div_ceil(chunk);
    let s = (first..=first * 4).find(|&s| ka % s == 0 && (ka % 4 != 0 || (ka / s) % 4 == 0))?;
    let kc = ka / s;
    Some((|| {
        let a3 = a.reshape(&[batch * s, kc, m])?;
        let b3 = b.reshape(&[batch * s, kc, n])?;
        Tensor::matmul_t(&a3, &b3, true, false)?
            .reshape(&[batch, s, m, n])?
            .sum_axis(1, false)
    })())
}

/// Dispatches the product op(A) · op(B) of `dims` = [batch, M, K, N] into `out` (checked by
/// [`Tensor::matmul_t`]), with its consumer's tree fused in when `epilogue` is given: the same
/// kernel variant, so the same product bits, then the tree before the store.
pub(crate) fn launch(
    (a, shape_a): (&Storage, &[usize]),
    (b, shape_b): (&Storage, &[usize]),
    (ta, tb): (bool, bool),
    [batch, m, ka, n]: [usize; 4],
    out: &Storage,
    epilogue: Option<&Epilogue>,
) -> Result<()> {
    let ctx = Tensor::ctx()?;
    let Variant { kernel, groups, .. } = variant(&ctx.caps, [batch, m, ka, n], ta, tb);
    let spec = [ta as u32, tb as u32];
    let push = MatmulPush {
        m: m as u32,
        n: n as u32,
        k: ka as u32,
        // A single matrix (2-D) is used with every matrix of the batch: stride 0.
        batch_a: if shape_a.len() == 2 {
            0
        } else {
            (m * ka) as u32
        },
        batch_b: if shape_b.len() == 2 {
            0
        } else {
            (ka * n) as u32
        },
        batch_c: (m * n) as u32,
    };
    let mut binds = vec![Bind::texels(a), Bind::texels(b), Bind::write(out)];
    let groups = groups.map(|g| g as u32);
    let Some(e) = epilogue else {
        return ctx.dispatch(kernel, &spec, &binds, &push, groups);
    };
    let template = match kernel {
        Kernel::MatmulTiled => include_str!("../../../shaders/matmul_tiled.comp"),
        Kernel::MatmulLanes => include_str!("../../../shaders/matmul_lanes.comp"),
        _ => include_str!("../../../shaders/matmul.comp"),
    };
    let source = lazy::fused_variant(template, &spec, &e.pieces)?;
    binds.extend(e.product.as_deref().map(Bind::write));
    binds.extend(e.pieces.leaves.iter().map(|l| Bind::texels(l)));
    let mut words = bytemuck::bytes_of(&push).to_vec();
    words.extend_from_slice(bytemuck::cast_slice(&e.pieces.push));
    let label = format!("{kernel:?}+Fused {} ops", e.pieces.nodes);
    ctx.dispatch_generated(&source, &label, &binds, &words, groups)
}
