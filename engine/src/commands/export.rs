//! `vkgrad export`: a saved run's encoder (and optionally its projection head) as an ONNX
//! graph of standard operators.

use super::output_allowed;
use std::path::{Path, PathBuf};
use vkgrad::train::model::Module;
use vkgrad::train::open_networks;
use vkgrad::{Error, Result};

pub fn export(
    checkpoint: &Path,
    format: &str,
    out: &Path,
    head: bool,
    overwrite: bool,
    plugins: &[PathBuf],
) -> Result<()> {
    if format != "onnx" {
        return Err(Error::Other(format!(
            "--format {format}: the export writes onnx"
        )));
    }
    output_allowed(out, overwrite, &[checkpoint])?;
    // The networks alone, from the saved config: the run's data need not be here.
    let (_plugins, networks, cfg, epoch) = open_networks(checkpoint, plugins)?;
    let modules: Vec<&Module> = networks.iter().take(if head { 2 } else { 1 }).collect();
    let sample_shape = modules[0].input_shape()?;
    let parts: Vec<String> = modules
        .iter()
        .map(|m| format!("{} ({})", m.prefix, m.component))
        .collect();
    let doc = format!(
        "vkgrad {} run {} epoch {epoch}: {}",
        cfg.method,
        checkpoint.display(),
        parts.join(" -> ")
    );
    let bytes = vkgrad::export::onnx(&modules, &sample_shape, &doc)?;
    vkgrad::train::files::write_atomic(out, &bytes, 0)?;
    let mut shape = vec!["N".to_string()];
    shape.extend(sample_shape.iter().map(|d| d.to_string()));
    let mut counts = std::collections::BTreeMap::new();
    for op in vkgrad::export::op_types(&bytes)? {
        *counts.entry(op).or_insert(0) += 1;
    }
    let ops: Vec<String> = counts.iter().map(|(o, n)| format!("{o} x{n}")).collect();
    eprintln!(
        "{}: {} as ONNX (opset {}), input `input` [{}] (f32, pixels in [0, 1]), output `embedding`; {}",
        out.display(),
        parts.join(" -> "),
        vkgrad::export::OPSET,
        shape.join(", "),
        ops.join(", ")
    );
    Ok(())
}
