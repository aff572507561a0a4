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
    /// Whether the first pending product met becomes the base (a matmul kernel's epilogue);
    /// otherwise, and for any further product, it is computed first and read as a leaf.
    base_ok: bool,
    /// The base product, as `acc` in the generated code.
    base: Option<(Arc<Value>, Arc<Expr>)>,
    /// Each inlined value met, and how many operand slots of the tree read it.
    uses: HashMap<usize, (Arc<Value>, usize)>,
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
            Arg::Inline(v) => {
                let name = self.value(v)?;
                let slot = self.uses.entry(Arc::as_ptr(v) as usize);
                slot.or_insert_with(|| (v.clone(), 0)).1 += 1;
                Ok(name)
            }
        }
    }

    /// Whether a pending value of the tree is also held outside it (a tensor, an autograd
    /// node), so it may be computed on its own later: a fused epilogue then stores the base
    /// product too, as that computation would otherwise repeat the matrix product.
    fn held_outside(&self) -> bool {
        self.uses.values().any(|(v, uses)| {
            let ours =
                1 + uses + self.base.as_ref().is_some_and(|(b, _)| Arc::ptr_eq(b, v)) as usize;
            !v.is_ready() && Arc::strong_count(v) > ours
        })
    }

    fn value(&mut self, v: &Arc<Value>) -> Result<String> {
        let key = Arc::as_ptr(v) as usize;
        if let Some(name) = self.nodes.get(&key) {
            return Ok(name.clone());
        }
        let name = match v.expr() {
            Some(e)
                if matches!(e.op, Op::Product { .. }) && self.base_ok && self.base.is_none() =>
            {
                self.base = Some((v.clone(), e));
                "acc".to_string()
            }
            Some(e) if !matches!(e.op, Op::Product { .. }) => self.expr(&e)?,
            // computed since it was inlined, or a product that is not the base (computed now)
            _ => {
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
            Op::Product { .. } => {
                return Err(crate::error::Error::Other(
                    "a matrix product inside an elementwise kernel (a bug in vkgrad)".into(),
                ))
            }
        };
        let name = format!("v{}", self.next);
        self.next += 1;
        let _ = writeln!(self.body, "    precise float {name} = opaque0({rhs});");
        Ok(name)
    }
}

/// A tree as GLSL pieces that a kernel places in its source: leaf bindings, push-constant
/// fields (after the kernel's own), and the functions `opaque0..3`, `expr(leaves)` and
/// `value_at(i)` (the tree's value at flat index `i` of its shape).
pub(crate) struct Pieces {
    /// Leaf declarations (`uniform samplerBuffer tI`), at the bindings the kernel chose.
    pub decls: String,
    /// Push-constant fields, to follow the kernel's own in its block.
    pub push_fields: String,
    /// Their values, as words.
    pub push: Vec<u32>,
    /// Functions, to follow the push-constant block.
    pub funcs: String,
    /// The leaves' buffers, in binding order.
    pub leaves: Vec<Arc<Storage>>,
    /// Ops in the tree (for profile labels).
    pub nodes: usize,
    /// Values the kernel computes (1 but for `pieces_of_values`).
    outputs: usize,
    /// Whether some leaf is broadcast (read through strides); otherwise every leaf is read
    /// whole or as one value, and `expr` can be called on vec4 components.
    strided: bool,
    /// With broadcast leaves: whether four elements of a row can be computed at once — the
    /// innermost size is a multiple of 4 and every broadcast leaf is constant along it or
    /// steps by 1 — so the coordinates are computed once per four elements (`vec4_head`).
    rows: bool,
    /// The coordinate arithmetic setting `j{leaf}` for each broadcast leaf from `rem`.
    index: String,
    reads: Vec<Read>,
}

