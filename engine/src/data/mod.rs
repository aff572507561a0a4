//! Data sets: the two shipped in the binary (`digits`, `mnist10k`, from `data/`) and loaders for
//! user data — MNIST / Fashion-MNIST IDX (gzipped or not), CIFAR-10 binary batches, and `.npy`
//! (features `[N, …]` + labels `[N]`), and folders of PNG / JPEG images (`images.rs`). Images
//! become f32 in [0, 1], NCHW; every format error names the file and what is wrong.

mod cifar;
mod idx;
pub mod images;

use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// How user data is read: options for image folders (other formats refuse them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataOptions {
    /// Resize every image to S x S (needed when sizes differ).
    pub image_size: Option<usize>,
    /// 1 (grayscale) or 3 (RGB); absent = 1 when every image is grayscale, else 3.
    pub channels: Option<usize>,
    /// The fraction of images held out for evaluation (by a hash of each path); default 0.2.
    pub holdout: Option<f64>,
    /// An image that cannot be decoded is an error instead of a warning.
    pub strict: bool,
    /// Where decoded images are cached (absent: `images::cache_dir()`).
    pub cache_dir: Option<PathBuf>,
}

impl DataOptions {
    /// Whether any option that only image folders take is set.
    fn any(&self) -> bool {
        self.image_size.is_some()
            || self.channels.is_some()
            || self.holdout.is_some()
            || self.strict
    }
}

/// A data set held in host memory.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub name: String,
    /// One sample's shape: [C, H, W] for images, [D] for vectors.
    pub sample_shape: Vec<usize>,
    /// Row-major `[N, ...sample_shape]`.
    pub values: Vec<f32>,
    /// Dense class ids 0..classes (see `class_ids` for the labels the file holds).
    pub labels: Vec<u32>,
    /// The label each dense class id stands for, ascending: labels may be sparse or huge
    /// (any u32); memory is bounded by the number of distinct labels.
    pub class_ids: Vec<u32>,
    /// Sample i is held out for evaluation when i % test_every == 0 (without `test_mask`).
    pub test_every: usize,
    /// Which samples are held out, where the format decides it by other means (image
    /// folders: a hash of the path).
    pub test_mask: Option<Vec<bool>>,
    /// Whether the labels mean anything: a flat image folder has none (all 0), and
    /// label-based evaluation is skipped.
    pub labelled: bool,
    /// Class names by file label, where the data has them (image folders' subfolders).
    pub class_names: Vec<String>,
}

/// Which part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
    All,
}

pub(crate) fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Other(format!("{}: {why}", path.display()))
}

/// Reads a file, gunzipping it when it starts with the gzip magic.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| bad(path, format!("cannot be read: {e}")))?;
    gunzip_if(path, raw)
}

