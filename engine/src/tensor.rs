//! Layer 2: tensors. A `Tensor` is an f32 array on the device with a shape, an optional
//! autograd node (how it was made), and, for leaves, an accumulated gradient. Storage is always
//! contiguous row-major; movement ops copy (one strided-copy kernel) so every kernel can assume
//! dense inputs. `IntTensor` holds u32 labels and indices.

use crate::device::{context, Context, Storage};
use crate::error::{Error, Result};
use crate::lazy::Value;
use smallvec::SmallVec;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A shape: up to four dimensions inline, more on the heap.
pub type Shape = SmallVec<[usize; 4]>;

/// The gradient rule of an op: maps the gradient of its output to gradients of its inputs
/// (`None` where an input gets none).
/// A backward rule: the upstream gradient and, per input, whether that input needs a gradient
/// (a rule computes nothing for an input that needs none — e.g. a mask's constant operand).
pub(crate) type BackwardFn =
    Box<dyn Fn(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

pub(crate) struct Node {
    pub name: &'static str,
    pub inputs: Vec<Tensor>,
    pub backward: BackwardFn,
}

pub(crate) struct Inner {
    pub id: u64,
    pub shape: Shape,
    /// The values: computed, or a pending elementwise tree (`lazy`).
    pub value: Arc<Value>,
    pub requires_grad: bool,
    pub node: Option<Node>,
    pub grad: Mutex<Option<Tensor>>,
}

/// An f32 tensor on the device. Cloning is cheap (shared storage and graph node).
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

/// What an op's result is made from: a buffer it computed, or a (possibly pending) value.
pub(crate) trait IntoValue {
    fn into_value(self, shape: &Shape) -> Arc<Value>;
}

impl IntoValue for Arc<Value> {
    fn into_value(self, _: &Shape) -> Arc<Value> {
        self
    }
}

impl IntoValue for Arc<Storage> {
    fn into_value(self, shape: &Shape) -> Arc<Value> {
        Value::ready(shape.clone(), self)
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Checks that `len` 32-bit words fill `shape`, then uploads them.
fn upload_words(
    op: &'static str,
    words: impl Iterator<Item = [u8; 4]>,
    len: usize,
    shape: &[usize],
) -> Result<Arc<Storage>> {
    let n = checked_numel(op, shape)?;
    if len != n {
        return Err(Error::op(
            op,
            format!("{len} values do not fill shape {shape:?} ({n} elements)"),
        ));
    }
    let bytes: Vec<u8> = words.flatten().collect();
    context()?.upload(&bytes)
}

/// The element count of a user-given shape, refusing shapes whose count or f32 byte size
/// overflows (so later `numel` calls on accepted shapes cannot overflow).
pub(crate) fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|n| n.checked_mul(4).is_some())
        .ok_or_else(|| Error::op(op, format!("shape {shape:?} has too many elements")))
}

impl Tensor {
    /// A tensor that is not the result of a recorded op (a leaf).
    pub(crate) fn leaf(shape: Shape, storage: Arc<Storage>) -> Tensor {
        let value = Value::ready(shape.clone(), storage);
        Tensor::leaf_value(shape, value)
    }

    /// A leaf over a possibly pending value.
    pub(crate) fn leaf_value(shape: Shape, value: Arc<Value>) -> Tensor {
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape,
            value,
            requires_grad: false,
            node: None,
            grad: Mutex::new(None),
        }))
    }

    /// The result of an op. The backward rule is kept only when gradients are being recorded
    /// and some input needs one.
    pub(crate) fn from_op(
        shape: Shape,
        value: impl IntoValue,
        name: &'static str,
        inputs: &[&Tensor],
        backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        Self::from_op_masked(shape, value, name, inputs, move |g, _| backward(g))
    }

    /// [`Tensor::from_op`] for ops with several differentiable inputs: the rule is told which
    /// inputs need a gradient and returns `None` for the others without computing them.
    pub(crate) fn from_op_masked(
        shape: Shape,
        value: impl IntoValue,
        name: &'static str,
        inputs: &[&Tensor],
        backward: impl Fn(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        let value = value.into_value(&shape);
        let track = crate::grad_mode::is_grad_enabled() && inputs.iter().any(|t| t.0.requires_grad);
        let node = track.then(|| Node {
            name,
            inputs: inputs.iter().map(|t| (*t).clone()).collect(),
            backward: Box::new(backward),
        });
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape,
            value,
            requires_grad: track,
            node,
            grad: Mutex::new(None),
        }))
    }

    /// Uploads host data. `data.len()` must equal the product of `shape`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        Self::from_slice(&data, shape)
    }

    /// Uploads host data. `data.len()` must equal the product of `shape`.
    pub fn from_slice(data: &[f32], shape: &[usize]) -> Result<Tensor> {
        let st = upload_words(
            "from_vec",
            data.iter().map(|v| v.to_ne_bytes()),
            data.len(),
            shape,
        )?;
        Ok(Tensor::leaf(shape.into(), st))
    }

    /// A rank-0 tensor.
    pub fn scalar(v: f32) -> Result<Tensor> {
        Self::full(&[], v)
    }

    /// A tensor filled with `value` (recorded, no host transfer).
    pub fn full(shape: &[usize], value: f32) -> Result<Tensor> {
        checked_numel("full", shape)?;
        let ctx = context()?;
        let st = ctx.alloc(4 * numel(shape) as u64)?;
        if numel(shape) > 0 {
            ctx.fill(&st, value.to_bits())?;
        }
        Ok(Tensor::leaf(shape.into(), st))
    }

    pub fn zeros(shape: &[usize]) -> Result<Tensor> {
        Self::full(shape, 0.0)
    }

    pub fn ones(shape: &[usize]) -> Result<Tensor> {
        Self::full(shape, 1.0)
    }

    pub fn zeros_like(&self) -> Result<Tensor> {
        Self::zeros(self.shape())
    }

    /// Reads the values back (submits all recorded work).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let bytes = context()?.download(self.storage()?, 4 * self.numel() as u64)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::op(
                "item",
                format!(
                    "shape {:?} has {} elements, not 1",
                    self.shape(),
                    self.numel()
                ),
            ));
        }
        Ok(self.to_vec()?[0])
    }

    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }

    /// A stable identity (for optimiser state keyed by parameter).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// The same values as a leaf that records gradients (`x.requires_grad()` in PyTorch terms).
    pub fn requires_grad(&self) -> Tensor {
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape: self.0.shape.clone(),
            value: self.0.value.clone(),
            requires_grad: true,
            node: None,
            grad: Mutex::new(None),
        }))
    }

    pub fn is_requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// The same values, cut from the graph: no gradient flows through (stop-gradient).
    pub fn detach(&self) -> Tensor {
        Tensor::leaf_value(self.0.shape.clone(), self.0.value.clone())
    }

    /// The gradient accumulated on this leaf by `backward`, if any.
    pub fn grad(&self) -> Option<Tensor> {
        self.0
            .grad
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn set_grad(&self, g: Option<Tensor>) {
        *self.0.grad.lock().unwrap_or_else(|p| p.into_inner()) = g;
    }

    /// The device buffer, computing pending elementwise work first (`lazy`).
    pub(crate) fn storage(&self) -> Result<&Arc<Storage>> {
        self.0.value.storage()
    }

    /// Computes the values now if they are pending (an optimiser's new parameters and state,
    /// which every later step reads: computing them once keeps later trees small).
    pub fn realize(&self) -> Result<()> {
        self.storage().map(|_| ())
    }

    /// Computes several tensors' values now, pending ones of one shape in one kernel that
    /// writes each (an optimiser's new parameter and state: a moment the parameter's update
    /// reads is computed once, and stored). The same values as `realize` on each.
    pub fn realize_all(ts: &[&Tensor]) -> Result<()> {
        let values: Vec<&Arc<Value>> = ts.iter().map(|t| &t.0.value).collect();
        crate::lazy::compute_together(&values)
    }

    /// The values and the shape they are read as, for recording an elementwise op.
    pub(crate) fn lazy_input(&self) -> (&Arc<Value>, &[usize]) {
        (&self.0.value, &self.0.shape)
    }

    pub(crate) fn ctx() -> Result<&'static Context> {
        context()
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{:?}", self.shape())?;
        if let Some(n) = &self.0.node {
            write!(f, " <{}>", n.name)?;
        }
        Ok(())
    }
}

