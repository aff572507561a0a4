//! ONNX export of a trained encoder (and optionally its projection head): the host ops the
//! encoder plugin runs in evaluation mode are recorded (`plugin::trace`) and each becomes
//! standard ONNX operators (opset 13). Nothing describes the network a second time: what the
//! device runs is what the file holds.
//!
//! Two traces, at batch sizes 2 and 3, find the batch dimension: a `reshape` whose target
//! differs only there gets -1, anything else that depends on the batch is an error. Ops whose
//! inputs are all parameters (batch norm's running statistics turned into a per-channel
//! scale and shift) are folded into constants with the values the device computed, so batch
//! norm becomes a Sub, a Mul and an Add per channel, which `fold.rs` then folds into the Conv or
//! Linear before it. An op with no ONNX mapping is an error naming it and the component that
//! ran it.

mod fold;
mod proto;

use crate::error::{Error, Result};
use crate::plugin::trace::{self, TracedOp};
use crate::tensor::Tensor;
use crate::train::model::Module;
use proto::*;
use serde_json::Value;
use std::collections::HashMap;

/// The opset the graph is written for (widely supported: onnxruntime, tract, PyTorch).
pub const OPSET: i64 = 13;
/// IR version 7 goes with opset 13.
const IR_VERSION: i64 = 7;

/// One module's ops at the two trace batch sizes.
struct Traced {
    component: String,
    at2: Vec<TracedOp>,
    at3: Vec<TracedOp>,
}

/// The ONNX model of `modules` run in sequence on samples of `sample_shape`: input `input`
/// [N, ...sample_shape], output `embedding` [N, D].
pub fn onnx(modules: &[&Module], sample_shape: &[usize], doc: &str) -> Result<Vec<u8>> {
    let input = |b: usize| -> Result<Tensor> {
        let mut shape = vec![b];
        shape.extend(sample_shape);
        let n: usize = shape.iter().product();
        Tensor::from_vec((0..n).map(|i| (i as f32 * 0.37).sin()).collect(), &shape)
    };
    let (x2, x3) = (input(2)?, input(3)?);
    let mut traced = Vec::new();
    let (mut h2, mut h3) = (x2.clone(), x3.clone());
    for m in modules {
        let (y2, at2) = trace::record(|| crate::no_grad(|| m.run(&h2, false)))?;
        let (y3, at3) = trace::record(|| crate::no_grad(|| m.run(&h3, false)))?;
        traced.push(Traced {
            component: m.component.clone(),
            at2,
            at3,
        });
        (h2, h3) = (y2, y3);
    }
    let mut g = Builder::default();
    g.names.insert(x2.id(), "input".into());
    g.names3.insert(x3.id(), "input".into());
    for m in modules {
        for (name, t) in m.named() {
            g.params.insert(t.id(), (name, t));
        }
    }
    for t in &traced {
        if t.at2.len() != t.at3.len() {
            return Err(Error::Other(format!(
                "export: {} runs {} ops at batch 2 and {} at batch 3; a graph of it would depend on the batch size",
                t.component,
                t.at2.len(),
                t.at3.len()
            )));
        }
        for (a, b) in t.at2.iter().zip(&t.at3) {
            g.op(a, b)
                .map_err(|e| Error::Other(format!("export: {} ({}): {e}", t.component, a.op)))?;
        }
    }
    let out =
        g.names.get(&h2.id()).cloned().ok_or_else(|| {
            Error::Other("export: the output does not depend on the input".into())
        })?;
    g.node("Identity", &[&out], "embedding", vec![]);
    let width = *h2.shape().last().unwrap_or(&0);
    let mut in_dims: Vec<std::result::Result<usize, &str>> = vec![Err("N")];
    in_dims.extend(sample_shape.iter().map(|&d| Ok(d)));
    let mut graph = GraphProto {
        node: g.nodes,
        name: "encoder".into(),
        initializer: g.initializers,
        input: vec![value_info("input", &in_dims)],
        output: vec![value_info("embedding", &[Err("N"), Ok(width)])],
    };
    fold::batch_norms(&mut graph);
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "vkgrad".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc.into(),
        graph: Some(graph),
    };
    Ok(prost::Message::encode_to_vec(&model))
}

