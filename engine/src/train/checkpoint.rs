//! Checkpoints in safetensors: named f32 tensors (parameters, buffers, optimiser state, EMA
//! target, loss state) plus string metadata (format, config, step, epoch, data fingerprint).
//! Written atomically (`files::write_atomic`): a crash leaves the previous checkpoint intact.
//!
//! Integrity: the metadata carries a SHA-256 over every tensor (name, shape, bytes) and every
//! other metadata entry; loading recomputes it, so a flipped byte is an error, not a silently
//! different model. Non-finite values are refused on save and on load. A checkpoint written
//! before checksums existed loads with a warning.

use super::files::write_atomic;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub const FORMAT: &str = "vkgrad-checkpoint-1";
/// The last checkpoint of a run.
pub const FILE: &str = "checkpoint.safetensors";
/// The checkpoint of the epoch with the best held-out kNN accuracy so far.
pub const BEST: &str = "best.safetensors";
const CHECKSUM: &str = "checksum";

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

    /// A tensor uploaded to the device: `None` if the checkpoint does not hold it, an error if
    /// it does but the upload fails.
    pub fn get(&self, name: &str) -> Result<Option<Tensor>> {
        self.tensors
            .get(name)
            .map(|(s, d)| Tensor::from_slice(d, s))
            .transpose()
    }

    /// SHA-256 over the tensors (sorted by name: name, rank, dims, little-endian bytes) and
    /// the metadata other than the checksum itself (sorted by key).
    fn checksum(&self) -> String {
        let mut h = Sha256::new();
        for (name, (shape, data)) in &self.tensors {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((shape.len() as u64).to_le_bytes());
            for d in shape {
                h.update((*d as u64).to_le_bytes());
            }
            for v in data {
                h.update(v.to_le_bytes());
            }
        }
        let meta: BTreeMap<&String, &String> =
            self.meta.iter().filter(|(k, _)| *k != CHECKSUM).collect();
        for (k, v) in meta {
            for s in [k, v] {
                h.update((s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
        }
        let digest = h.finalize();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// The first tensor holding a NaN or an infinity, and where.
    fn non_finite(&self) -> Option<(String, usize, f32)> {
        self.tensors.iter().find_map(|(name, (_, d))| {
            d.iter()
                .position(|v| !v.is_finite())
                .map(|i| (name.clone(), i, d[i]))
        })
    }

    /// Writes `dir/checkpoint.safetensors`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.save_as(dir, FILE, 0)
    }

    /// Writes `dir/file` (e.g. `BEST`) atomically; `epoch` labels the fault points. Non-finite
    /// values are refused: a diverged model is never saved.
    pub fn save_as(&self, dir: &Path, file: &str, epoch: usize) -> Result<()> {
        let path = dir.join(file);
        write_atomic(&path, &self.to_bytes(&path)?, epoch)
    }

    /// The file's bytes (safetensors with the checksum); `path` names it in errors.
    pub fn to_bytes(&self, path: &Path) -> Result<Vec<u8>> {
        if let Some((name, i, v)) = self.non_finite() {
            return Err(err(
                path,
                format!("not written: tensor `{name}` holds {v} at index {i}"),
            ));
        }
        let mut meta = self.meta.clone();
        meta.insert(CHECKSUM.into(), self.checksum());
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
                    .map_err(|e| err(path, e))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, Some(meta)).map_err(|e| err(path, e))
    }

    pub fn load(dir: &Path) -> Result<Checkpoint> {
        let path = if dir.is_dir() {
            dir.join(FILE)
        } else {
            dir.to_path_buf()
        };
        let bytes = std::fs::read(&path).map_err(|e| err(&path, format!("cannot be read: {e}")))?;
        Self::from_bytes(&bytes, &path)
    }

    /// A checkpoint from a file's bytes, checked as [`Checkpoint::load`] checks a file;
    /// `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
        let path = path.to_path_buf();
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| err(&path, format!("is not a valid safetensors file: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| err(&path, e))?;
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
        let c = Checkpoint { tensors, meta };
        match c.meta.get(CHECKSUM) {
            Some(saved) if *saved != c.checksum() => {
                return Err(err(
                    &path,
                    "is damaged: its checksum does not match its contents (a byte changed after \
                     it was written); use an intact copy, e.g. best.safetensors of the same run",
                ))
            }
            Some(_) => {}
            None => eprintln!(
                "warning: {} was written before checkpoints carried a checksum; it is loaded \
                 unchecked (the next save adds one)",
                path.display()
            ),
        }
        if let Some((name, i, v)) = c.non_finite() {
            return Err(err(
                &path,
                format!("tensor `{name}` holds {v} at index {i}; a model with non-finite weights is not loaded"),
            ));
        }
        Ok(c)
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