/// u32 labels or indices on the device. Values given from the host are remembered so that
/// index ops can validate them without a read-back.
#[derive(Clone)]
pub struct IntTensor {
    pub(crate) shape: Shape,
    pub(crate) storage: Arc<Storage>,
    pub(crate) host: Option<Arc<Vec<u32>>>,
}

impl IntTensor {
    pub fn from_vec(data: Vec<u32>, shape: &[usize]) -> Result<IntTensor> {
        let storage = upload_words(
            "IntTensor::from_vec",
            data.iter().map(|v| v.to_ne_bytes()),
            data.len(),
            shape,
        )?;
        Ok(IntTensor {
            shape: shape.into(),
            storage,
            host: Some(Arc::new(data)),
        })
    }

    pub fn to_vec(&self) -> Result<Vec<u32>> {
        if let Some(h) = &self.host {
            return Ok(h.as_ref().clone());
        }
        let bytes = context()?.download(&self.storage, 4 * numel(&self.shape) as u64)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// The largest value, when known on the host (for index validation).
    pub(crate) fn host_max(&self) -> Option<u32> {
        self.host
            .as_ref()
            .map(|h| h.iter().copied().max().unwrap_or(0))
    }
}

impl fmt::Debug for IntTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IntTensor{:?}", self.shape)
    }
}