#[derive(Default)]
struct Builder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// Names of the values that depend on the input, by tensor id (trace at 2 and at 3).
    names: HashMap<u64, String>,
    names3: HashMap<u64, String>,
    /// Parameters by tensor id: full name and value.
    params: HashMap<u64, (String, Tensor)>,
    /// Values computed from parameters alone, by tensor id.
    folded: HashMap<u64, Tensor>,
    /// Initializers already written, by tensor id.
    written: HashMap<u64, String>,
    count: usize,
}

/// An input of a traced op: a value of the graph, or a constant.
enum In<'a> {
    Value(String),
    Const(&'a Tensor),
}

impl Builder {
    fn fresh(&mut self, stem: &str) -> String {
        self.count += 1;
        format!("{stem}{}", self.count)
    }

    fn node(&mut self, op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) {
        let name = self.fresh(&format!("{op}_"));
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name,
            op_type: op.into(),
            attribute,
        });
    }

    /// A new value computed by `op` (for chains inside one mapping).
    fn tmp(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        let out = self.fresh("v");
        self.node(op, inputs, &out, attribute);
        out
    }

    fn floats(&mut self, name: String, dims: &[usize], data: Vec<f32>) -> String {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            float_data: data,
            name: name.clone(),
            ..Default::default()
        });
        name
    }

    fn scalar(&mut self, v: f32) -> String {
        let n = self.fresh("c");
        self.floats(n, &[], vec![v])
    }

    fn ints(&mut self, v: &[i64]) -> String {
        let name = self.fresh("c");
        self.initializers.push(TensorProto {
            dims: vec![v.len() as i64],
            data_type: INT64,
            int64_data: v.to_vec(),
            name: name.clone(),
            ..Default::default()
        });
        name
    }

    /// The graph name of a constant input, writing it as an initializer on first use.
    fn constant(&mut self, t: &Tensor) -> Result<String> {
        if let Some(n) = self.written.get(&t.id()) {
            return Ok(n.clone());
        }
        let name = match self.params.get(&t.id()) {
            Some((n, _)) => n.clone(),
            None => self.fresh("const"),
        };
        let name = self.floats(name, t.shape(), t.to_vec()?);
        self.written.insert(t.id(), name.clone());
        Ok(name)
    }

    fn classify<'a>(&self, t: &'a Tensor) -> In<'a> {
        match self.names.get(&t.id()) {
            Some(n) => In::Value(n.clone()),
            None => In::Const(t),
        }
    }

    /// Adds one traced op (`a` at batch 2, `b` the same op at batch 3).
    fn op(&mut self, a: &TracedOp, b: &TracedOp) -> Result<()> {
        if a.op != b.op {
            return Err(Error::Other(format!(
                "the op sequence differs between batch sizes (`{}` vs `{}`)",
                a.op, b.op
            )));
        }
        let mut ins = Vec::new();
        for (i, (x, y)) in a.inputs.iter().zip(&b.inputs).enumerate() {
            let (Some(x), Some(y)) = (x, y) else {
                return Err(Error::Other(format!(
                    "input {i} is an integer tensor, which the export does not carry"
                )));
            };
            let c = self.classify(x);
            if let In::Const(t) = &c {
                if t.shape() != y.shape() || self.names3.contains_key(&y.id()) {
                    return Err(Error::Other(format!(
                        "input {i} is a constant whose shape depends on the batch size ({:?} at 2, {:?} at 3)",
                        t.shape(),
                        y.shape()
                    )));
                }
            }
            ins.push(c);
        }
        if ins.iter().all(|c| matches!(c, In::Const(_))) {
            // Parameters only: the device already computed the value.
            self.folded.insert(a.output.id(), a.output.clone());
            return Ok(());
        }
        let mut names = Vec::new();
        for c in &ins {
            names.push(match c {
                In::Value(n) => n.clone(),
                In::Const(t) => self.constant(t)?,
            });
        }
        let shapes: Vec<Vec<usize>> = a
            .inputs
            .iter()
            .map(|t| t.as_ref().map_or(vec![], |t| t.shape().to_vec()))
            .collect();
        let out = self.fresh("t");
        self.map(a, b, &names, &shapes, &out)?;
        self.names.insert(a.output.id(), out.clone());
        self.names3.insert(b.output.id(), out);
        Ok(())
    }

    /// The ONNX nodes of one host op, writing `out`.
    fn map(
        &mut self,
        a: &TracedOp,
        b: &TracedOp,
        ins: &[String],
        shapes: &[Vec<usize>],
        out: &str,
    ) -> Result<()> {
        let x = ins[0].as_str();
        let int = |key: &str| a.attrs.get(key).and_then(Value::as_i64);
        let uint = |key: &str, default: i64| int(key).unwrap_or(default);
        let float = |key: &str| a.attrs.get(key).and_then(Value::as_f64).unwrap_or(0.0) as f32;
        let rank = shapes[0].len() as i64;
        if a.op != "reshape" && a.attrs != b.attrs {
            return Err(Error::Other(format!(
                "its attributes depend on the batch size ({} at 2, {} at 3)",
                a.attrs, b.attrs
            )));
        }
        let binary = |op: &str| -> Option<&'static str> {
            Some(match op {
                "add" | "add_scalar" => "Add",
                "sub" | "sub_scalar" => "Sub",
                "mul" | "mul_scalar" => "Mul",
                "div" | "div_scalar" => "Div",
                "maximum" | "maximum_scalar" => "Max",
                "minimum" | "minimum_scalar" => "Min",
                _ => return None,
            })
        };
        let unary = |op: &str| -> Option<&'static str> {
            Some(match op {
                "neg" => "Neg",
                "exp" => "Exp",
                "log" => "Log",
                "sqrt" => "Sqrt",
                "abs" => "Abs",
                "relu" => "Relu",
                "sigmoid" => "Sigmoid",
                "tanh" => "Tanh",
                "sin" => "Sin",
                "cos" => "Cos",
                "detach" => "Identity",
                // An exported network runs in one process: the sum over one replica.
                "replica_sum" => "Identity",
                _ => return None,
            })
        };
        let op = a.op.as_str();
        match op {
            _ if op.ends_with("_scalar") && binary(op).is_some() => {
                let s = self.scalar(float("s"));
                self.node(binary(op).unwrap_or("Add"), &[x, &s], out, vec![]);
            }
            "rsub_scalar" | "rdiv_scalar" => {
                let s = self.scalar(float("s"));
                let o = if op == "rsub_scalar" { "Sub" } else { "Div" };
                self.node(o, &[&s, x], out, vec![]);
            }
            _ if binary(op).is_some() => {
                self.node(binary(op).unwrap_or("Add"), &[x, &ins[1]], out, vec![]);
            }
            _ if unary(op).is_some() => {
                self.node(unary(op).unwrap_or("Identity"), &[x], out, vec![])
            }
            "rsqrt" => {
                let r = self.tmp("Sqrt", &[x], vec![]);
                self.node("Reciprocal", &[&r], out, vec![]);
            }
            "powf" => {
                let p = self.scalar(float("p"));
                self.node("Pow", &[x, &p], out, vec![]);
            }
            "softmax" | "log_softmax" => {
                let o = if op == "softmax" {
                    "Softmax"
                } else {
                    "LogSoftmax"
                };
                self.node(o, &[x], out, vec![attr_int("axis", -1)]);
            }
            "l2_normalize" => {
                // x / max(‖x‖, eps) over the last axis, as the host op (PyTorch's F.normalize).
                let n = self.tmp(
                    "ReduceL2",
                    &[x],
                    vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)],
                );
                let eps =
                    self.scalar(a.attrs.get("eps").and_then(Value::as_f64).unwrap_or(1e-12) as f32);
                let m = self.tmp("Max", &[&n, &eps], vec![]);
                self.node("Div", &[x, &m], out, vec![]);
            }
            "matmul" => {
                let flag = |k: &str| a.attrs.get(k).and_then(Value::as_bool).unwrap_or(false);
                let swap = |r: usize| -> Vec<i64> {
                    let mut p: Vec<i64> = (0..r as i64).collect();
                    p.swap(r - 2, r - 1);
                    p
                };
                let mut l = ins[0].clone();
                let mut r = ins[1].clone();
                if flag("ta") {
                    l = self.tmp(
                        "Transpose",
                        &[&l],
                        vec![attr_ints("perm", &swap(shapes[0].len()))],
                    );
                }
                if flag("tb") {
                    r = self.tmp(
                        "Transpose",
                        &[&r],
                        vec![attr_ints("perm", &swap(shapes[1].len()))],
                    );
                }
                self.node("MatMul", &[&l, &r], out, vec![]);
            }
            "conv2d" => {
                let w = &shapes[1];
                let (s, p, d) = (uint("stride", 1), uint("padding", 0), uint("dilation", 1));
                let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
                self.node(
                    "Conv",
                    &refs,
                    out,
                    vec![
                        attr_ints("kernel_shape", &[w[2] as i64, w[3] as i64]),
                        attr_ints("strides", &[s, s]),
                        attr_ints("pads", &[p, p, p, p]),
                        attr_ints("dilations", &[d, d]),
                        attr_int("group", 1),
                    ],
                );
            }
            "max_pool2d" | "avg_pool2d" => {
                let k = uint("kernel", 1);
                let (s, p, d) = (uint("stride", k), uint("padding", 0), uint("dilation", 1));
                if op == "max_pool2d" {
                    self.node(
                        "MaxPool",
                        &[x],
                        out,
                        vec![
                            attr_ints("kernel_shape", &[k, k]),
                            attr_ints("strides", &[s, s]),
                            attr_ints("pads", &[p, p, p, p]),
                            attr_ints("dilations", &[d, d]),
                        ],
                    );
                } else {
                    if p != 0 || d != 1 {
                        return Err(Error::Other(
                            "avg_pool2d with padding or dilation has no opset-13 AveragePool equivalent".into(),
                        ));
                    }
                    self.node(
                        "AveragePool",
                        &[x],
                        out,
                        vec![
                            attr_ints("kernel_shape", &[k, k]),
                            attr_ints("strides", &[s, s]),
                        ],
                    );
                }
            }
            "global_avg_pool" => {
                // The host op gives [N, C]; ONNX's gives [N, C, 1, 1].
                let g = self.tmp("GlobalAveragePool", &[x], vec![]);
                self.node("Flatten", &[&g], out, vec![attr_int("axis", 1)]);
            }
            "reshape" => {
                let (s2, s3) = (int_list(a, "shape")?, int_list(b, "shape")?);
                let differ: Vec<usize> = (0..s2.len().min(s3.len()))
                    .filter(|&i| s2[i] != s3[i])
                    .collect();
                if s2.len() != s3.len() || differ.len() > 1 {
                    return Err(Error::Other(format!(
                        "reshape to {s2:?} at batch 2 and {s3:?} at batch 3: more than the batch dimension changes"
                    )));
                }
                let mut shape = s2;
                if let Some(&i) = differ.first() {
                    shape[i] = -1;
                }
                let s = self.ints(&shape);
                self.node("Reshape", &[x, &s], out, vec![]);
            }
            "permute" => {
                let dims = int_list(a, "dims")?;
                self.node("Transpose", &[x], out, vec![attr_ints("perm", &dims)]);
            }
            "transpose" => {
                let norm = |v: i64| if v < 0 { v + rank } else { v };
                let (i, j) = (norm(uint("a", 0)), norm(uint("b", 0)));
                let mut perm: Vec<i64> = (0..rank).collect();
                perm.swap(i as usize, j as usize);
                self.node("Transpose", &[x], out, vec![attr_ints("perm", &perm)]);
            }
            "sum" | "mean" | "max" | "min" => {
                let keep = a
                    .attrs
                    .get("keepdim")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let axes: Vec<i64> = match int("axis") {
                    Some(ax) => vec![ax],
                    None => (0..rank).collect(),
                };
                let o = match op {
                    "sum" => "ReduceSum",
                    "mean" => "ReduceMean",
                    "max" => "ReduceMax",
                    _ => "ReduceMin",
                };
                let keepdims = attr_int("keepdims", keep as i64);
                if op == "sum" {
                    // Opset 13 takes ReduceSum's axes as an input.
                    let ax = self.ints(&axes);
                    self.node(o, &[x, &ax], out, vec![keepdims]);
                } else {
                    self.node(o, &[x], out, vec![attr_ints("axes", &axes), keepdims]);
                }
            }
            "concat" => {
                let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
                self.node(
                    "Concat",
                    &refs,
                    out,
                    vec![attr_int("axis", uint("axis", 0))],
                );
            }
            "narrow" => {
                let (axis, start, len) = (uint("axis", 0), uint("start", 0), uint("len", 0));
                let (st, en, ax) = (
                    self.ints(&[start]),
                    self.ints(&[start + len]),
                    self.ints(&[axis]),
                );
                self.node("Slice", &[x, &st, &en, &ax], out, vec![]);
            }
            other => {
                return Err(Error::Other(format!(
                    "host op `{other}` has no ONNX mapping in the export"
                )))
            }
        }
        Ok(())
    }
}

