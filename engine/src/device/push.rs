//! The push-constant block of every kernel as a typed struct, laid out as the shader's
//! `layout(push_constant) uniform P { ... }` (4-byte scalars and arrays of them, in order): a
//! test reads each shader's block and checks the struct against it field by field, and
//! `Context::dispatch` refuses a block that is not its kernel's.

use super::Kernel;
use bytemuck::{Pod, Zeroable};

/// A kernel's push-constant block.
pub(crate) trait Push: Pod {
    /// The kernels that take this block.
    const KERNELS: &'static [Kernel];
    /// Field names and sizes in 4-byte words, for the check against the shaders.
    #[cfg(test)]
    const FIELDS: &'static [(&'static str, usize)];
}

macro_rules! push {
    ($($(#[$m:meta])* $name:ident for [$($k:ident),*] { $($f:ident: $t:ty),* $(,)? })*) => {$(
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Pod, Zeroable)]
        pub(crate) struct $name { $(pub $f: $t),* }
        impl Push for $name {
            const KERNELS: &'static [Kernel] = &[$(Kernel::$k),*];
            #[cfg(test)]
            const FIELDS: &'static [(&'static str, usize)] =
                &[$((stringify!($f), std::mem::size_of::<$t>() / 4)),*];
        }
    )*};
}

/// Six dimensions (shapes, strides), unused ones zero.
pub(crate) type Dims = [u32; 6];

push! {
    /// y = f(x, s) over n elements.
    UnaryPush for [Unary] { n: u32, s: f32 }
    /// Broadcast a ∘ b (the path, the rank and how each input is read along a row are
    /// specialisation constants of binary.comp).
    BinaryPush for [Binary] { n: u32, shape: Dims, sa: Dims, sb: Dims, magic: Dims }
    /// mask ? a : b, broadcast.
    WherePush for [Where] { n: u32, rank: u32, shape: Dims, sm: Dims, sa: Dims, sb: Dims, magic: Dims }
    /// A strided copy from offset `s_off` (strides `ss`) to `d_off` (strides `ds`).
    CopyPush for [Copy] { n: u32, s_off: u32, d_off: u32, shape: Dims, ss: Dims, ds: Dims, magic: Dims }
    /// Philox draws: `dist` 0 uniform in [a, b), 1 normal(a, b), 2 raw bits (the seed is a
    /// device buffer: a replayed step draws from the seed written there).
    RandomPush for [Random] { n: u32, offset: u32, dist: u32, a: f32, b: f32 }
    /// A reduction over n of [outer, n, inner]; `chunk` elements per invocation in thread
    /// mode; (value, index) pairs in or out for the passes of argmax/argmin.
    ReducePush for [Reduce] { outer: u32, n: u32, inner: u32, chunk: u32, in_pairs: u32, out_pairs: u32 }
    /// Row-wise softmax family / L2 normalisation of `rows` rows of n.
    RowwisePush for [Rowwise] { rows: u32, n: u32, eps: f32 }
    /// C[batch] = op(A) op(B): M×K times K×N, batch strides of A, B, C.
    MatmulPush for [Matmul, MatmulLanes, MatmulTiled] { m: u32, n: u32, k: u32, batch_a: u32, batch_b: u32, batch_c: u32 }
    /// Gather / scatter over [outer, n_src, inner] with n_idx indices (index strides iso, isj, isk).
    IndexPush for [Index] { outer: u32, n_src: u32, n_idx: u32, inner: u32, iso: u32, isj: u32, isk: u32, m_inner: u32, m_src: u32, m_idx: u32 }
    /// im2col / col2im of an [n, c, h, w] image with a window (its size KH×KW: specialisation
    /// constants; stride, padding, dilation per axis) and `pad` outside the image.
    Im2colPush for [Im2col] {
        n: u32, c: u32, h: u32, w: u32, oh: u32, ow: u32,
        sh: u32, sw: u32, ph: u32, pw: u32, dh: u32, dw: u32, pad: f32, row: u32,
        m_row4: u32, m_l: u32, m_ow: u32,
    }
    /// Max pooling of an [n, c, h, w] batch with a window (its size KH×KW: specialisation
    /// constants; stride, padding, dilation per axis) to oh×ow, and its backward.
    PoolPush for [Pool] {
        n: u32, c: u32, h: u32, w: u32, oh: u32, ow: u32,
        sh: u32, sw: u32, ph: u32, pw: u32, dh: u32, dw: u32,
        m_l: u32, m_ow: u32, m_hw: u32, m_w: u32,
    }
    /// Affine resampling of [n, c, h, w] images to oh×ow.
    ResamplePush for [Resample] { n: u32, c: u32, h: u32, w: u32, oh: u32, ow: u32 }
    /// similarity_lse's fused tile of `rows` query rows from `r0` against n keys; the last
    /// three are 0/1 flags.
    SimilarityPush for [Similarity] {
        rows: u32, n: u32, r0: u32, inv_t: f32, exclude_self: u32, positives: u32, ext: u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `layout(push_constant)` block of a shader: field names (lower case) and sizes in words.
    fn block(src: &str) -> Vec<(String, usize)> {
        let start = src
            .find("layout(push_constant)")
            .expect("a push-constant block");
        let body = &src[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
        body.split(';')
            .map(|d| {
                d.lines()
                    .map(|l| l.split("//").next().unwrap())
                    .collect::<String>()
            })
            .filter(|d| !d.trim().is_empty())
            .map(|d| {
                let name = d.split_whitespace().last().unwrap();
                match name.split_once('[') {
                    Some((n, len)) => {
                        (n.to_lowercase(), len.trim_end_matches(']').parse().unwrap())
                    }
                    None => (name.to_lowercase(), 1),
                }
            })
            .collect()
    }

    fn check<P: Push>(name: &str) {
        let ours: Vec<(String, usize)> =
            P::FIELDS.iter().map(|(n, w)| (n.to_string(), *w)).collect();
        assert_eq!(
            std::mem::size_of::<P>(),
            4 * ours.iter().map(|f| f.1).sum::<usize>()
        );
        for k in P::KERNELS {
            assert_eq!(ours, block(k.source()), "{name} vs the block of {k:?}");
        }
    }

    #[test]
    fn every_push_block_is_its_shaders() {
        check::<UnaryPush>("UnaryPush");
        check::<BinaryPush>("BinaryPush");
        check::<WherePush>("WherePush");
        check::<CopyPush>("CopyPush");
        check::<RandomPush>("RandomPush");
        check::<ReducePush>("ReducePush");
        check::<RowwisePush>("RowwisePush");
        check::<MatmulPush>("MatmulPush");
        check::<IndexPush>("IndexPush");
        check::<Im2colPush>("Im2colPush");
        check::<PoolPush>("PoolPush");
        check::<ResamplePush>("ResamplePush");
        check::<SimilarityPush>("SimilarityPush");
        // Every kernel has a block above.
        let covered: Vec<Kernel> = [
            UnaryPush::KERNELS,
            BinaryPush::KERNELS,
            WherePush::KERNELS,
            CopyPush::KERNELS,
            RandomPush::KERNELS,
            ReducePush::KERNELS,
            RowwisePush::KERNELS,
            MatmulPush::KERNELS,
            IndexPush::KERNELS,
            Im2colPush::KERNELS,
            PoolPush::KERNELS,
            ResamplePush::KERNELS,
            SimilarityPush::KERNELS,
        ]
        .concat();
        for k in Kernel::ALL {
            assert!(covered.contains(k), "{k:?} has no push block");
        }
    }
}
