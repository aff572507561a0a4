//! Movement ops: reshape (free: storage is shared), and permute, narrow, concat and expand,
//! which copy through one strided-copy kernel (`shaders/copy.comp`).

use super::{
    alloc_f32, broadcast_strides, check_rank, div_magics, norm_axis, pad6, strides, MAX_RANK,
};
use crate::device::push::CopyPush;
use crate::device::{grid, Bind, Kernel, Storage};
use crate::error::{Error, Result};
use crate::tensor::{numel, Shape, Tensor};

/// dst[d_off + sum idx*ds] = src[s_off + sum idx*ss] for idx over `shape`.
fn strided_copy(
    src: &Storage,
    s_off: usize,
    ss: &[u32; MAX_RANK],
    dst: &Storage,
    d_off: usize,
    ds: &[u32; MAX_RANK],
    shape: &[usize],
) -> Result<()> {
    let n = numel(shape) as u64;
    if n == 0 {
        return Ok(());
    }
    let (shape, ss, ds) = merge_dims(shape, ss, ds);
    let (shape, ss, ds) = (&shape[..], &ss, &ds);
    let r = shape.len();
    if let Some(blocks) = transpose_blocks(shape, (s_off, ss), (d_off, ds)) {
        return copy_blocks(src, dst, (s_off, d_off), blocks);
    }
    let push = CopyPush {
        n: n as u32,
        s_off: s_off as u32,
        d_off: d_off as u32,
        shape: pad6(shape),
        ss: *ss,
        ds: *ds,
        magic: div_magics(shape),
    };
    // Rows of four when the destination's rows are contiguous and 4-aligned (shaders/copy.comp).
    let rows = r > 0
        && shape[r - 1].is_multiple_of(4)
        && ds[r - 1] == 1
        && d_off.is_multiple_of(4)
        && ds[..r - 1].iter().all(|d| d % 4 == 0);
    // How the rows path reads a source row (copy.comp: SRC): one texel where it is contiguous
    // and every row starts 4-aligned, one value where it is constant, else four steps.
    let src_read = match r.checked_sub(1).map(|l| ss[l]) {
        Some(1) if s_off.is_multiple_of(4) && ss[..r - 1].iter().all(|s| s % 4 == 0) => 1,
        Some(0) => 2,
        _ => 0,
    };
    Tensor::ctx()?.dispatch(
        Kernel::Copy,
        &[
            rows as u32,
            r.max(1) as u32,
            if rows { src_read } else { 0 },
        ],
        &[Bind::texels(src), Bind::write(dst)],
        &push,
        grid(if rows { n / 4 } else { n }, 256),
    )
}

/// A copy that transposes its last two dimensions in 4×4 blocks (copy.comp's ROWS = 2): both
/// sizes multiples of 4, the source contiguous along the second-to-last and the destination
/// along the last, every other stride and both offsets multiples of 4 (so each block's rows
/// are texels). Returns the grid of blocks as a copy shape with its strides (the last two
/// times 4: each block's corner).
fn transpose_blocks(
    shape: &[usize],
    (s_off, ss): (usize, &[u32; MAX_RANK]),
    (d_off, ds): (usize, &[u32; MAX_RANK]),
) -> Option<(Vec<usize>, [u32; MAX_RANK], [u32; MAX_RANK])> {
    let r = shape.len();
    let four = |v: u32| v.is_multiple_of(4);
    let fits = r >= 2
        && shape[r - 1].is_multiple_of(4)
        && shape[r - 2].is_multiple_of(4)
        && ss[r - 2] == 1
        && ds[r - 1] == 1
        && s_off.is_multiple_of(4)
        && d_off.is_multiple_of(4)
        && (0..r).all(|d| (d == r - 2 || four(ss[d])) && (d == r - 1 || four(ds[d])));
    if !fits {
        return None;
    }
    let mut grid = shape.to_vec();
    let (mut gs, mut gd) = (*ss, *ds);
    for d in [r - 2, r - 1] {
        grid[d] /= 4;
        gs[d] *= 4;
        gd[d] *= 4;
    }
    Some((grid, gs, gd))
}

/// Dispatches copy.comp's block transpose over `grid` (see `transpose_blocks`).
fn copy_blocks(
    src: &Storage,
    dst: &Storage,
    (s_off, d_off): (usize, usize),
    (grid_shape, ss, ds): (Vec<usize>, [u32; MAX_RANK], [u32; MAX_RANK]),
) -> Result<()> {
    let blocks = numel(&grid_shape) as u64;
    let push = CopyPush {
        n: blocks as u32,
        s_off: s_off as u32,
        d_off: d_off as u32,
        shape: pad6(&grid_shape),
        ss,
        ds,
        magic: div_magics(&grid_shape),
    };
    Tensor::ctx()?.dispatch(
        Kernel::Copy,
        &[2, grid_shape.len() as u32, 0],
        &[Bind::texels(src), Bind::write(dst)],
        &push,
        grid(blocks, 256),
    )
}

