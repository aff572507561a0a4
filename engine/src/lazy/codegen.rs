//! One GLSL compute kernel for a tree of elementwise ops. The source depends only on the tree's
//! structure, the root's rank and how each leaf is read (whole, one value, or broadcast through
//! strides); sizes, strides and scalars travel as push constants, so a training step reuses its
//! kernels at every step and every shape of the same rank.
//!
//! A fused tree must compute exactly what the same ops compute one kernel each (the property
//! tests require bit-identical results), so the compiler may not optimise across ops:
//! - every intermediate is `precise` (SPIR-V NoContraction): no multiply and add fused into FMA;
//! - every intermediate and every operand passes through an `opaque()` (an XOR with a push
//!   constant that is 0), as values pass through memory and separate fetches between kernels:
//!   Vulkan compilers may rewrite `(c ? 1 : 0) * y` as `c ? y : 0`, which differs from the
//!   product for y = -0 (sign) and y = ±inf or NaN, and `x - x` as 0 (NaN for x = inf). Both
//!   were found by the random-DAG property (`gt(0, 0) * -0` gave +0 fused, -0 unfused).

use super::{Arg, Expr, Op, Value};
use crate::device::{context, grid, Bind, Storage};
use crate::error::Result;
use crate::ops::{broadcast_strides, strides};
use crate::tensor::{numel, Shape};
use std::collections::HashMap;
// `write!` into a String cannot fail, so its Result is dropped (`let _ =`) throughout.
use std::fmt::Write;
use std::sync::Arc;

/// How a leaf is indexed from the output's flat index.
#[derive(PartialEq)]
enum Read {
    /// Same shape as the output: the same flat index.
    Whole,
    /// One element, read by every output element.
    One,
    /// Broadcast: index = sum of coordinate × stride (strides pushed per kernel).
    Strided(Vec<u32>),
}

struct Leaf {
    st: Arc<Storage>,
    read: Read,
}

struct Gen<'a> {
    root: &'a [usize],
    leaves: Vec<Leaf>,
    leaf_ids: HashMap<(usize, Shape), usize>,
    nodes: HashMap<usize, String>,
    body: String,
    next: usize,
    scalars: Vec<f32>,
}

impl Gen<'_> {
    fn leaf(&mut self, st: &Arc<Storage>, shape: &[usize]) -> String {
        let key = (Arc::as_ptr(st) as usize, Shape::from_slice(shape));
        if let Some(&i) = self.leaf_ids.get(&key) {
            return format!("l{i}");
        }
        let bs = broadcast_strides(shape, self.root);
        let whole = strides(self.root);
        let r = self.root.len();
        let read = if numel(shape) == 1 {
            Read::One
        } else if bs[..r].iter().zip(&whole).all(|(a, b)| *a as usize == *b) {
            Read::Whole
        } else {
            Read::Strided(bs[..r].to_vec())
        };
        let i = self.leaves.len();
        self.leaves.push(Leaf {
            st: st.clone(),
            read,
        });
        self.leaf_ids.insert(key, i);
        format!("l{i}")
    }

    fn arg(&mut self, a: &Arg) -> Result<String> {
        match a {
            Arg::Leaf { st, shape } => Ok(self.leaf(st, shape)),
            Arg::Inline(v) => self.value(v),
        }
    }

    fn value(&mut self, v: &Arc<Value>) -> Result<String> {
        let key = Arc::as_ptr(v) as usize;
        if let Some(name) = self.nodes.get(&key) {
            return Ok(name.clone());
        }
        let name = match v.expr() {
            Some(e) => self.expr(&e)?,
            // computed since it was inlined
            None => {
                let st = v.storage()?.clone();
                self.leaf(&st, &v.shape.clone())
            }
        };
        self.nodes.insert(key, name.clone());
        Ok(name)
    }

    fn expr(&mut self, e: &Expr) -> Result<String> {
        // Each operand slot through its own opaque(): an op whose operands are one value
        // (`x - x`, `x / x`) must not be simplified (inf - inf is NaN, not 0), as the
        // hand-written kernel, which fetches each operand separately, does not.
        let args: Vec<String> = e
            .args
            .iter()
            .enumerate()
            .map(|(i, a)| Ok(format!("opaque{}({})", i + 1, self.arg(a)?)))
            .collect::<Result<_>>()?;
        let rhs = match e.op {
            Op::Unary { code, s } => {
                let s = if e.op.reads_scalar() {
                    self.scalars.push(s);
                    format!("p.c{}", self.scalars.len() - 1)
                } else {
                    "0.0".into()
                };
                format!("unary_f({code}u, {}, {s})", args[0])
            }
            Op::Binary { code } => format!("binary_f({code}u, {}, {})", args[0], args[1]),
            Op::Where => format!("({} != 0.0 ? {} : {})", args[0], args[1], args[2]),
        };
        let name = format!("v{}", self.next);
        self.next += 1;
        let _ = writeln!(self.body, "    precise float {name} = opaque0({rhs});");
        Ok(name)
    }
}

/// The generated source and its push constants for the tree `expr` computing `shape`.
struct Kernel {
    source: String,
    push: Vec<u32>,
    leaves: Vec<Leaf>,
    nodes: usize,
}

