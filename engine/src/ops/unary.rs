//! Elementwise ops of one tensor (and tensor-scalar forms), kernel `shaders/unary.comp`.

use super::alloc_f32;
use crate::device::{grid, Bind, Kernel};
use crate::error::Result;
use crate::tensor::Tensor;

/// Op codes, in the order of `shaders/unary.comp`.
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
    /// Runs the kernel only (no graph).
    pub(crate) fn unary_raw(&self, op: U, s: f32) -> Result<Tensor> {
        let st = alloc_f32(self.shape())?;
        let n = self.numel() as u64;
        if n > 0 {
            Tensor::ctx()?.dispatch(
                Kernel::Unary,
                &[op as u32],
                &[Bind::texels(self.storage()), Bind::write(&st)],
                &[n as u32, s.to_bits()],
                grid(n.div_ceil(4), 256),
            )?;
        }
        Ok(Tensor::leaf(self.0.shape.clone(), st))
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
            y.0.storage.clone(),
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
