//! `vkgrad augment`: a picture of what an augmentation preset does.

use serde_json::json;
use std::path::{Path, PathBuf};
use vkgrad::data::Dataset;
use vkgrad::{Error, Result, Tensor};

/// `vkgrad augment`: originals and two augmented views of the first samples, as a PNG grid.
pub fn augment(
    preset: &str,
    data: &str,
    out: &Path,
    count: usize,
    seed: u64,
    plugins: &[PathBuf],
) -> Result<()> {
    let ds = Dataset::load(data)?;
    let shape = ds.sample_shape.clone();
    if shape.len() != 3 {
        return Err(Error::Other(format!(
            "{data}: samples of shape {shape:?} are not images"
        )));
    }
    if vkgrad::train::rundir::same_file(out, Path::new(data)) {
        return Err(Error::Other(format!(
            "--out {} is the data; write the picture to another file",
            out.display()
        )));
    }
    let reg = vkgrad::plugin::Registry::load_for(plugins)?;
    let comp = reg.find("augmentation", preset)?;
    let declared = comp.option_names();
    let idx: Vec<usize> = (0..count.min(ds.len())).collect();
    let mut bshape = vec![idx.len()];
    bshape.extend(&shape);
    let x = Tensor::from_vec(ds.gather(&idx), &bshape)?;
    let mut rows = vec![("original".to_string(), x.to_vec()?)];
    for view in 1..=2u64 {
        let mut o = serde_json::Map::new();
        for (k, v) in [
            ("channels", json!(shape[0])),
            ("size", json!(shape[1])),
            ("view", json!(view)),
        ] {
            if declared.iter().any(|d| d == k) {
                o.insert(k.into(), v);
            }
        }
        let inst = comp.instantiate(&serde_json::Value::Object(o).to_string())?;
        let y = inst.augment(&x, vkgrad::train::mix(seed, 0, view))?;
        rows.push((format!("view {view}"), y.to_vec()?));
    }
    let rows: Vec<(&str, Vec<f32>)> = rows.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    let zoom = (96 / shape[1]).max(1);
    vkgrad::plot::image_grid(out, &rows, [shape[0], shape[1], shape[2]], idx.len(), zoom)?;
    println!(
        "{}: {} originals and two views with {}",
        out.display(),
        idx.len(),
        comp.name
    );
    Ok(())
}