impl<'a> Gen<'a> {
    fn new(root: &'a [usize]) -> Gen<'a> {
        Gen {
            root,
            leaves: Vec::new(),
            leaf_ids: HashMap::new(),
            nodes: HashMap::new(),
            body: String::new(),
            next: 0,
            scalars: Vec::new(),
            base_ok: false,
            base: None,
            uses: HashMap::new(),
        }
    }
}

/// The pieces of the tree `expr` computing `shape`; leaf `i` is declared at `binding(i)`.
fn pieces(shape: &[usize], expr: &Expr, binding: impl Fn(usize) -> usize) -> Result<Pieces> {
    let mut g = Gen::new(shape);
    let out = g.expr(expr)?;
    assemble(g, shape, &[out], binding)
}

/// A tree computed by the matmul kernel of its base product (a fused epilogue): the pieces,
/// with `value_at(i, acc)` the tree at element `i` given the product's value `acc` there and
/// `put(i, acc)` the kernel's store; whether the product is stored too.
pub(crate) struct Epilogue {
    pub pieces: Pieces,
    pub product: Option<Arc<Storage>>,
}

/// Computes the tree generated in `g` (whose result is `root`) into `out` with the matmul
/// kernel of its base product.
fn run_epilogue(g: Gen, root: String, shape: &[usize], out: &Storage) -> Result<()> {
    // Before `base` is cloned below (a clone is a holder too).
    let keep = g.held_outside();
    let Some((base, product)) = g.base.clone() else {
        unreachable!("called for a tree with a base product");
    };
    let Op::Product { ta, tb, dims } = product.op else {
        unreachable!("the base is a product");
    };
    // Bindings: A, B, C, the product's own buffer when kept, then the leaves.
    let first = 3 + keep as usize;
    let mut pieces = assemble(g, shape, &[root], |i| first + i)?;
    let kept = if keep {
        pieces.decls += "layout(set = 0, binding = 3) writeonly buffer CP { float c_prod[]; };\n";
        pieces.funcs += "void put(uint i, float v) { c_out[i] = value_at(i, v); c_prod[i] = v; }\n";
        Some(context()?.alloc(4 * numel(shape) as u64)?)
    } else {
        pieces.funcs += "void put(uint i, float v) { c_out[i] = value_at(i, v); }\n";
        None
    };
    let operand = |i: usize| match &product.args[i] {
        Arg::Leaf { st, shape } => Ok((st.clone(), shape.clone())),
        Arg::Inline(_) => Err(crate::error::Error::Other(
            "a matrix product of a pending value (a bug in vkgrad)".into(),
        )),
    };
    let e = Epilogue {
        pieces,
        product: kept,
    };
    let (a, b) = (operand(0)?, operand(1)?);
    crate::ops::matmul::launch((&a.0, &a.1), (&b.0, &b.1), (ta, tb), dims, out, Some(&e))?;
    if let Some(st) = e.product {
        // Another thread may have computed it meanwhile: the same bits; keep its.
        let mut pending = base.pending.lock().unwrap_or_else(|p| p.into_inner());
        if base.ready.set(st).is_ok() {
            *pending = None;
        }
    }
    Ok(())
}

/// The pieces of several pending values of `shape` computed by one kernel: a subtree they
/// share (one value inside another's tree included) is computed once. `expr` then takes the
/// leaves and returns every value through `out` parameters, as `values_at(i, out ...)` does.
fn pieces_of_values(
    shape: &[usize],
    values: &[Arc<Value>],
    binding: impl Fn(usize) -> usize,
) -> Result<Pieces> {
    let mut g = Gen::new(shape);
    let outs = values
        .iter()
        .map(|v| g.value(v))
        .collect::<Result<Vec<_>>>()?;
    assemble(g, shape, &outs, binding)
}

/// Declarations, push constants and functions around a generated body whose results are
/// `outs` (with a base product, its value `acc` is a parameter of `expr` and `value_at`).
fn assemble(
    g: Gen,
    shape: &[usize],
    outs: &[String],
    binding: impl Fn(usize) -> usize,
) -> Result<Pieces> {
    let r = shape.len();
    let strided: Vec<usize> = (0..g.leaves.len())
        .filter(|&i| matches!(g.leaves[i].read, Read::Strided(_)))
        .collect();

    let mut decls = String::new();
    for i in 0..g.leaves.len() {
        let _ = writeln!(
            decls,
            "layout(set = 0, binding = {}) uniform samplerBuffer t{i};",
            binding(i)
        );
    }
    // `zero` is four words of 0: an XOR with one hides a value from the compiler (see the top);
    // results use word 0 and operand slots words 1-3, so no two XORs cancel.
    let mut push = vec![0, 0, 0, 0];
    let mut push_fields = String::from("    uint zero[4];\n");
    if !strided.is_empty() {
        // The shape and fast_div's multipliers of it (shaders/common.glsl): no division
        // instruction per coordinate.
        let _ = writeln!(push_fields, "    uint shape[{r}];\n    uint magic[{r}];");
        push.extend(shape.iter().map(|&d| d as u32));
        push.extend(shape.iter().map(|&d| crate::ops::div_magic(d)));
        for &i in &strided {
            let _ = writeln!(push_fields, "    uint s{i}[{r}];");
            if let Read::Strided(s) = &g.leaves[i].read {
                push.extend_from_slice(s);
            }
        }
    }
    for (i, s) in g.scalars.iter().enumerate() {
        let _ = writeln!(push_fields, "    float c{i};");
        push.push(s.to_bits());
    }

    let mut funcs = String::new();
    for i in 0..4 {
        let _ = writeln!(
            funcs,
            "float opaque{i}(float x) {{ return uintBitsToFloat(floatBitsToUint(x) ^ p.zero[{i}]); }}"
        );
    }
    let mut params: Vec<String> = (0..g.leaves.len()).map(|i| format!("float l{i}")).collect();
    let base = g.base.is_some();
    if base {
        params.push("float acc".into());
    }
    let results: Vec<String> = (0..outs.len()).map(|k| format!("r{k}")).collect();
    if let [out] = outs {
        let _ = write!(
            funcs,
            "\nfloat expr({}) {{\n{}    return {out};\n}}\n\n",
            params.join(", "),
            g.body
        );
        funcs += if base {
            "float value_at(uint i, float acc) {\n"
        } else {
            "float value_at(uint i) {\n"
        };
    } else {
        let mut all = params.clone();
        all.extend(results.iter().map(|r| format!("out float {r}")));
        let stores: String = results
            .iter()
            .zip(outs)
            .map(|(r, o)| format!("    {r} = {o};\n"))
            .collect();
        let _ = write!(
            funcs,
            "\nvoid expr({}) {{\n{}{stores}}}\n\n",
            all.join(", "),
            g.body
        );
        let outs_params: Vec<String> = results.iter().map(|r| format!("out float {r}")).collect();
        let _ = writeln!(
            funcs,
            "void values_at(uint i, {}) {{",
            outs_params.join(", ")
        );
    }
    let index = index_code(&strided, r);
    if !strided.is_empty() {
        let _ = writeln!(funcs, "    uint rem = i;\n{index}");
    }
    let mut reads: Vec<String> = g
        .leaves
        .iter()
        .enumerate()
        .map(|(i, l)| match l.read {
            Read::Whole => format!("fetch(t{i}, i)"),
            Read::One => format!("fetch(t{i}, 0u)"),
            Read::Strided(_) => format!("fetch(t{i}, j{i})"),
        })
        .collect();
    if base {
        reads.push("acc".into());
    }
    if outs.len() == 1 {
        let _ = writeln!(funcs, "    return expr({});\n}}", reads.join(", "));
    } else {
        let mut args = reads;
        args.extend(results);
        let _ = writeln!(funcs, "    expr({});\n}}", args.join(", "));
    }
    let rows = !strided.is_empty()
        && shape[r - 1].is_multiple_of(4)
        && g.leaves.iter().all(|l| match &l.read {
            Read::Strided(s) => s[r - 1] <= 1,
            _ => true,
        });
    let (leaves, reads) = g.leaves.into_iter().map(|l| (l.st, l.read)).unzip();
    Ok(Pieces {
        decls,
        push_fields,
        push,
        funcs,
        leaves,
        nodes: g.next,
        outputs: outs.len(),
        strided: !strided.is_empty(),
        rows,
        index,
        reads,
    })
}

/// GLSL setting `j{leaf}` (declared here) for each broadcast leaf of `strided` from the flat
/// index `rem` of a rank-`r` root: one coordinate per dimension, innermost first, unrolled
/// (llvmpipe runs a loop over the dimensions markedly slower), and no division for the
/// outermost (the quotient there is 0, as `rem` < the element count).
fn index_code(strided: &[usize], r: usize) -> String {
    let mut src = String::new();
    if strided.is_empty() {
        return src;
    }
    let js: Vec<String> = strided.iter().map(|i| format!("j{i} = 0u")).collect();
    let _ = writeln!(src, "    uint {};", js.join(", "));
    for d in (1..r).rev() {
        let _ = writeln!(
            src,
            "    {{\n        uint q = fast_div(rem, p.shape[{d}], p.magic[{d}]);\n        uint c = rem - q * p.shape[{d}];\n        rem = q;"
        );
        for &i in strided {
            let _ = writeln!(src, "        j{i} += c * p.s{i}[{d}];");
        }
        src += "    }\n";
    }
    for &i in strided {
        let _ = writeln!(src, "    j{i} += rem * p.s{i}[0];");
    }
    src
}

/// A generated elementwise kernel up to the start of `main`'s body: the shared GLSL, the
/// `outputs` declarations, the tree's leaves, push constants and functions.
fn kernel_head(k: &Pieces, outputs: &str) -> String {
    let mut src = String::from("#version 450\n");
    src += include_str!("../../../shaders/common.glsl");
    src += include_str!("../../../shaders/elementwise.glsl");
    src += "layout(local_size_x = 256) in;\n";
    src += outputs;
    src += &k.decls;
    let _ = write!(
        src,
        "layout(push_constant) uniform P {{\n    uint n;\n{}}} p;\n\n{}\n",
        k.push_fields, k.funcs
    );
    src += "void main() {\n    uint q = flat_id(256u);\n    uint i0 = 4u * q;\n    if (i0 >= p.n) return;\n";
    src
}

/// The four-at-once path's loads: one texel per leaf read whole, one value per leaf read as
/// one value (a kernel without broadcast leaves).
fn vec4_loads(k: &Pieces) -> String {
    let mut src = String::new();
    for (i, read) in k.reads.iter().enumerate() {
        let _ = match read {
            Read::Whole => writeln!(src, "        vec4 a{i} = texelFetch(t{i}, int(q));"),
            Read::One => writeln!(src, "        float a{i} = fetch(t{i}, 0u);"),
            // The rows path: constant along the row, or stepping by 1 along it — then the
            // leaf's other strides are multiples of its innermost size, a multiple of 4, so
            // the row's four values are one texel.
            Read::Strided(s) if s.last() == Some(&0) => {
                writeln!(src, "        float a{i} = fetch(t{i}, j{i});")
            }
            Read::Strided(_) => {
                writeln!(src, "        vec4 a{i} = texelFetch(t{i}, int(j{i} >> 2));")
            }
        };
    }
    src
}

/// `expr`'s leaf arguments for component `c` of the four-at-once paths.
fn lane_args(k: &Pieces, c: &str) -> Vec<String> {
    k.reads
        .iter()
        .enumerate()
        .map(|(i, read)| match read {
            Read::Whole => format!("a{i}.{c}"),
            Read::Strided(s) if s.last() != Some(&0) => format!("a{i}.{c}"),
            _ => format!("a{i}"),
        })
        .collect()
}

/// The start of the four-at-once path: unconditional on the rows path (the element count is a
/// multiple of 4 there), after the coordinates of the row's first element.
fn vec4_head(k: &Pieces) -> String {
    if k.rows {
        format!("    {{\n    uint rem = i0;\n{}", k.index)
    } else {
        "    if (i0 + 3u < p.n) {\n".to_string()
    }
}

/// The elementwise kernel of a tree: each invocation writes four elements of the root (one
/// vec4 store when no leaf is broadcast).
fn elementwise_source(k: &Pieces) -> String {
    let mut src = kernel_head(
        k,
        "layout(set = 0, binding = 0) writeonly buffer Y { float y[]; };\n\
         layout(set = 0, binding = 0) writeonly buffer Y4 { vec4 y4[]; };\n",
    );
    if !k.strided || k.rows {
        // Four elements at once: one texel fetch per whole leaf, one vec4 store.
        src += &vec4_head(k);
        src += &vec4_loads(k);
        let lane = |c: &str| format!("expr({})", lane_args(k, c).join(", "));
        let _ = writeln!(
            src,
            "        y4[q] = vec4({}, {}, {}, {});\n        return;\n    }}",
            lane("x"),
            lane("y"),
            lane("z"),
            lane("w")
        );
    }
    src += "    for (uint i = i0; i < min(i0 + 4u, p.n); ++i) y[i] = value_at(i);\n}\n";
    src
}

/// The kernel of several values of one shape (`pieces_of_values`): each invocation computes
/// four elements of every value, output `k` at binding `k`.
fn multi_output_source(k: &Pieces) -> String {
    let n = k.outputs;
    let mut outputs = String::new();
    for o in 0..n {
        let _ = writeln!(
            outputs,
            "layout(set = 0, binding = {o}) writeonly buffer Y{o} {{ float y{o}[]; }};\n\
             layout(set = 0, binding = {o}) writeonly buffer Y4_{o} {{ vec4 y4_{o}[]; }};"
        );
    }
    let mut src = kernel_head(k, &outputs);
    let outs: Vec<String> = (0..n).map(|o| format!("o{o}")).collect();
    if !k.strided || k.rows {
        src += &vec4_head(k);
        src += &vec4_loads(k);
        let _ = writeln!(src, "        vec4 {};", outs.join(", "));
        for c in ["x", "y", "z", "w"] {
            let mut a = lane_args(k, c);
            a.extend(outs.iter().map(|o| format!("{o}.{c}")));
            let _ = writeln!(src, "        expr({});", a.join(", "));
        }
        for o in 0..n {
            let _ = writeln!(src, "        y4_{o}[q] = o{o};");
        }
        src += "        return;\n    }\n";
    }
    let _ = writeln!(
        src,
        "    for (uint i = i0; i < min(i0 + 4u, p.n); ++i) {{\n        float {};\n        values_at(i, {});",
        outs.join(", "),
        outs.join(", ")
    );
    for o in 0..n {
        let _ = writeln!(src, "        y{o}[i] = o{o};");
    }
    src += "    }\n}\n";
    src
}

/// Computes `values` (pending, of `shape`) into `outs` with one generated kernel; `None` when
/// they need more leaves or push constants than one kernel may have (nothing was dispatched).
pub(super) fn run_fused_values(
    shape: &[usize],
    values: &[Arc<Value>],
    outs: &[&Storage],
) -> Result<Option<()>> {
    let k = pieces_of_values(shape, values, |i| i + values.len())?;
    // The push-constant block is the element count, then the tree's words.
    if k.leaves.len() > super::MAX_LEAVES || 1 + k.push.len() > super::MAX_PUSH_WORDS {
        return Ok(None);
    }
    let label = format!("Fused {} ops, {} outputs", k.nodes, values.len());
    dispatch(&k, &multi_output_source(&k), &label, outs, shape)?;
    Ok(Some(()))
}

/// Dispatches a generated elementwise kernel: `outs` at the first bindings, the leaves after
/// them, the element count and the tree's words as push constants, four elements per lane.
fn dispatch(
    k: &Pieces,
    source: &str,
    label: &str,
    outs: &[&Storage],
    shape: &[usize],
) -> Result<()> {
    let mut binds: Vec<Bind> = outs.iter().map(|o| Bind::write(o)).collect();
    binds.extend(k.leaves.iter().map(|l| Bind::texels(l)));
    let n = numel(shape) as u64;
    let mut push = vec![n as u32];
    push.extend_from_slice(&k.push);
    context()?.dispatch_generated(
        source,
        label,
        &binds,
        bytemuck::cast_slice(&push),
        grid(n.div_ceil(4), 256),
    )
}

/// Computes the tree into `out` with one generated kernel: the matmul kernel of a pending
/// product in it (a fused epilogue), or an elementwise one.
pub(super) fn run_fused(shape: &[usize], expr: &Expr, out: &Storage) -> Result<()> {
    let mut g = Gen::new(shape);
    g.base_ok = true;
    let root = g.expr(expr)?;
    if g.base.is_some() {
        return run_epilogue(g, root, shape, out);
    }
    let k = assemble(g, shape, &[root], |i| i + 1)?;
    let label = format!("Fused {} ops", k.nodes);
    dispatch(&k, &elementwise_source(&k), &label, &[out], shape)
}

/// The source of a hand-written kernel (`template`, a file of `shaders/`) that reads its input
/// through `load_x` with the tree of `k` fused in as a prologue: `#define FUSED` on, the shared
/// GLSL files inlined, each `layout(constant_id = I) const uint NAME = D;` fixed to `spec[I]`,
/// and the markers `// @fused-push` (inside the push-constant block, after the kernel's own
/// fields) and `// @fused-input` (after the block) replaced by the tree's fields and functions.
pub(crate) fn fused_variant(template: &str, spec: &[u32], k: &Pieces) -> Result<String> {
    let bug = |what: &str| {
        crate::error::Error::Other(format!(
            "a fused kernel template lacks {what} (a bug in vkgrad)"
        ))
    };
    let mut src = String::new();
    let mut spec_seen = 0;
    for line in template.lines() {
        let t = line.trim();
        if t == "#version 450" {
            src += "#version 450\n#define FUSED 1\n";
        } else if t == "#include \"common.glsl\"" {
            src += include_str!("../../../shaders/common.glsl");
            src += include_str!("../../../shaders/elementwise.glsl");
        } else if let Some(rest) = t.strip_prefix("layout(constant_id = ") {
            let (id, decl) = rest
                .split_once(") const uint ")
                .ok_or_else(|| bug("spec constants"))?;
            let id: usize = id.parse().map_err(|_| bug("spec constants"))?;
            let name = decl
                .split(' ')
                .next()
                .ok_or_else(|| bug("spec constants"))?;
            let v = spec
                .get(id)
                .ok_or_else(|| bug("a value for every spec constant"))?;
            let _ = writeln!(src, "const uint {name} = {v}u;");
            spec_seen += 1;
        } else if t.starts_with("// @fused-push") {
            src += &k.push_fields;
        } else if t.starts_with("// @fused-input") {
            src += &k.decls;
            src += &k.funcs;
        } else {
            src += line;
            src += "\n";
        }
    }
    if spec_seen != spec.len()
        || !template.contains("// @fused-push")
        || !template.contains("// @fused-input")
    {
        return Err(bug(
            "its spec constants or the // @fused-push / // @fused-input markers",
        ));
    }
    Ok(src)
}

/// The pieces of a pending value's tree, for a kernel that reads the value through
/// `value_at(i)` instead of from memory (a fused prologue), with leaf `i` at `binding(i)`.
/// Errors if the value has been computed meanwhile.
///
/// With `walk` (an axis of the value), the pieces also define `walk_start(i)` and
/// `walk_at(i, t)`: the value at flat index `i`, which lies `t` steps along that axis from
/// the element last given to `walk_start`. A consumer that reads along one axis (a reduction
/// over it) computes the broadcast leaves' coordinates once, at the start, and steps each
/// leaf's index by its stride along the axis — no division per element. Without `walk` they
/// are `value_at(i)`.
pub(crate) fn prologue_pieces(
    v: &Arc<Value>,
    walk: Option<usize>,
    binding: impl Fn(usize) -> usize,
) -> Result<Option<Pieces>> {
    match v.expr() {
        Some(e) => {
            let mut k = pieces(&v.shape, &e, binding)?;
            k.funcs += &walk_funcs(&k, walk);
            Ok(Some(k))
        }
        None => Ok(None),
    }
}

/// `walk_start` and `walk_at` of a prologue's pieces (see `prologue_pieces`).
fn walk_funcs(k: &Pieces, walk: Option<usize>) -> String {
    let strided: Vec<usize> = (0..k.reads.len())
        .filter(|&i| matches!(k.reads[i], Read::Strided(_)))
        .collect();
    let Some(ax) = walk.filter(|_| !strided.is_empty()) else {
        return "void walk_start(uint i) {}\nfloat walk_at(uint i, uint t) { return value_at(i); }\n"
            .into();
    };
    let mut src = String::new();
    for i in &strided {
        let _ = writeln!(src, "uint w{i};");
    }
    let _ = write!(
        src,
        "void walk_start(uint i) {{\n    uint rem = i;\n{}",
        k.index
    );
    for i in &strided {
        let _ = writeln!(src, "    w{i} = j{i};");
    }
    src += "}\n";
    let args: Vec<String> = k
        .reads
        .iter()
        .enumerate()
        .map(|(i, read)| match read {
            Read::Whole => format!("fetch(t{i}, i)"),
            Read::One => format!("fetch(t{i}, 0u)"),
            Read::Strided(_) => format!("fetch(t{i}, w{i} + t * p.s{i}[{ax}])"),
        })
        .collect();
    let _ = writeln!(
        src,
        "float walk_at(uint i, uint t) {{ return expr({}); }}",
        args.join(", ")
    );
    src
}

#[cfg(test)]
mod tests {
    use super::Gen;
    use crate::tensor::Tensor;

