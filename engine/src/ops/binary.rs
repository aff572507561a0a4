//! Elementwise ops of two tensors with NumPy broadcasting, compare-to-mask, and `where`.
//! Recorded lazily (`lazy`): alone they run `shaders/binary.comp` / `shaders/where.comp`,
//! beside other elementwise ops one fused kernel.

use super::{broadcast_shape, check_rank};
use crate::error::Result;
use crate::lazy;
use crate::reference::Binary;
use crate::tensor::Tensor;

/// Op codes, in the order of `shaders/elementwise.glsl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum B {
    Add = 0,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Eq,
    Gt,
    Ge,
}

impl Tensor {
    /// Records the op only (no graph); it runs fused with its neighbours (`lazy`).
    fn binary_raw(&self, other: &Tensor, op: B, name: &'static str) -> Result<Tensor> {
        let shape = broadcast_shape(name, self.shape(), other.shape())?;
        check_rank(name, &shape)?;
        let code = op as u32;
        let inputs = [self.lazy_input(), other.lazy_input()];
        let value = lazy::record(lazy::Op::Binary { code }, &inputs, &shape)?;
        Ok(Tensor::leaf_value(shape, value))
    }

    /// Runs the kernel and records `rule(a, b, g, side)` = the gradient of input `side` (0 = a,
    /// 1 = b), asked only for the inputs that need one, before summing each gradient back over
    /// the dimensions that were broadcast.
    fn binary(
        &self,
        other: &Tensor,
        op: B,
        name: &'static str,
        rule: impl Fn(&Tensor, &Tensor, &Tensor, usize) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Result<Tensor> {
        let y = self.binary_raw(other, op, name)?;
        let (a, b) = (self.clone(), other.clone());
        Ok(Tensor::from_op_masked(
            y.0.shape.clone(),
            y.0.value.clone(),
            name,
            &[self, other],
            move |g, needs| {
                let side = |i: usize, like: &Tensor| -> Result<Option<Tensor>> {
                    if !needs[i] {
                        return Ok(None);
                    }
                    Ok(Some(rule(&a, &b, g, i)?.sum_to(like.shape())?))
                };
                Ok(vec![side(0, &a)?, side(1, &b)?])
            },
        ))
    }

    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, B::Add, "add", |_, _, g, _| Ok(g.clone()))
    }
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, B::Sub, "sub", |_, _, g, side| match side {
            0 => Ok(g.clone()),
            _ => g.neg(),
        })
    }
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, B::Mul, "mul", |a, b, g, side| match side {
            0 => g.mul(b),
            _ => g.mul(a),
        })
    }
    /// d(a/b)/da = 1/b, d(a/b)/db = -a/b^2.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, B::Div, "div", |a, b, g, side| {
            let ga = g.div(b)?;
            match side {
                0 => Ok(ga),
                _ => ga.mul(a)?.div(b)?.neg(),
            }
        })
    }
    /// Elementwise max; on ties the gradient is split evenly, as in PyTorch.
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, B::Max, "maximum", |a, b, g, side| {
            let wa = a.gt(b)?.add(&a.eq(b)?.mul_scalar(0.5)?)?;
            match side {
                0 => g.mul(&wa),
                _ => g.mul(&wa.rsub_scalar(1.0)?),
            }
        })
    }
    /// Elementwise min; on ties the gradient is split evenly, as in PyTorch.
    pub fn minimum(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(other, B::Min, "minimum", |a, b, g, side| {
            let wa = b.gt(a)?.add(&a.eq(b)?.mul_scalar(0.5)?)?;
            match side {
                0 => g.mul(&wa),
                _ => g.mul(&wa.rsub_scalar(1.0)?),
            }
        })
    }
    /// 1 where a == b, else 0 (no gradient).
    pub fn eq(&self, other: &Tensor) -> Result<Tensor> {
        self.binary_raw(other, B::Eq, "eq")
    }
    /// 1 where a > b, else 0 (no gradient).
    pub fn gt(&self, other: &Tensor) -> Result<Tensor> {
        self.binary_raw(other, B::Gt, "gt")
    }
    /// 1 where a >= b, else 0 (no gradient).
    pub fn ge(&self, other: &Tensor) -> Result<Tensor> {
        self.binary_raw(other, B::Ge, "ge")
    }

    /// `mask != 0 ? a : b`, all three broadcast together. The mask gets no gradient.
    pub fn where_(mask: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let y = Self::where_raw(mask, a, b)?;
        let (m, sa, sb) = (mask.clone(), a.shape().to_vec(), b.shape().to_vec());
        Ok(Tensor::from_op_masked(
            y.0.shape.clone(),
            y.0.value.clone(),
            "where",
            &[a, b],
            move |g, needs| {
                let zero = Tensor::zeros(&[])?;
                let ga = match needs[0] {
                    true => Some(Self::where_raw(&m, g, &zero)?.sum_to(&sa)?),
                    false => None,
                };
                let gb = match needs[1] {
                    true => Some(Self::where_raw(&m, &zero, g)?.sum_to(&sb)?),
                    false => None,
                };
                Ok(vec![ga, gb])
            },
        ))
    }

    fn where_raw(mask: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let shape = broadcast_shape(
            "where",
            &broadcast_shape("where", mask.shape(), a.shape())?,
            b.shape(),
        )?;
        check_rank("where", &shape)?;
        let inputs = [mask.lazy_input(), a.lazy_input(), b.lazy_input()];
        let value = lazy::record(lazy::Op::Where, &inputs, &shape)?;
        Ok(Tensor::leaf_value(shape, value))
    }
}

