//! Elementwise ops of one tensor (and tensor-scalar forms), recorded lazily (`lazy`): alone
//! they run `shaders/unary.comp`, beside other elementwise ops one fused kernel.

use crate::error::Result;
use crate::lazy;
use crate::reference::Unary;
use crate::tensor::Tensor;

/// Op codes, in the order of `shaders/elementwise.glsl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum U {
    Neg = 0,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Abs,
    Relu,
    Sigmoid,
    Tanh,
    Powf,
    AddS,
    MulS,
    RsubS,
    RdivS,
    MaxS,
    MinS,
    GtS,
    GeS,
    EqS,
    Step,
    Sign,
    DivS,
    Sin,
    Cos,
}

impl Tensor {
    /// Records the op only (no graph); it runs fused with its neighbours (`lazy`).
    pub(crate) fn unary_raw(&self, op: U, s: f32) -> Result<Tensor> {
        let code = op as u32;
        let value = lazy::record(
            lazy::Op::Unary { code, s },
            &[self.lazy_input()],
            self.shape(),
        )?;
        Ok(Tensor::leaf_value(self.0.shape.clone(), value))
    }

    /// Runs the kernel and records the gradient rule `rule(x, y, g)`.
    fn unary(
        &self,
        op: U,
        s: f32,
        name: &'static str,
        rule: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Result<Tensor> {
        let y = self.unary_raw(op, s)?;
        let (x, yv) = (self.clone(), y.detach());
        Ok(Tensor::from_op(
            y.0.shape.clone(),
            y.0.value.clone(),
            name,
            &[self],
            move |g| Ok(vec![Some(rule(&x, &yv, g)?)]),
        ))
    }

    /// A 0/1 mask: no gradient flows through comparisons.
    fn unary_mask(&self, op: U, s: f32) -> Result<Tensor> {
        self.unary_raw(op, s)
    }

    pub fn neg(&self) -> Result<Tensor> {
        self.unary(U::Neg, 0.0, "neg", |_, _, g| g.neg())
    }
    /// d/dx e^x = e^x = y.
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(U::Exp, 0.0, "exp", |_, y, g| g.mul(y))
    }
    /// d/dx ln x = 1/x.
    pub fn log(&self) -> Result<Tensor> {
        self.unary(U::Log, 0.0, "log", |x, _, g| g.div(x))
    }
    /// d/dx sqrt x = 1 / (2 sqrt x) = 0.5 / y.
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary(U::Sqrt, 0.0, "sqrt", |_, y, g| g.div(y)?.mul_scalar(0.5))
    }
    /// d/dx x^-1/2 = -1/2 x^-3/2 = -0.5 y^3.
    pub fn rsqrt(&self) -> Result<Tensor> {
        self.unary(U::Rsqrt, 0.0, "rsqrt", |_, y, g| {
            g.mul(&y.mul(y)?.mul(y)?)?.mul_scalar(-0.5)
        })
    }
    /// d/dx |x| = sign(x) (0 at 0, as PyTorch).
    pub fn abs(&self) -> Result<Tensor> {
        self.unary(U::Abs, 0.0, "abs", |x, _, g| {
            g.mul(&x.unary_raw(U::Sign, 0.0)?)
        })
    }
    /// Gradient 1 where x > 0, else 0 (0 at 0, as PyTorch).
    pub fn relu(&self) -> Result<Tensor> {
        self.unary(U::Relu, 0.0, "relu", |x, _, g| {
            g.mul(&x.unary_raw(U::Step, 0.0)?)
        })
    }
    /// d/dx sigma(x) = y (1 - y).
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary(U::Sigmoid, 0.0, "sigmoid", |_, y, g| {
            g.mul(&y.mul(&y.rsub_scalar(1.0)?)?)
        })
    }
    /// d/dx sin x = cos x.
    pub fn sin(&self) -> Result<Tensor> {
        self.unary(U::Sin, 0.0, "sin", |x, _, g| {
            g.mul(&x.unary_raw(U::Cos, 0.0)?)
        })
    }
    /// d/dx cos x = −sin x.
    pub fn cos(&self) -> Result<Tensor> {
        self.unary(U::Cos, 0.0, "cos", |x, _, g| {
            g.mul(&x.unary_raw(U::Sin, 0.0)?)?.neg()
        })
    }
    /// d/dx tanh x = 1 - y^2.
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary(U::Tanh, 0.0, "tanh", |_, y, g| {
            g.mul(&y.mul(y)?.rsub_scalar(1.0)?)
        })
    }
    /// x^p with C powf semantics (negative x needs an integer p). d/dx = p x^(p-1).
    pub fn powf(&self, p: f32) -> Result<Tensor> {
        self.unary(U::Powf, p, "powf", move |x, _, g| {
            if p == 0.0 {
                g.zeros_like()
            } else {
                g.mul(&x.powf(p - 1.0)?)?.mul_scalar(p)
            }
        })
    }
    pub fn add_scalar(&self, s: f32) -> Result<Tensor> {
        self.unary(U::AddS, s, "add_scalar", |_, _, g| Ok(g.clone()))
    }
    pub fn sub_scalar(&self, s: f32) -> Result<Tensor> {
        self.unary(U::AddS, -s, "sub_scalar", |_, _, g| Ok(g.clone()))
    }
    pub fn mul_scalar(&self, s: f32) -> Result<Tensor> {
        self.unary(U::MulS, s, "mul_scalar", move |_, _, g| g.mul_scalar(s))
    }
    pub fn div_scalar(&self, s: f32) -> Result<Tensor> {
        self.unary(U::DivS, s, "div_scalar", move |_, _, g| g.div_scalar(s))
    }
    /// s - x.
    pub fn rsub_scalar(&self, s: f32) -> Result<Tensor> {
        self.unary(U::RsubS, s, "rsub_scalar", |_, _, g| g.neg())
    }
    /// s / x; d/dx = -s / x^2 = -y / x.
    pub fn rdiv_scalar(&self, s: f32) -> Result<Tensor> {
        self.unary(U::RdivS, s, "rdiv_scalar", |x, y, g| {
            g.mul(y)?.div(x)?.neg()
        })
    }
    /// max(x, s) with clamp semantics: the gradient passes where x >= s.
    pub fn maximum_scalar(&self, s: f32) -> Result<Tensor> {
        self.unary(U::MaxS, s, "maximum_scalar", move |x, _, g| {
            g.mul(&x.ge_scalar(s)?)
        })
    }
    /// min(x, s) with clamp semantics: the gradient passes where x <= s.
    pub fn minimum_scalar(&self, s: f32) -> Result<Tensor> {
        self.unary(U::MinS, s, "minimum_scalar", move |x, _, g| {
            g.mul(&x.unary_raw(U::GtS, s)?.rsub_scalar(1.0)?)
        })
    }
    /// 1 where x > s, else 0.
    pub fn gt_scalar(&self, s: f32) -> Result<Tensor> {
        self.unary_mask(U::GtS, s)
    }
    /// 1 where x >= s, else 0.
    pub fn ge_scalar(&self, s: f32) -> Result<Tensor> {
        self.unary_mask(U::GeS, s)
    }
    /// 1 where x == s, else 0.
    pub fn eq_scalar(&self, s: f32) -> Result<Tensor> {
        self.unary_mask(U::EqS, s)
    }
    /// x^2 (a named square for readability; same kernel as `mul`).
    pub fn square(&self) -> Result<Tensor> {
        self.mul(self)
    }
}

