//! Layer 2, under `tensor`: the lazy graph of elementwise work. A unary, binary or `where` op
//! does not dispatch; it records an [`Expr`] over its inputs and returns a pending [`Value`].
//! A value is computed when something needs its memory (a reduction, a matmul, a read-back, a
//! plugin call): then its whole pending tree of elementwise ops runs as **one generated kernel**
//! (`codegen.rs`, compiled at run time by `device/runtime.rs`), reading only the tree's
//! materialised leaves and writing only the root. Because autograd's backward rules are written
//! with the same ops, the backward pass fuses the same way.
//!
//! A matrix product is pending too ([`record_product`]): alone it runs its hand-written kernel;
//! inlined into an elementwise tree (a bias, an activation, a scale, a mask) it becomes that
//! tree's base, and the matmul kernel computes the tree from each product element before it
//! stores (a fused epilogue, `codegen.rs`: one pass over the result instead of three).
//!
//! What may be inlined into a consumer's tree (otherwise it is computed first and read as a
//! leaf): a pending value **of the consumer's shape** (so every node of a fused tree has the
//! root's shape and only leaves broadcast: no value is recomputed per broadcast element) that
//! **no other consumer has inlined** (a value with two consumers is computed once, in its own
//! kernel, never twice), within the size limits below. `VKGRAD_FUSION=0` (or
//! [`set_fusion`]) computes every op at once with its hand-written kernel, as before fusion.

mod codegen;
mod kernels;

pub(crate) use codegen::{fused_variant, Epilogue, Pieces};
pub(crate) use kernels::{dispatch_with_prologue, prologue_binding};

use crate::device::Storage;
use crate::error::Result;
use crate::tensor::{numel, Shape};
use smallvec::SmallVec;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Nodes per fused kernel (a bound on generated code size and on the host work per kernel).
const MAX_NODES: usize = 48;
/// Distinct leaf buffers per fused kernel (each is a binding).
const MAX_LEAVES: usize = 8;
/// Push-constant words per fused kernel: Vulkan guarantees 128 bytes.
const MAX_PUSH_WORDS: usize = 32;

/// One elementwise op: the op codes are those of `shaders/elementwise.glsl`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    /// `unary_f(code, x, s)`.
    Unary { code: u32, s: f32 },
    /// `binary_f(code, a, b)`.
    Binary { code: u32 },
    /// `mask != 0 ? a : b`.
    Where,
    /// The matrix product op(A) · op(B) of two computed leaves (`ops/matmul.rs`), `dims` =
    /// [batch, M, K, N]: the base of a fused epilogue, never inside an elementwise kernel.
    Product {
        ta: bool,
        tb: bool,
        dims: [usize; 4],
    },
}

impl Op {
    /// Whether the scalar `s` is read (it then travels as a push constant).
    fn reads_scalar(self) -> bool {
        // POWF, the *_S forms and DIV_S (shaders/elementwise.glsl).
        matches!(self, Op::Unary { code, .. } if (9..=18).contains(&code) || code == 21)
    }
}

/// An input of an op: a pending value inlined into this tree, or a computed buffer read with
/// broadcasting from its own shape.
#[derive(Clone)]
pub(crate) enum Arg {
    Inline(Arc<Value>),
    Leaf { st: Arc<Storage>, shape: Shape },
}

pub(crate) struct Expr {
    pub op: Op,
    pub args: SmallVec<[Arg; 3]>,
}

/// Values one multi-output kernel computes ([`compute_together`]): each is a storage-buffer
/// binding, of which Vulkan guarantees 4 per stage.
const MAX_OUTPUTS: usize = 4;

/// Upper bounds on what a tree needs, summed when trees are combined.
#[derive(Clone, Copy, Default)]
struct Size {
    nodes: usize,
    leaves: usize,
    /// Scalars and leaf strides (the element count, four `zero` words, the shape and its
    /// fast-division multipliers come on top).
    push_words: usize,
}

impl Size {
    fn fits(&self, rank: usize) -> bool {
        self.nodes <= MAX_NODES
            && self.leaves <= MAX_LEAVES
            && 5 + 2 * rank + self.push_words <= MAX_PUSH_WORDS
    }
}

/// A tensor's values: computed (a device buffer), or pending (an elementwise tree).
pub(crate) struct Value {
    /// The shape the tree computes (a reshaped view of a pending value has another shape and
    /// is then computed before it is inlined).
    shape: Shape,
    ready: OnceLock<Arc<Storage>>,
    pending: Mutex<Option<Arc<Expr>>>,
    /// Whether a consumer's tree has inlined this value.
    inlined: AtomicBool,
    size: Size,
}

impl Value {
    pub fn ready(shape: Shape, st: Arc<Storage>) -> Arc<Value> {
        let v = Value {
            shape,
            ready: OnceLock::new(),
            pending: Mutex::new(None),
            inlined: AtomicBool::new(false),
            size: Size::default(),
        };
        let _ = v.ready.set(st);
        Arc::new(v)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.get().is_some()
    }

