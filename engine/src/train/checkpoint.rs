//! Checkpoints in safetensors: named f32 tensors (parameters, buffers, optimiser state, EMA
//! target, loss state) plus string metadata (format, config, step, epoch). Written to a
//! temporary file, synced, then renamed over the old one: a crash leaves the previous
//! checkpoint intact.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

pub const FORMAT: &str = "vkgrad-checkpoint-1";
pub const FILE: &str = "checkpoint.safetensors";

pub struct Checkpoint {
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    pub meta: HashMap<String, String>,
}

fn err(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Other(format!("{}: {why}", path.display()))
}

impl Checkpoint {
    pub fn new() -> Checkpoint {
        let mut meta = HashMap::new();
        meta.insert("format".into(), FORMAT.into());
        Checkpoint {
            tensors: BTreeMap::new(),
            meta,
        }
    }

    pub fn put(&mut self, name: &str, t: &Tensor) -> Result<()> {
        self.tensors
            .insert(name.into(), (t.shape().to_vec(), t.to_vec()?));
        Ok(())
    }

    pub fn put_host(&mut self, name: &str, shape: Vec<usize>, data: Vec<f32>) {
        self.tensors.insert(name.into(), (shape, data));
    }

    /// A tensor uploaded to the device, if present.
    pub fn get(&self, name: &str) -> Option<Tensor> {
        self.tensors
            .get(name)
            .and_then(|(s, d)| Tensor::from_slice(d, s).ok())
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE);
        let bytes: Vec<(String, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(k, (_, d))| (k.clone(), d.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        let views = self
            .tensors
            .iter()
            .zip(&bytes)
            .map(|((k, (s, _)), (_, b))| {
                TensorView::new(Dtype::F32, s.clone(), b)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| err(&path, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let data =
            safetensors::serialize(views, Some(self.meta.clone())).map_err(|e| err(&path, e))?;
        let tmp = dir.join(format!("{FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(|e| err(&tmp, e))?;
        f.write_all(&data).map_err(|e| err(&tmp, e))?;
        f.sync_all().map_err(|e| err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))
    }

    pub fn load(dir: &Path) -> Result<Checkpoint> {
        let path = if dir.is_dir() {
            dir.join(FILE)
        } else {
            dir.to_path_buf()
        };
        let bytes = std::fs::read(&path).map_err(|e| err(&path, format!("cannot be read: {e}")))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| err(&path, format!("is not a valid safetensors file: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| err(&path, e))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(err(
                &path,
                format!("is not a vkgrad checkpoint (metadata format is not `{FORMAT}`)"),
            ));
        }
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(err(
                    &path,
                    format!("tensor `{name}` is {:?}, expected F32", view.dtype()),
                ));
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.insert(name, (view.shape().to_vec(), data));
        }
        Ok(Checkpoint { tensors, meta })
    }

    pub fn meta_u64(&self, key: &str) -> Result<u64> {
        self.meta
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Error::Other(format!(
                    "checkpoint metadata `{key}` is missing or not a number"
                ))
            })
    }
}

impl Default for Checkpoint {
    fn default() -> Self {
        Self::new()
    }
}