impl std::fmt::Debug for UnaryOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// One elementwise op of one tensor (with its scalar, for the tensor-scalar forms), defined
/// once: its name (= the host op and the `Tensor` method), the call, and one hop away the f64
/// reference entry it is proven against, with its property-test domain. The host's op table
/// (`plugin/host_api.rs`), the elementwise property tests (`tests/tests/elementwise.rs`) and
/// the check of the shader's op codes read it; the reference itself stays written separately
/// (`reference/ops.rs`), because it is the proof.
pub struct UnaryOp {
    pub name: &'static str,
    /// The `Tensor` method; `s` is the scalar attribute (ignored by ops without one).
    pub call: fn(&Tensor, f32) -> Result<Tensor>,
    /// The scalar's attribute name in the host-op table (`s`, `p`), if the op has one.
    pub scalar: Option<&'static str>,
    /// The f64 reference entry for scalar `s`.
    pub reference: fn(f64) -> Unary,
    /// Property tests: the interval x is drawn from for scalar `s` (`None`: any f32 the
    /// generator makes), the scalars drawn, and whether the op is transcendental (tolerance
    /// `TRANSCENDENTAL` rather than `ELEMENTWISE`).
    pub domain: fn(f64) -> Option<(f32, f32)>,
    pub scalars: &'static [f64],
    pub transcendental: bool,
    /// Where the op is not differentiable for scalar `s` (property tests keep x away from it).
    pub kink: Option<fn(f64) -> f64>,
}