    /// Whether a fused epilogue would store the product: only when something outside the tree
    /// still holds it (or a value between it and the root).
    fn stores_product(y: &Tensor) -> bool {
        let v = y.lazy_input().0;
        let e = v.expr().expect("pending");
        let mut g = Gen::new(y.shape());
        g.base_ok = true;
        g.expr(&e).unwrap();
        assert!(g.base.is_some(), "the product is the tree's base");
        g.held_outside()
    }

    #[test]
    fn an_epilogue_stores_the_product_only_when_it_is_held() {
        crate::lazy::set_fusion(Some(true));
        let x = Tensor::from_vec((0..32).map(|i| i as f32).collect(), &[4, 8]).unwrap();
        let w = Tensor::ones(&[8, 4]).unwrap();
        let b = Tensor::ones(&[4]).unwrap();
        let y = x.matmul(&w).unwrap().add(&b).unwrap().relu().unwrap();
        assert!(!stores_product(&y), "nothing else holds the product");
        let p = x.matmul(&w).unwrap();
        let y = p.add(&b).unwrap().relu().unwrap();
        assert!(stores_product(&y), "the product is held");
        drop(p);
        let mid = x.matmul(&w).unwrap().add(&b).unwrap();
        let y = mid.relu().unwrap();
        assert!(
            stores_product(&y),
            "a value between the product and the root is held"
        );
        crate::lazy::set_fusion(None);
    }

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