/// The same copy over fewer dimensions: adjacent dimensions that both sides walk as one
/// (outer stride = inner stride × inner size, in source and destination alike) become one, and
/// size-1 dimensions go. A permute's moved block of axes, a narrow's untouched trailing axes and
/// a contiguous copy then cost fewer index divisions per element, and the innermost dimension is
/// longer, so more copies take the kernel's rows-of-four path (the conv's NHWC → NCHW permute of
/// a 14 × 14 map: rows of 196 instead of 14). The elements and their order are unchanged.
fn merge_dims(
    shape: &[usize],
    ss: &[u32; MAX_RANK],
    ds: &[u32; MAX_RANK],
) -> (Vec<usize>, [u32; MAX_RANK], [u32; MAX_RANK]) {
    let (mut sh, mut s, mut d): (Vec<usize>, Vec<u32>, Vec<u32>) = (vec![], vec![], vec![]);
    for (i, &size) in shape.iter().enumerate() {
        if size == 1 {
            continue;
        }
        let (si, di) = (ss[i], ds[i]);
        match (sh.last_mut(), s.last(), d.last()) {
            (Some(last), Some(&so), Some(&dout))
                if so as u64 == si as u64 * size as u64
                    && dout as u64 == di as u64 * size as u64 =>
            {
                *last *= size;
                *s.last_mut().unwrap() = si;
                *d.last_mut().unwrap() = di;
            }
            _ => {
                sh.push(size);
                s.push(si);
                d.push(di);
            }
        }
    }
    if sh.is_empty() {
        // A single element: one dimension of size 1.
        (sh, s, d) = (vec![1], vec![1], vec![1]);
    }
    let pad = |v: &[u32]| {
        let mut r = [0u32; MAX_RANK];
        r[..v.len()].copy_from_slice(v);
        r
    };
    (sh, pad(&s), pad(&d))
}

fn to6(v: &[usize]) -> [u32; MAX_RANK] {
    pad6(v)
}

