//! Index ops (`shaders/index.comp`): index_select, gather and scatter_add, plus the u32 -> f32
//! conversion of integer tensors. Indices given from the host are validated before dispatch.

use super::{alloc_f32, div_magic, norm_axis};
use crate::device::push::IndexPush;
use crate::device::{grid, Bind, Kernel, Storage};
use crate::error::{Error, Result};
use crate::tensor::{numel, IntTensor, Shape, Tensor};

/// Sizes of a tensor viewed as [outer, n, inner] around `axis`.
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

fn check_indices(
    op: &'static str,
    idx: &IntTensor,
    bound: usize,
    shape: &[usize],
    axis: usize,
) -> Result<()> {
    if let Some(max) = idx.host_max() {
        if idx.numel() > 0 && max as usize >= bound {
            return Err(Error::op(
                op,
                format!("index {max} is out of range for axis {axis} of {shape:?} (size {bound})"),
            ));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn index_kernel(
    mode: u32,
    src: &Storage,
    idx: &IntTensor,
    upd: &Storage,
    out: &Storage,
    outputs: usize,
    sizes: [usize; 4],
    istrides: [usize; 3],
) -> Result<()> {
    if outputs == 0 {
        return Ok(());
    }
    let [outer, n_src, n_idx, inner] = sizes.map(|v| v as u32);
    let [iso, isj, isk] = istrides.map(|v| v as u32);
    let push = IndexPush {
        outer,
        n_src,
        n_idx,
        inner,
        iso,
        isj,
        isk,
        m_inner: div_magic(sizes[3]),
        m_src: div_magic(sizes[1]),
        m_idx: div_magic(sizes[2]),
    };
    Tensor::ctx()?.dispatch(
        Kernel::Index,
        &[mode],
        &[
            Bind::texels(src),
            Bind::read(&idx.storage),
            Bind::texels(upd),
            Bind::write(out),
        ],
        &push,
        grid(outputs as u64, 256),
    )
}

const GATHER: u32 = 0;
const SCATTER_ADD: u32 = 1;
const TO_F32: u32 = 2;

/// out[o, r, k] = base[o, r, k] + sum over j with idx(o,j,k) == r of upd[o, j, k].
fn scatter_add_raw(
    base: &Tensor,
    idx: &IntTensor,
    upd: &Tensor,
    axis: usize,
    istrides: [usize; 3],
    n_idx: usize,
) -> Result<Tensor> {
    let (outer, n_src, inner) = around(base.shape(), axis);
    Tensor::ctx()?.check_loop("scatter_add", n_idx, || {
        format!("{n_idx} indices along axis {axis} of {:?}", base.shape())
    })?;
    let st = alloc_f32(base.shape())?;
    index_kernel(
        SCATTER_ADD,
        base.storage()?,
        idx,
        upd.storage()?,
        &st,
        base.numel(),
        [outer, n_src, n_idx, inner],
        istrides,
    )?;
    Ok(Tensor::leaf(base.0.shape.clone(), st))
}

/// The gradient of a gather-like op: the output gradient added at its indices into zeros of the
/// source's shape.
fn scatter_into_zeros(
    full: &[usize],
    idx: &IntTensor,
    g: &Tensor,
    axis: usize,
    istrides: [usize; 3],
    n_idx: usize,
) -> Result<Tensor> {
    scatter_add_raw(&Tensor::zeros(full)?, idx, g, axis, istrides, n_idx)
}

impl IntTensor {
    /// The values as f32 (e.g. labels for building masks with `eq`).
    pub fn to_f32(&self) -> Result<Tensor> {
        let st = alloc_f32(&self.shape)?;
        let n = self.numel();
        index_kernel(TO_F32, &st, self, &st, &st, n, [n, 0, 0, 0], [0, 0, 0])?;
        Ok(Tensor::leaf(self.shape.clone(), st))
    }
}

impl Tensor {
    /// Picks slices along `axis` by a 1-D index (`index_select`; rows when axis = 0).
    /// Gradient: the rows' gradients added back at their indices.
    pub fn index_select(&self, axis: isize, idx: &IntTensor) -> Result<Tensor> {
        let ax = norm_axis("index_select", axis, self.rank())?;
        if idx.shape.len() != 1 {
            return Err(Error::op(
                "index_select",
                format!("index must be 1-D, got shape {:?}", idx.shape),
            ));
        }
        let (outer, n_src, inner) = around(self.shape(), ax);
        check_indices("index_select", idx, n_src, self.shape(), ax)?;
        let m = idx.numel();
        let mut out: Shape = self.shape().into();
        out[ax] = m;
        let st = alloc_f32(&out)?;
        let strides = [0, 1, 0];
        index_kernel(
            GATHER,
            self.storage()?,
            idx,
            self.storage()?,
            &st,
            numel(&out),
            [outer, n_src, m, inner],
            strides,
        )?;
        let (idx2, full) = (idx.clone(), self.shape().to_vec());
        Ok(Tensor::from_op(
            out,
            st,
            "index_select",
            &[self],
            move |g| {
                Ok(vec![Some(scatter_into_zeros(
                    &full, &idx2, g, ax, strides, m,
                )?)])
            },
        ))
    }

    /// PyTorch's `gather`: out[.., j, ..] = self[.., idx[.., j, ..], ..] along `axis`; `idx`
    /// has the rank of `self` and the same size in every other dimension.
    pub fn gather(&self, axis: isize, idx: &IntTensor) -> Result<Tensor> {
        let ax = norm_axis("gather", axis, self.rank())?;
        check_like("gather", self.shape(), &idx.shape, ax)?;
        let (outer, n_src, inner) = around(self.shape(), ax);
        check_indices("gather", idx, n_src, self.shape(), ax)?;
        let n_idx = idx.shape[ax];
        let st = alloc_f32(&idx.shape)?;
        let strides = [n_idx * inner, inner, 1];
        index_kernel(
            GATHER,
            self.storage()?,
            idx,
            self.storage()?,
            &st,
            idx.numel(),
            [outer, n_src, n_idx, inner],
            strides,
        )?;
        let (idx2, full) = (idx.clone(), self.shape().to_vec());
        Ok(Tensor::from_op(
            idx.shape.clone(),
            st,
            "gather",
            &[self],
            move |g| {
                Ok(vec![Some(scatter_into_zeros(
                    &full, &idx2, g, ax, strides, n_idx,
                )?)])
            },
        ))
    }

    /// PyTorch's out-of-place `scatter_add`: self with src[.., j, ..] added at
    /// idx[.., j, ..] along `axis`; `idx` and `src` have the same shape. Deterministic.
    pub fn scatter_add(&self, axis: isize, idx: &IntTensor, src: &Tensor) -> Result<Tensor> {
        let ax = norm_axis("scatter_add", axis, self.rank())?;
        check_like("scatter_add", self.shape(), &idx.shape, ax)?;
        if src.shape() != &idx.shape[..] {
            return Err(Error::op(
                "scatter_add",
                format!(
                    "src shape {:?} differs from index shape {:?}",
                    src.shape(),
                    idx.shape
                ),
            ));
        }
        let (_, n_src, inner) = around(self.shape(), ax);
        check_indices("scatter_add", idx, n_src, self.shape(), ax)?;
        let n_idx = idx.shape[ax];
        let strides = [n_idx * inner, inner, 1];
        let y = scatter_add_raw(self, idx, src, ax, strides, n_idx)?;
        let idx2 = idx.clone();
        Ok(Tensor::from_op_masked(
            y.0.shape.clone(),
            y.0.value.clone(),
            "scatter_add",
            &[self, src],
            move |g, needs| {
                let gs = match needs[1] {
                    true => Some(g.gather(ax as isize, &idx2)?),
                    false => None,
                };
                Ok(vec![needs[0].then(|| g.clone()), gs])
            },
        ))
    }
}

fn check_like(op: &'static str, shape: &[usize], idx: &[usize], ax: usize) -> Result<()> {
    if idx.len() != shape.len() || (0..shape.len()).any(|d| d != ax && idx[d] != shape[d]) {
        return Err(Error::op(
            op,
            format!("index shape {idx:?} must match {shape:?} in every dimension but {ax}"),
        ));
    }
    Ok(())
}