fn generate(shape: &[usize], expr: &Expr) -> Result<Kernel> {
    let mut g = Gen {
        root: shape,
        leaves: Vec::new(),
        leaf_ids: HashMap::new(),
        nodes: HashMap::new(),
        body: String::new(),
        next: 0,
        scalars: Vec::new(),
    };
    let out = g.expr(expr)?;
    let r = shape.len();
    let strided: Vec<usize> = (0..g.leaves.len())
        .filter(|&i| matches!(g.leaves[i].read, Read::Strided(_)))
        .collect();

    let mut src = String::from("#version 450\n");
    src += include_str!("../../../shaders/common.glsl");
    src += include_str!("../../../shaders/elementwise.glsl");
    src += "layout(local_size_x = 256) in;\n";
    src += "layout(set = 0, binding = 0) writeonly buffer Y { float y[]; };\n";
    src += "layout(set = 0, binding = 0) writeonly buffer Y4 { vec4 y4[]; };\n";
    for i in 0..g.leaves.len() {
        let _ = writeln!(
            src,
            "layout(set = 0, binding = {}) uniform samplerBuffer t{i};",
            i + 1
        );
    }
    // `zero` is four words of 0: an XOR with one hides a value from the compiler (see the top);
    // results use word 0 and operand slots words 1-3, so no two XORs cancel.
    let mut push = vec![numel(shape) as u32, 0, 0, 0, 0];
    src += "layout(push_constant) uniform P {\n    uint n;\n    uint zero[4];\n";
    if !strided.is_empty() {
        let _ = writeln!(src, "    uint shape[{r}];");
        push.extend(shape.iter().map(|&d| d as u32));
        for &i in &strided {
            let _ = writeln!(src, "    uint s{i}[{r}];");
            if let Read::Strided(s) = &g.leaves[i].read {
                push.extend_from_slice(s);
            }
        }
    }
    for (i, s) in g.scalars.iter().enumerate() {
        let _ = writeln!(src, "    float c{i};");
        push.push(s.to_bits());
    }
    src += "} p;\n\n";
    for i in 0..4 {
        let _ = writeln!(
            src,
            "float opaque{i}(float x) {{ return uintBitsToFloat(floatBitsToUint(x) ^ p.zero[{i}]); }}"
        );
    }
    src += "\n";

    let params: Vec<String> = (0..g.leaves.len()).map(|i| format!("float l{i}")).collect();
    let _ = write!(
        src,
        "float expr({}) {{\n{}    return {out};\n}}\n\n",
        params.join(", "),
        g.body
    );

    src += "void main() {\n    uint q = flat_id(256u);\n    uint i0 = 4u * q;\n    if (i0 >= p.n) return;\n";
    if strided.is_empty() {
        // Four elements at once: one texel fetch per whole leaf, one vec4 store.
        src += "    if (i0 + 3u < p.n) {\n";
        for (i, l) in g.leaves.iter().enumerate() {
            let _ = match l.read {
                Read::Whole => writeln!(src, "        vec4 a{i} = texelFetch(t{i}, int(q));"),
                _ => writeln!(src, "        float a{i} = fetch(t{i}, 0u);"),
            };
        }
        let lane = |c: &str| -> String {
            let a: Vec<String> = g
                .leaves
                .iter()
                .enumerate()
                .map(|(i, l)| match l.read {
                    Read::Whole => format!("a{i}.{c}"),
                    _ => format!("a{i}"),
                })
                .collect();
            format!("expr({})", a.join(", "))
        };
        let _ = writeln!(
            src,
            "        y4[q] = vec4({}, {}, {}, {});\n        return;\n    }}",
            lane("x"),
            lane("y"),
            lane("z"),
            lane("w")
        );
    }
    src += "    for (uint i = i0; i < min(i0 + 4u, p.n); ++i) {\n";
    if !strided.is_empty() {
        let idx: Vec<String> = strided.iter().map(|i| format!("j{i} = 0u")).collect();
        let _ = writeln!(src, "        uint rem = i, {};", idx.join(", "));
        let _ = writeln!(
            src,
            "        for (int d = {}; d >= 0; --d) {{\n            uint c = rem % p.shape[d];\n            rem /= p.shape[d];",
            r as i64 - 1
        );
        for &i in &strided {
            let _ = writeln!(src, "            j{i} += c * p.s{i}[d];");
        }
        src += "        }\n";
    }
    let reads: Vec<String> = g
        .leaves
        .iter()
        .enumerate()
        .map(|(i, l)| match l.read {
            Read::Whole => format!("fetch(t{i}, i)"),
            Read::One => format!("fetch(t{i}, 0u)"),
            Read::Strided(_) => format!("fetch(t{i}, j{i})"),
        })
        .collect();
    let _ = writeln!(
        src,
        "        y[i] = expr({});\n    }}\n}}",
        reads.join(", ")
    );
    Ok(Kernel {
        source: src,
        push,
        leaves: g.leaves,
        nodes: g.next,
    })
}

/// Computes the tree into `out` with one generated kernel.
pub(super) fn run_fused(shape: &[usize], expr: &Expr, out: &Storage) -> Result<()> {
    let k = generate(shape, expr)?;
    let ctx = context()?;
    let mut binds = vec![Bind::write(out)];
    binds.extend(k.leaves.iter().map(|l| Bind::texels(&l.st)));
    let n = numel(shape) as u64;
    ctx.dispatch_generated(
        &k.source,
        &format!("Fused {} ops", k.nodes),
        &binds,
        bytemuck::cast_slice(&k.push),
        grid(n.div_ceil(4), 256),
    )
}

#[cfg(test)]
mod tests {
    /// The generated kernels call the op functions of `shaders/elementwise.glsl`, which the
    /// hand-written kernels call too.
    #[test]
    fn the_hand_written_kernels_use_the_shared_op_functions() {
        let u = include_str!("../../../shaders/unary.comp");
        let b = include_str!("../../../shaders/binary.comp");
        assert!(u.contains("#include \"elementwise.glsl\"") && u.contains("unary_f(OP, v, p.s)"));
        assert!(b.contains("#include \"elementwise.glsl\"") && b.contains("binary_f(OP, u, v)"));
    }
}