/// One elementwise op of two broadcast tensors, defined once: its name (= the host op and the
/// `Tensor` method), the call, and one hop away the f64 reference entry it is proven against.
/// The host's op table and the binary property test read it; comparisons have no gradient.
pub struct BinaryOp {
    pub name: &'static str,
    pub call: fn(&Tensor, &Tensor) -> Result<Tensor>,
    pub reference: Binary,
    /// A 0/1 mask with no gradient (`eq gt ge`).
    pub compare: bool,
    /// The gradient splits at ties (`maximum minimum`): finite differences do not apply there.
    pub ties: bool,
}

impl std::fmt::Debug for BinaryOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

const fn arith(
    name: &'static str,
    call: fn(&Tensor, &Tensor) -> Result<Tensor>,
    reference: Binary,
) -> BinaryOp {
    BinaryOp {
        name,
        call,
        reference,
        compare: false,
        ties: false,
    }
}

/// Every binary op.
pub const BINARY_OPS: &[BinaryOp] = &[
    arith("add", |a, b| a.add(b), Binary::Add),
    arith("sub", |a, b| a.sub(b), Binary::Sub),
    arith("mul", |a, b| a.mul(b), Binary::Mul),
    arith("div", |a, b| a.div(b), Binary::Div),
    BinaryOp {
        ties: true,
        ..arith("maximum", |a, b| a.maximum(b), Binary::Maximum)
    },
    BinaryOp {
        ties: true,
        ..arith("minimum", |a, b| a.minimum(b), Binary::Minimum)
    },
    BinaryOp {
        compare: true,
        ..arith("eq", |a, b| a.eq(b), Binary::Eq)
    },
    BinaryOp {
        compare: true,
        ..arith("gt", |a, b| a.gt(b), Binary::Gt)
    },
    BinaryOp {
        compare: true,
        ..arith("ge", |a, b| a.ge(b), Binary::Ge)
    },
];

/// The binary op called `name`.
pub fn binary_op(name: &str) -> Option<&'static BinaryOp> {
    BINARY_OPS.iter().find(|o| o.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `shaders/elementwise.glsl` defines the same op codes as `B`, all of them.
    #[test]
    fn the_shader_op_codes_are_the_enums() {
        let codes = [
            B::Add,
            B::Sub,
            B::Mul,
            B::Div,
            B::Max,
            B::Min,
            B::Eq,
            B::Gt,
            B::Ge,
        ];
        let ours: Vec<(String, u32)> = codes
            .iter()
            .map(|&b| (super::super::shader_name(&format!("{b:?}")), b as u32))
            .collect();
        let shader =
            super::super::shader_codes(include_str!("../../../shaders/elementwise.glsl"), "ADD");
        assert_eq!(ours, shader);
        assert!(ours.iter().enumerate().all(|(i, (_, v))| *v == i as u32));
    }

    /// Every op is a host op without attributes, with its own reference entry.
    #[test]
    fn the_table_agrees_with_the_host_op_table_and_the_reference() {
        for op in BINARY_OPS {
            let spec = vkgrad_plugin::ops::spec(op.name)
                .unwrap_or_else(|| panic!("{} is not a host op", op.name));
            assert!(spec.attrs.is_empty(), "{}", op.name);
        }
        let mut refs: Vec<String> = BINARY_OPS
            .iter()
            .map(|o| format!("{:?}", o.reference))
            .collect();
        refs.sort();
        refs.dedup();
        assert_eq!(refs.len(), BINARY_OPS.len());
    }
}
