//! Bilinear resampling through per-sample affine maps (`shaders/resample.comp`): the basis of
//! random resized crops, flips and small rotations / translations. No gradient (augmentation
//! runs outside the graph): the result is a leaf, and an input that needs a gradient is an
//! error rather than a graph that silently stops here.

use super::alloc_f32;
use crate::device::push::ResamplePush;
use crate::device::{grid, Bind, Kernel};
use crate::error::{Error, Result};
use crate::tensor::{numel, Tensor};

/// What a sample point outside the image reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    Zeros,
    Border,
}

impl Tensor {
    /// `grid_sample(self, affine_grid(theta, [N, C, out_h, out_w]))` with bilinear
    /// interpolation and align_corners = false (PyTorch's defaults): `self` `[N, C, H, W]`,
    /// `theta` `[N, 2, 3]` mapping output coordinates in [−1, 1] to input coordinates.
    pub fn resample_affine(
        &self,
        theta: &Tensor,
        out_hw: [usize; 2],
        padding: Padding,
    ) -> Result<Tensor> {
        let &[n, c, h, w] = self.shape() else {
            return Err(Error::op(
                "resample_affine",
                format!("expects images [N, C, H, W], got {:?}", self.shape()),
            ));
        };
        if theta.shape() != [n, 2, 3] {
            return Err(Error::op(
                "resample_affine",
                format!(
                    "theta must be [{n}, 2, 3] for images {:?}, got {:?}",
                    self.shape(),
                    theta.shape()
                ),
            ));
        }
        if crate::grad_mode::is_grad_enabled()
            && (self.is_requires_grad() || theta.is_requires_grad())
        {
            return Err(Error::op(
                "resample_affine",
                "has no gradient, but its input needs one: detach the images and theta (augmentation runs outside the graph), or compute under no_grad",
            ));
        }
        if (h == 0 || w == 0) && n * c > 0 {
            return Err(Error::op(
                "resample_affine",
                format!("empty images {:?}", self.shape()),
            ));
        }
        let out = [n, c, out_hw[0], out_hw[1]];
        let st = alloc_f32(&out)?;
        let count = numel(&out);
        if count > 0 {
            let u = |v: usize| v as u32;
            let push = ResamplePush {
                n: u(n),
                c: u(c),
                h: u(h),
                w: u(w),
                oh: u(out_hw[0]),
                ow: u(out_hw[1]),
            };
            Tensor::ctx()?.dispatch(
                Kernel::Resample,
                &[(padding == Padding::Border) as u32],
                &[
                    Bind::texels(self.storage()?),
                    Bind::texels(theta.storage()?),
                    Bind::write(&st),
                ],
                &push,
                grid(count as u64, 256),
            )?;
        }
        Ok(Tensor::leaf(out.as_slice().into(), st))
    }
}