impl Tensor {
    /// Same elements, new shape (no copy). The element count must match.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if crate::tensor::checked_numel("reshape", shape)? != self.numel() {
            return Err(Error::op(
                "reshape",
                format!(
                    "cannot reshape {:?} ({} elements) to {:?} ({} elements)",
                    self.shape(),
                    self.numel(),
                    shape,
                    numel(shape)
                ),
            ));
        }
        let orig: Shape = self.shape().into();
        Ok(Tensor::from_op(
            shape.into(),
            self.0.value.clone(),
            "reshape",
            &[self],
            move |g| Ok(vec![Some(g.reshape(&orig)?)]),
        ))
    }

    /// Reorders dimensions: output dimension i is input dimension `dims[i]`.
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let r = self.rank();
        let mut seen = vec![false; r];
        if dims.len() != r
            || dims
                .iter()
                .any(|&d| d >= r || std::mem::replace(&mut seen[d], true))
        {
            return Err(Error::op(
                "permute",
                format!(
                    "{dims:?} is not a permutation of the {r} dimensions of {:?}",
                    self.shape()
                ),
            ));
        }
        check_rank("permute", self.shape())?;
        let out: Shape = dims.iter().map(|&d| self.shape()[d]).collect();
        let st_in = strides(self.shape());
        let ss: Vec<usize> = dims.iter().map(|&d| st_in[d]).collect();
        let st = alloc_f32(&out)?;
        strided_copy(
            self.storage()?,
            0,
            &to6(&ss),
            &st,
            0,
            &to6(&strides(&out)),
            &out,
        )?;
        let mut inverse = vec![0; r];
        for (i, &d) in dims.iter().enumerate() {
            inverse[d] = i;
        }
        Ok(Tensor::from_op(out, st, "permute", &[self], move |g| {
            Ok(vec![Some(g.permute(&inverse)?)])
        }))
    }

    /// Swaps two dimensions.
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (
            norm_axis("transpose", a, self.rank())?,
            norm_axis("transpose", b, self.rank())?,
        );
        let mut dims: Vec<usize> = (0..self.rank()).collect();
        dims.swap(a, b);
        self.permute(&dims)
    }

    /// `len` elements of `axis` starting at `start` (a slice).
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let ax = norm_axis("narrow", axis, self.rank())?;
        let size = self.shape()[ax];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::op(
                "narrow",
                format!(
                    "[{start}, {start}+{len}) is outside axis {ax} of {:?}",
                    self.shape()
                ),
            ));
        }
        check_rank("narrow", self.shape())?;
        let mut out: Shape = self.shape().into();
        out[ax] = len;
        let ss = strides(self.shape());
        let st = alloc_f32(&out)?;
        strided_copy(
            self.storage()?,
            start * ss[ax],
            &to6(&ss),
            &st,
            0,
            &to6(&strides(&out)),
            &out,
        )?;
        let full: Shape = self.shape().into();
        Ok(Tensor::from_op(out, st, "narrow", &[self], move |g| {
            // The gradient of a slice is the slice's gradient placed in zeros.
            let z = alloc_f32(&full)?;
            Tensor::ctx()?.fill(&z, 0)?;
            let ds = strides(&full);
            strided_copy(
                g.storage()?,
                0,
                &to6(&strides(g.shape())),
                &z,
                start * ds[ax],
                &to6(&ds),
                g.shape(),
            )?;
            Ok(vec![Some(Tensor::leaf(full.clone(), z))])
        }))
    }

    /// Joins tensors along `axis`; all other dimensions must agree.
    pub fn concat(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::op("concat", "no tensors given"))?;
        let ax = norm_axis("concat", axis, first.rank())?;
        check_rank("concat", first.shape())?;
        for t in tensors {
            let same = t.rank() == first.rank()
                && (0..t.rank()).all(|d| d == ax || t.shape()[d] == first.shape()[d]);
            if !same {
                let shapes: Vec<_> = tensors.iter().map(|t| t.shape().to_vec()).collect();
                return Err(Error::op(
                    "concat",
                    format!("shapes {shapes:?} differ outside axis {ax}"),
                ));
            }
        }
        let mut out: Shape = first.shape().into();
        out[ax] = tensors.iter().map(|t| t.shape()[ax]).sum();
        let st = alloc_f32(&out)?;
        let ds = strides(&out);
        let mut offset = 0;
        let mut sizes = Vec::new();
        for t in tensors {
            strided_copy(
                t.storage()?,
                0,
                &to6(&strides(t.shape())),
                &st,
                offset * ds[ax],
                &to6(&ds),
                t.shape(),
            )?;
            offset += t.shape()[ax];
            sizes.push(t.shape()[ax]);
        }
        Ok(Tensor::from_op_masked(
            out,
            st,
            "concat",
            tensors,
            move |g, needs| {
                let mut start = 0;
                let mut grads = Vec::new();
                for (&len, &need) in sizes.iter().zip(needs) {
                    grads.push(match need {
                        true => Some(g.narrow(ax as isize, start, len)?),
                        false => None,
                    });
                    start += len;
                }
                Ok(grads)
            },
        ))
    }

    /// Broadcasts to `shape` (NumPy rules), materialising the copy.
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        crate::tensor::checked_numel("expand", shape)?;
        let target = super::broadcast_shape("expand", self.shape(), shape)?;
        if &target[..] != shape {
            return Err(Error::op(
                "expand",
                format!("{:?} cannot be expanded to {shape:?}", self.shape()),
            ));
        }
        if self.shape() == shape {
            return Ok(self.clone());
        }
        check_rank("expand", shape)?;
        let st = alloc_f32(shape)?;
        strided_copy(
            self.storage()?,
            0,
            &broadcast_strides(self.shape(), shape),
            &st,
            0,
            &to6(&strides(shape)),
            shape,
        )?;
        let src: Shape = self.shape().into();
        Ok(Tensor::from_op(
            shape.into(),
            st,
            "expand",
            &[self],
            move |g| Ok(vec![Some(g.sum_to(&src)?)]),
        ))
    }

    /// Alias of [`Tensor::expand`], by NumPy's name.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        self.expand(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(shape: &[usize], ss: &[usize], ds: &[usize]) -> (Vec<usize>, Vec<u32>, Vec<u32>) {
        let (sh, s, d) = merge_dims(shape, &pad6(ss), &pad6(ds));
        let r = sh.len();
        (sh, s[..r].to_vec(), d[..r].to_vec())
    }

    #[test]
    fn a_conv_permute_walks_the_map_as_one_row() {
        // [N, OH, OW, O] -> [N, O, OH, OW]: OH and OW move together.
        let (n, oh, ow, o) = (2, 14, 14, 64);
        let l = oh * ow;
        let out = merged(&[n, o, oh, ow], &[l * o, 1, ow * o, o], &[o * l, l, ow, 1]);
        assert_eq!(
            out,
            (
                vec![n, o, l],
                vec![(l * o) as u32, 1, o as u32],
                vec![(o * l) as u32, l as u32, 1]
            )
        );
    }

    #[test]
    fn only_dimensions_walked_as_one_on_both_sides_merge() {
        // A narrow of the last axis: the source rows are 5 apart, the destination rows 3.
        assert_eq!(
            merged(&[4, 3], &[5, 1], &[3, 1]),
            (vec![4, 3], vec![5, 1], vec![3, 1])
        );
        // Contiguous on both sides: one dimension; size-1 axes dropped.
        assert_eq!(
            merged(&[2, 1, 3, 4], &[12, 12, 4, 1], &[12, 12, 4, 1]),
            (vec![24], vec![1], vec![1])
        );
        // A single element keeps one dimension.
        assert_eq!(
            merged(&[1, 1], &[1, 1], &[1, 1]),
            (vec![1], vec![1], vec![1])
        );
        // Broadcast (stride 0) axes merge with each other but not with a walked axis.
        assert_eq!(
            merged(&[2, 3, 4], &[0, 0, 1], &[12, 4, 1]),
            (vec![6, 4], vec![0, 1], vec![4, 1])
        );
    }
}