fn gunzip_if(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("is not a valid gzip file: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

const DIGITS: &[u8] = include_bytes!("../../../data/digits.csv.gz");
const MNIST_IMAGES: &[u8] = include_bytes!("../../../data/mnist10k-images-idx3-ubyte.gz");
const MNIST_LABELS: &[u8] = include_bytes!("../../../data/mnist10k-labels-idx1-ubyte.gz");

/// The names of the shipped data sets.
pub const BUILT_IN: [&str; 2] = ["digits", "mnist10k"];

impl Dataset {
    /// `digits`, `mnist10k`, or a path: a directory holding an IDX pair (`*images-idx3-ubyte`
    /// and `*labels-idx1-ubyte`, optionally `.gz`), CIFAR-10 batches (`data_batch_*.bin`,
    /// `test_batch.bin`), or `features.npy` and `labels.npy`; or an IDX images file (its
    /// labels file found by name).
    pub fn load(spec: &str) -> Result<Dataset> {
        Self::load_with(spec, &DataOptions::default())
    }

    /// `load`, also reading folders of PNG / JPEG images (class subfolders or flat) with
    /// `options`; the options are refused for data that is not an image folder.
    pub fn load_with(spec: &str, options: &DataOptions) -> Result<Dataset> {
        if let Some(h) = options.holdout {
            if !(h > 0.0 && h < 1.0) {
                return Err(Error::Other(format!(
                    "--holdout {h}: give the held-out fraction as a number between 0 and 1 (exclusive)"
                )));
            }
        }
        let folder = Path::new(spec);
        let mut d = if !BUILT_IN.contains(&spec)
            && folder.is_dir()
            && Self::detect(folder).is_err()
            && images::holds_images(folder)
        {
            let mut d = images::load(folder, options)?;
            d.name = folder.display().to_string();
            d
        } else {
            if options.any() {
                return Err(Error::Other(format!(
                    "{spec}: --image-size, --channels, --holdout and --strict apply to folders of images; {spec} is not one"
                )));
            }
            Self::load_raw(spec)?
        };
        d.densify();
        Ok(d)
    }

    /// Class names by dense class id (image folders), or the labels as text.
    pub fn class_name(&self, class: u32) -> String {
        let id = self.class_ids[class as usize];
        self.class_names
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    /// Replaces the file's labels by dense ids 0..k in ascending label order.
    fn densify(&mut self) {
        let mut ids = self.labels.clone();
        ids.sort_unstable();
        ids.dedup();
        let dense: std::collections::HashMap<u32, u32> = ids
            .iter()
            .enumerate()
            .map(|(i, &l)| (l, i as u32))
            .collect();
        for l in &mut self.labels {
            *l = dense[l];
        }
        self.class_ids = ids;
    }

    /// What identifies the data independently of where it lies: the sample count and shape,
    /// the number of classes, and a SHA-256 of (at most) 4,096 evenly spaced samples with
    /// their labels — bounded work however large the data set.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let n = self.len();
        let take = n.min(4096);
        let mut h = Sha256::new();
        for j in 0..take {
            let i = j * n / take.max(1);
            for v in &self.values[i * self.sample_len()..(i + 1) * self.sample_len()] {
                h.update(v.to_le_bytes());
            }
            h.update(self.class_ids[self.labels[i] as usize].to_le_bytes());
        }
        let hex: String = h
            .finalize()
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect();
        format!(
            "n={n} shape={:?} classes={} sha256:{hex}",
            self.sample_shape,
            self.class_ids.len()
        )
    }

    fn load_raw(spec: &str) -> Result<Dataset> {
        match spec {
            "digits" => digits(),
            "mnist10k" => {
                let p = Path::new("mnist10k (built in)");
                let images = gunzip_if(p, MNIST_IMAGES.to_vec())?;
                let labels = gunzip_if(p, MNIST_LABELS.to_vec())?;
                let mut d = idx::pair(p, &images, p, &labels)?;
                d.name = "mnist10k".into();
                Ok(d)
            }
            path => Self::load_path(Path::new(path)),
        }
    }

    fn load_path(path: &Path) -> Result<Dataset> {
        if !path.exists() {
            return Err(bad(
                path,
                format!(
                    "does not exist (--data takes {} or a path to IDX, CIFAR-10 or .npy data)",
                    BUILT_IN.join(", ")
                ),
            ));
        }
        let mut d = if path.is_dir() {
            Self::detect(path)?
        } else if path.extension().is_some_and(|e| e == "npy") {
            let labels = path.with_file_name("labels.npy");
            npy_pair(path, &labels)?
        } else {
            idx::load(path)?
        };
        if d.labels.is_empty() {
            return Err(bad(path, "holds no samples"));
        }
        d.name = path.display().to_string();
        Ok(d)
    }

    /// A folder of IDX, CIFAR-10 or .npy data.
    fn detect(path: &Path) -> Result<Dataset> {
        {
            let files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| bad(path, format!("cannot be listed: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            let named = |pat: &str| {
                let mut v: Vec<&PathBuf> = files
                    .iter()
                    .filter(|f| {
                        f.file_name()
                            .is_some_and(|n| n.to_string_lossy().contains(pat))
                    })
                    .collect();
                v.sort();
                v
            };
            if !named("data_batch_").is_empty() || !named("test_batch").is_empty() {
                let mut batches = named("data_batch_");
                batches.extend(named("test_batch"));
                cifar::load(&batches)
            } else if let Some(images) = named("images-idx3-ubyte").first() {
                idx::load(images)
            } else if path.join("features.npy").exists() {
                npy_pair(&path.join("features.npy"), &path.join("labels.npy"))
            } else {
                Err(bad(path, "holds no data this reads: expected *images-idx3-ubyte[.gz] + *labels-idx1-ubyte[.gz], CIFAR-10 data_batch_*.bin, features.npy + labels.npy, or .png/.jpg images (in class subfolders or directly)"))
            }
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }
    /// The number of distinct labels.
    pub fn classes(&self) -> usize {
        self.class_ids.len()
    }

    /// Sample indices of a split (held out: i % test_every == 0).
    pub fn indices(&self, split: Split) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| match split {
                Split::All => true,
                Split::Test => self.is_test(i),
                Split::Train => !self.is_test(i),
            })
            .collect()
    }

    /// Whether sample `i` is held out for evaluation.
    pub fn is_test(&self, i: usize) -> bool {
        match &self.test_mask {
            Some(m) => m[i],
            None => i.is_multiple_of(self.test_every),
        }
    }

    /// How the held-out split is chosen, in words.
    pub fn split_rule(&self) -> String {
        match &self.test_mask {
            Some(_) => "by a hash of each file's path".into(),
            None => format!("every {}th sample", self.test_every),
        }
    }

    /// The values of the given samples, concatenated.
    pub fn gather(&self, idx: &[usize]) -> Vec<f32> {
        let k = self.sample_len();
        let mut out = Vec::with_capacity(idx.len() * k);
        for &i in idx {
            out.extend_from_slice(&self.values[i * k..(i + 1) * k]);
        }
        out
    }
}

/// UCI digits: CSV rows of 64 pixel values 0..16 and the label.
fn digits() -> Result<Dataset> {
    let p = Path::new("digits (built in)");
    let text = gunzip_if(p, DIGITS.to_vec())?;
    let text = String::from_utf8(text).map_err(|e| bad(p, e))?;
    let (mut values, mut labels) = (Vec::new(), Vec::new());
    for (line_no, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let nums: Vec<f32> = line
            .split(',')
            .map(|t| t.trim().parse::<f32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(p, format!("line {}: {e}", line_no + 1)))?;
        if nums.len() != 65 {
            return Err(bad(
                p,
                format!("line {}: {} values, expected 65", line_no + 1, nums.len()),
            ));
        }
        values.extend(nums[..64].iter().map(|v| v / 16.0));
        labels.push(nums[64] as u32);
    }
    Ok(Dataset {
        name: "digits".into(),
        sample_shape: vec![1, 8, 8],
        values,
        labels,
        class_ids: Vec::new(),
        test_every: 4,
        labelled: true,
        ..Default::default()
    })
}

/// `.npy` features [N, ...] (f32 / f64) with integer labels [N].
fn npy_pair(features: &Path, labels: &Path) -> Result<Dataset> {
    let (shape, data) = crate::npy::read_floats(features)?;
    if !labels.exists() {
        return Err(bad(
            labels,
            format!(
                "does not exist; {} needs its labels beside it",
                features.display()
            ),
        ));
    }
    let (lshape, lab) = crate::npy::read_labels(labels)?;
    // Vectors [N, D] or images [N, C, H, W]; any other rank has no encoder.
    if shape.len() != 2 && shape.len() != 4 {
        return Err(bad(
            features,
            format!(
                "has shape {shape:?}; features must be [N, D] (vectors) or [N, C, H, W] (images)"
            ),
        ));
    }
    if shape[1..].contains(&0) {
        return Err(bad(
            features,
            format!("has shape {shape:?}: a sample of no values"),
        ));
    }
    if lshape.len() != 1 || lshape[0] != shape[0] {
        return Err(bad(
            labels,
            format!("labels of shape {lshape:?} do not match features of shape {shape:?} (expected [{}])", shape.first().copied().unwrap_or(0)),
        ));
    }
    Ok(Dataset {
        name: String::new(),
        sample_shape: shape[1..].to_vec(),
        values: data.iter().map(|&v| v as f32).collect(),
        labels: lab,
        class_ids: Vec::new(),
        test_every: 5,
        labelled: true,
        ..Default::default()
    })
}