const S: &[f64] = &[0.0, 0.5, -1.25, 3.0];
const POSITIVE: fn(f64) -> Option<(f32, f32)> = |_| Some((0.05, 50.0));
const MODERATE: fn(f64) -> Option<(f32, f32)> = |_| Some((-10.0, 10.0));
const NONE: &[f64] = &[0.0];

const fn plain(
    name: &'static str,
    call: fn(&Tensor, f32) -> Result<Tensor>,
    reference: fn(f64) -> Unary,
) -> UnaryOp {
    UnaryOp {
        name,
        call,
        scalar: None,
        reference,
        domain: |_| None,
        scalars: NONE,
        transcendental: false,
        kink: None,
    }
}

const fn scalar(
    name: &'static str,
    call: fn(&Tensor, f32) -> Result<Tensor>,
    reference: fn(f64) -> Unary,
) -> UnaryOp {
    UnaryOp {
        scalar: Some("s"),
        scalars: S,
        ..plain(name, call, reference)
    }
}

const fn transcendental(op: UnaryOp, domain: fn(f64) -> Option<(f32, f32)>) -> UnaryOp {
    UnaryOp {
        transcendental: true,
        domain,
        ..op
    }
}

const fn kink_at(op: UnaryOp, kink: fn(f64) -> f64) -> UnaryOp {
    UnaryOp {
        kink: Some(kink),
        ..op
    }
}

/// Every unary op. Domains: log/sqrt/rsqrt away from 0 and their poles; exp within f32's
/// range; sin/cos within ±10, where GPU sin/cos keep an absolute error near 1e-6
/// (docs/verification.md).
pub const UNARY_OPS: &[UnaryOp] = &[
    plain("neg", |x, _| x.neg(), |_| Unary::Neg),
    transcendental(plain("exp", |x, _| x.exp(), |_| Unary::Exp), |_| {
        Some((-80.0, 80.0))
    }),
    transcendental(plain("log", |x, _| x.log(), |_| Unary::Log), POSITIVE),
    transcendental(plain("sqrt", |x, _| x.sqrt(), |_| Unary::Sqrt), POSITIVE),
    transcendental(plain("rsqrt", |x, _| x.rsqrt(), |_| Unary::Rsqrt), POSITIVE),
    kink_at(plain("abs", |x, _| x.abs(), |_| Unary::Abs), |_| 0.0),
    kink_at(plain("relu", |x, _| x.relu(), |_| Unary::Relu), |_| 0.0),
    transcendental(
        plain("sigmoid", |x, _| x.sigmoid(), |_| Unary::Sigmoid),
        |_| None,
    ),
    transcendental(plain("tanh", |x, _| x.tanh(), |_| Unary::Tanh), |_| None),
    transcendental(plain("sin", |x, _| x.sin(), |_| Unary::Sin), MODERATE),
    transcendental(plain("cos", |x, _| x.cos(), |_| Unary::Cos), MODERATE),
    // Integer exponents on any sign (±6 keeps x^p within f32), fractional ones on x > 0.
    UnaryOp {
        scalar: Some("p"),
        scalars: &[2.0, 3.0, 0.5, -1.0, 1.7, 0.0],
        ..transcendental(plain("powf", |x, p| x.powf(p), Unary::Powf), |p| {
            Some(if p.fract() != 0.0 {
                (0.05, 20.0)
            } else {
                (-6.0, 6.0)
            })
        })
    },
    scalar("add_scalar", |x, s| x.add_scalar(s), Unary::AddS),
    scalar("sub_scalar", |x, s| x.sub_scalar(s), Unary::SubS),
    scalar("mul_scalar", |x, s| x.mul_scalar(s), Unary::MulS),
    UnaryOp {
        scalars: &[0.5, -3.0],
        ..scalar("div_scalar", |x, s| x.div_scalar(s), Unary::DivS)
    },
    scalar("rsub_scalar", |x, s| x.rsub_scalar(s), Unary::RsubS),
    UnaryOp {
        scalars: &[1.0, -2.5],
        ..kink_at(
            scalar("rdiv_scalar", |x, s| x.rdiv_scalar(s), Unary::RdivS),
            |_| 0.0,
        )
    },
    kink_at(
        scalar("maximum_scalar", |x, s| x.maximum_scalar(s), Unary::MaxS),
        |s| s,
    ),
    kink_at(
        scalar("minimum_scalar", |x, s| x.minimum_scalar(s), Unary::MinS),
        |s| s,
    ),
    scalar("gt_scalar", |x, s| x.gt_scalar(s), Unary::GtS),
    scalar("ge_scalar", |x, s| x.ge_scalar(s), Unary::GeS),
    scalar("eq_scalar", |x, s| x.eq_scalar(s), Unary::EqS),
];

