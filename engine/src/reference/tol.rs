//! Tolerances for comparing the GPU's f32 results with the f64 reference, declared once.
//! `docs/verification.md` gives the reasoning; each constant cites its source.
//!
//! An element passes when |gpu - ref| <= abs + rel * scale + per_term * n * scale, where
//! `scale` is the magnitude of the computation (|ref| for elementwise ops, the sum of the
//! absolute values of the terms for sums and dot products) and `n` the number of terms.

/// Unit roundoff of f32, u = 2^-24.
pub const U32: f64 = 1.0 / 16_777_216.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tol {
    pub abs: f64,
    pub rel: f64,
    pub per_term: f64,
}

/// Smallest normal f32: Vulkan lets drivers flush denormal results to zero.
pub const DENORM: f64 = 1.1754943508222875e-38;

/// Copies (index_select, gather, expand, narrow …): the value itself, except that Vulkan lets
/// drivers flush a denormal to zero as it passes through a register.
pub const EXACT: Tol = Tol {
    abs: DENORM,
    rel: 0.0,
    per_term: 0.0,
};

/// Arithmetic (+ - * /, compare, min/max): correctly rounded except division, which
/// Vulkan allows 2.5 ULP; 3 ULP = 6u covers both.
pub const ELEMENTWISE: Tol = Tol {
    abs: DENORM,
    rel: 6.0 * U32,
    per_term: 0.0,
};

/// exp, log, sqrt, rsqrt, sigmoid, tanh, powf. Vulkan's precision table allows exp
/// 3 + 2|x| ULP (179 ULP at |x| = 88, the edge of the f32 range) and log/tanh an absolute
/// 2^-21 near their zeros; composites such as sigmoid inherit those. 200 ULP = 400u.
pub const TRANSCENDENTAL: Tol = Tol {
    abs: 4.76837158203125e-7,
    rel: 400.0 * U32,
    per_term: 0.0,
};

/// Sums and dot products (reductions, matmul, scatter_add): recursive summation in f32 is
/// within gamma_n = n u / (1 - n u) of the exact sum relative to the sum of |terms| (Higham,
/// Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 4.4); 2u per term leaves room
/// for the rounding of each product and of the inputs.
pub const ACCUMULATE: Tol = Tol {
    abs: DENORM,
    rel: 2.0 * U32,
    per_term: 2.0 * U32,
};

/// Row-wise softmax family and L2 normalisation: transcendental error per term, accumulated
/// over the row (scale = |ref| + 1 for the softmax family, whose values are O(1) or logs).
pub const ROWWISE: Tol = Tol {
    abs: 4.76837158203125e-7,
    rel: 400.0 * U32,
    per_term: 2.0 * U32,
};

/// GPU gradients vs reference gradients. A backward pass chains up to ~6 of the ops above,
/// so its error is bounded by a few TRANSCENDENTAL steps relative to the gradient's overall
/// magnitude (scale = max |ref grad| + |ref grad_i|): 6 x 400u = 2400u ~ 1.4e-4.
pub const GRADIENT: Tol = Tol {
    abs: 1e-30,
    rel: 2400.0 * U32,
    per_term: 2.0 * U32,
};

/// A loss value computed on the device (a short chain of ops over O(1) terms) vs its f64
/// reference or a closed form: GRADIENT's chained bound relative to |L| + 1. `vkgrad verify`'s
/// "matches CPU reference" and the engine's loss tests use it; two device values of one loss
/// (a permuted batch, two equivalent losses) agree within twice this.
pub const PLUGIN_LOSS_REL: f64 = GRADIENT.rel;

/// An f64 reference vs a closed form: sums of at most ~10^3 f64 terms round within
/// 10^3 · 2^-53 ≈ 1e-13 relative; 1e-12 leaves a factor of 10.
pub const REFERENCE_REL: f64 = 1e-12;

/// Reference analytic gradient vs central finite differences in f64, relative step 1e-6 per
/// element: truncation error h^2 |f'''| / 6 and cancellation error ~ eps64 |f| / h both stay far
/// below 1e-6 relative for the smooth, moderately scaled inputs these checks use.
pub const FINITE_DIFFERENCE_REL: f64 = 1e-6;

/// `vkgrad verify`: a plugin's device gradient (f32, through a chain of ops) vs central finite
/// differences of its f64 CPU reference, relative to the sum of |terms| of the directional
/// derivative. 1e-3 covers GRADIENT's chained f32 error with room for the reference's own
/// cancellation; a wrong gradient (a missing factor, a sign) misses it by orders of magnitude.
pub const PLUGIN_GRADIENT_REL: f64 = 1e-3;

/// `vkgrad verify`'s absolute floor for a directional gradient: this times Σ|v_i| times the
/// largest |gradient entry| of any input or parameter in the same run. A gradient that is
/// analytically ~0 but computed by cancellation (an input through batch norm over two samples,
/// a bias right before batch norm) is only known to f32 rounding of the gradients flowing
/// through the network, whose largest entry sets that scale (PyTorch's gradcheck uses a fixed
/// atol = 1e-5 for the same reason). A wrong gradient on a parameter that matters is still off
/// by orders of magnitude more. For losses the scale is the larger of that entry and
/// (1 + |L|) / rms(x): a loss's gradient can be ~0 everywhere at once (a Barlow-Twins-style
/// loss at N = 2), and (1 + |L|) / rms(x) is the size its cancelling terms have.
pub const PLUGIN_GRADIENT_FLOOR: f64 = 1e-5;

impl Tol {
    pub fn bound(&self, scale: f64, n_terms: usize) -> f64 {
        self.abs + self.rel * scale + self.per_term * n_terms as f64 * scale
    }

    /// Whether `got` (f32 from the GPU) matches `want` (f64 reference). Equal infinities and
    /// NaN against NaN pass; any other non-finite value fails.
    pub fn accepts(&self, got: f32, want: f64, scale: f64, n_terms: usize) -> bool {
        let g = got as f64;
        if want.is_nan() || g.is_nan() {
            return want.is_nan() && g.is_nan();
        }
        if want.is_infinite() || g.is_infinite() {
            // f64 can hold values that overflow f32: the GPU's inf is then the right answer.
            let want32 = want as f32;
            return g == want32 as f64 && got.is_infinite();
        }
        // A finite f64 that overflows f32 has no finite right answer either.
        if (want as f32).is_infinite() {
            return got.is_infinite() && got.signum() as f64 == want.signum();
        }
        (g - want).abs() <= self.bound(scale.abs(), n_terms)
    }
}