    /// Whether the value is a pending matrix product (which only a matmul kernel computes).
    fn is_product(&self) -> bool {
        self.expr()
            .is_some_and(|e| matches!(e.op, Op::Product { .. }))
    }

    /// The device buffer, computing the pending tree first if needed.
    pub fn storage(&self) -> Result<&Arc<Storage>> {
        if let Some(st) = self.ready.get() {
            return Ok(st);
        }
        // Held while computing, so two threads never compute one value twice; an error
        // leaves the value pending (a retry reports the same error).
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(st) = self.ready.get() {
            return Ok(st);
        }
        let expr = pending
            .clone()
            .expect("a value is either computed or pending");
        let st = kernels::run(&self.shape, &expr)?;
        let _ = self.ready.set(st);
        *pending = None;
        Ok(self.ready.get().expect("just set"))
    }

    /// The pending tree, if the value has not been computed.
    fn expr(&self) -> Option<Arc<Expr>> {
        if self.is_ready() {
            return None;
        }
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Computes several values, and where some are pending trees of one shape, computes those in
/// one generated kernel that writes each (an optimiser's new parameter and its moments: the
/// moments, which the parameter's tree reads, are computed once, in registers, and stored).
/// The values are those each would have computed alone, bit for bit (`tests/tests/fusion.rs`).
/// Values of other shapes, past [`MAX_OUTPUTS`], over the leaf or push-constant limits, or with
/// fusion off are computed one by one.
pub(crate) fn compute_together(values: &[&Arc<Value>]) -> Result<()> {
    let mut group: Vec<Arc<Value>> = Vec::new();
    if fusion_enabled() {
        for v in values {
            let fits = group.first().is_none_or(|g| g.shape == v.shape);
            let seen = group.iter().any(|g| Arc::ptr_eq(g, v));
            if fits
                && !seen
                && group.len() < MAX_OUTPUTS
                && numel(&v.shape) > 0
                && v.expr().is_some()
                && !v.is_product()
            {
                group.push((*v).clone());
            }
        }
    }
    if group.len() >= 2 {
        let ctx = crate::device::context()?;
        let outs = group
            .iter()
            .map(|v| ctx.alloc(4 * numel(&v.shape) as u64))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Storage> = outs.iter().map(|o| o.as_ref()).collect();
        if codegen::run_fused_values(&group[0].shape, &group, &refs)?.is_some() {
            for (v, st) in group.iter().zip(outs) {
                // Another thread may have computed it meanwhile: the same bits; keep its.
                let mut pending = v.pending.lock().unwrap_or_else(|p| p.into_inner());
                if v.ready.set(st).is_ok() {
                    *pending = None;
                }
            }
        }
    }
    for v in values {
        v.storage()?;
    }
    Ok(())
}

/// A pending value's tree as a prologue for a consumer kernel that reads the value once per
/// element (a reduction): the consumer computes it in registers instead of reading it from
/// memory. None — the consumer reads the value's buffer — when fusion is off, the value is
/// computed, another consumer has inlined it (it is then computed once, in its own kernel), or
/// the tree's push constants and the consumer's `own_push_words` exceed the limit. Leaf `i` is
/// declared at `binding(i)`. `walk`: (n, inner) when the consumer reads the value as
/// [outer, n, inner] along its middle axis (a reduction over it; a row-wise op, inner = 1);
/// where that is an axis of the value's own shape (the axis of size n with `inner` elements
/// after it — a reshape of the value may view it otherwise), the prologue walks along it
/// (`codegen::prologue_pieces`).
pub(crate) fn prologue(
    v: &Arc<Value>,
    own_push_words: usize,
    walk: Option<(usize, usize)>,
    binding: impl Fn(usize) -> usize,
) -> Result<Option<Pieces>> {
    if !fusion_enabled() || v.is_ready() || v.inlined.load(Ordering::Acquire) || v.is_product() {
        return Ok(None);
    }
    let s = &v.shape;
    let axis = walk.and_then(|(n, inner)| {
        (0..s.len()).find(|&a| s[a] == n && s[a + 1..].iter().product::<usize>() == inner)
    });
    let Some(p) = codegen::prologue_pieces(v, axis, binding)? else {
        return Ok(None);
    };
    if p.leaves.is_empty()
        || own_push_words + p.push.len() > MAX_PUSH_WORDS
        || v.inlined.swap(true, Ordering::AcqRel)
    {
        return Ok(None);
    }
    Ok(Some(p))
}

static FUSION: AtomicU8 = AtomicU8::new(2); // 2 = not yet read from the environment

thread_local! {
    static FUSION_HERE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Whether elementwise ops are recorded lazily and fused (`VKGRAD_FUSION`, default on; a
/// thread's [`set_fusion`] overrides it for that thread).
pub fn fusion_enabled() -> bool {
    if let Some(f) = FUSION_HERE.with(|f| f.get()) {
        return f;
    }
    match FUSION.load(Ordering::Relaxed) {
        2 => {
            let on = std::env::var("VKGRAD_FUSION").map_or(true, |v| v.trim() != "0");
            FUSION.store(on as u8, Ordering::Relaxed);
            on
        }
        v => v == 1,
    }
}

/// Turns fusion on or off for the calling thread (`None`: back to `VKGRAD_FUSION`); ops run on
/// the thread that calls them, so a test can compare both on one device.
pub fn set_fusion(on: Option<bool>) {
    FUSION_HERE.with(|f| f.set(on));
}

/// Refuses, when the op is called (not later, when the value is computed), a result larger than
/// a kernel may bind (inputs broadcast to the result, so they are no larger).
fn check_limits(op: Op, shape: &[usize]) -> Result<()> {
    let ctx = crate::device::context()?;
    let (max_bytes, max_texels) = ctx.buffer_limits();
    let bytes = 4 * numel(shape) as u64;
    // Buffers come from the pool in power-of-two sizes; a texel view covers the whole buffer.
    let texels = bytes.max(256).next_power_of_two() / 16;
    let (size, limit, what) = if bytes > max_bytes {
        (bytes, max_bytes, "bytes (maxStorageBufferRange)")
    } else if texels > max_texels {
        (texels, max_texels, "texels (maxTexelBufferElements)")
    } else {
        return Ok(());
    };
    Err(crate::error::Error::Other(format!(
        "{op:?}: a tensor of {bytes} bytes is larger than {} allows: {size} > {limit} {what}",
        ctx.info.name
    )))
}

/// Records the matrix product of the computed buffers `a` and `b` (`dims` = [batch, M, K, N],
/// transposes as flagged), of `shape`. `ops/matmul.rs` has checked the shapes and that one
/// dispatch computes it. With fusion off it is computed at once.
pub(crate) fn record_product(
    a: (&Arc<Storage>, &[usize]),
    b: (&Arc<Storage>, &[usize]),
    (ta, tb): (bool, bool),
    dims: [usize; 4],
    shape: &[usize],
) -> Result<Arc<Value>> {
    let leaf = |(st, shape): (&Arc<Storage>, &[usize])| Arg::Leaf {
        st: st.clone(),
        shape: shape.into(),
    };
    let value = Arc::new(Value {
        shape: shape.into(),
        ready: OnceLock::new(),
        pending: Mutex::new(Some(Arc::new(Expr {
            op: Op::Product { ta, tb, dims },
            args: [leaf(a), leaf(b)].into_iter().collect(),
        }))),
        inlined: AtomicBool::new(false),
        // In a consumer's tree the product counts as one node and, should it be computed
        // first (a second product in one tree), one leaf; the matmul's own push constants
        // take five words more than an elementwise kernel's element count.
        size: Size {
            nodes: 1,
            leaves: 1,
            push_words: 5,
        },
    });
    if !fusion_enabled() {
        value.storage()?;
    }
    Ok(value)
}

/// Records `op` over `inputs` (each a value and the shape it is read as), producing `shape`.
/// With fusion off the value is computed at once.
pub(crate) fn record(
    op: Op,
    inputs: &[(&Arc<Value>, &[usize])],
    shape: &[usize],
) -> Result<Arc<Value>> {
    check_limits(op, shape)?;
    let fuse = fusion_enabled();
    let mut args: SmallVec<[Arg; 3]> = SmallVec::new();
    let mut size = Size {
        nodes: 1,
        leaves: 0,
        push_words: op.reads_scalar() as usize,
    };
    // Inline what may be inlined, within the limits; anything else is computed and read.
    for (i, &(v, view)) in inputs.iter().enumerate() {
        let again = inputs[..i].iter().any(|(w, _)| Arc::ptr_eq(v, w));
        let inline = fuse
            && !v.is_ready()
            && view == shape
            && v.shape.as_slice() == view
            && (again || !v.inlined.swap(true, Ordering::AcqRel));
        if inline {
            if !again {
                size.nodes += v.size.nodes;
                size.leaves += v.size.leaves;
                size.push_words += v.size.push_words;
            }
            args.push(Arg::Inline(v.clone()));
        } else {
            size.leaves += 1;
            size.push_words += shape.len();
            args.push(Arg::Leaf {
                st: v.storage()?.clone(),
                shape: view.into(),
            });
        }
    }
    if !size.fits(shape.len()) {
        // Too big to grow: compute the inlined inputs now; this op starts a new tree.
        size = Size {
            nodes: 1,
            leaves: args.len(),
            push_words: op.reads_scalar() as usize + args.len() * shape.len(),
        };
        for a in &mut args {
            if let Arg::Inline(v) = a {
                *a = Arg::Leaf {
                    st: v.storage()?.clone(),
                    shape: shape.into(),
                };
            }
        }
    }
    let value = Arc::new(Value {
        shape: shape.into(),
        ready: OnceLock::new(),
        pending: Mutex::new(Some(Arc::new(Expr { op, args }))),
        inlined: AtomicBool::new(false),
        size,
    });
    if !fuse || numel(shape) == 0 {
        value.storage()?;
    }
    Ok(value)
}