/// The unary op called `name`.
pub fn unary_op(name: &str) -> Option<&'static UnaryOp> {
    UNARY_OPS.iter().find(|o| o.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel op code, for the check against the shader.
    const CODES: [U; 24] = [
        U::Neg,
        U::Exp,
        U::Log,
        U::Sqrt,
        U::Rsqrt,
        U::Abs,
        U::Relu,
        U::Sigmoid,
        U::Tanh,
        U::Powf,
        U::AddS,
        U::MulS,
        U::RsubS,
        U::RdivS,
        U::MaxS,
        U::MinS,
        U::GtS,
        U::GeS,
        U::EqS,
        U::Step,
        U::Sign,
        U::DivS,
        U::Sin,
        U::Cos,
    ];

    /// `shaders/elementwise.glsl` defines the same op codes as `U` (`AddS` ↔ `ADD_S`), all of them.
    #[test]
    fn the_shader_op_codes_are_the_enums() {
        let shader =
            super::super::shader_codes(include_str!("../../../shaders/elementwise.glsl"), "NEG");
        let mut ours: Vec<(String, u32)> = CODES
            .iter()
            .map(|&u| (super::super::shader_name(&format!("{u:?}")), u as u32))
            .collect();
        ours.sort_by_key(|(_, v)| *v);
        assert_eq!(ours, shader);
        // The codes are 0..n, so CODES (and the shader) hold every variant.
        assert!(ours.iter().enumerate().all(|(i, (_, v))| *v == i as u32));
    }

    /// Every op of the table is a host op of the SDK's table, with the same scalar attribute,
    /// and maps to its own reference entry.
    #[test]
    fn the_table_agrees_with_the_host_op_table_and_the_reference() {
        for op in UNARY_OPS {
            let spec = vkgrad_plugin::ops::spec(op.name)
                .unwrap_or_else(|| panic!("{} is not a host op", op.name));
            let attrs: Vec<&str> = spec.attrs.iter().map(|a| a.0).collect();
            assert_eq!(
                attrs,
                op.scalar.into_iter().collect::<Vec<_>>(),
                "{}",
                op.name
            );
            assert!(!op.scalars.is_empty(), "{}", op.name);
        }
        let mut refs: Vec<String> = UNARY_OPS
            .iter()
            .map(|o| {
                let r = format!("{:?}", (o.reference)(1.5));
                r.split('(').next().unwrap().to_string()
            })
            .collect();
        let n = refs.len();
        refs.sort();
        refs.dedup();
        assert_eq!(refs.len(), n, "two ops share a reference entry");
    }
}