/// An integer-list attribute of a traced op (the host's schema has already required it, so a
/// missing or mistyped one is a bug worth an error, not an empty list).
fn int_list(t: &TracedOp, key: &str) -> Result<Vec<i64>> {
    t.attrs
        .get(key)
        .and_then(Value::as_array)
        .and_then(|v| v.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>())
        .ok_or_else(|| Error::Other(format!("attribute `{key}` is not a list of integers")))
}

/// The operator types of an ONNX model's graph, in order (for reports and tests).
pub fn op_types(bytes: &[u8]) -> Result<Vec<String>> {
    let m: ModelProto = prost::Message::decode(bytes)
        .map_err(|e| Error::Other(format!("not an ONNX model: {e}")))?;
    Ok(m.graph
        .map(|g| g.node.into_iter().map(|n| n.op_type).collect())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An op the export cannot write is an error that names it, and so is an integer input.
    #[test]
    fn an_op_without_an_onnx_mapping_is_an_error_naming_it() {
        let x = Tensor::from_vec(vec![1.0, -2.0, 3.0], &[1, 3]).unwrap();
        let y = x.exp().unwrap();
        let mut g = Builder::default();
        g.names.insert(x.id(), "input".into());
        let op = |name: &str, inputs: Vec<Option<Tensor>>| TracedOp {
            op: name.into(),
            attrs: serde_json::json!({}),
            inputs,
            output: y.clone(),
        };
        let gt = op("gt", vec![Some(x.clone()), Some(x.clone())]);
        let e = g.op(&gt, &gt).unwrap_err().to_string();
        assert!(e.contains("host op `gt` has no ONNX mapping"), "{e}");
        let ints = op("index_select", vec![Some(x.clone()), None]);
        let e = g.op(&ints, &ints).unwrap_err().to_string();
        assert!(e.contains("integer tensor"), "{e}");
        // The mapped ops pass: exp of the input becomes an Exp node.
        let exp = op("exp", vec![Some(x.clone())]);
        g.op(&exp, &exp).unwrap();
        assert_eq!(g.nodes.last().unwrap().op_type, "Exp");
    }
}
