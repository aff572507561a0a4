//! CIFAR-10's binary batches: records of one label byte and 3 x 32 x 32 pixel bytes (R, G, B
//! planes).

use super::{bad, read_maybe_gz, Dataset};
use crate::error::Result;
use std::path::PathBuf;

const RECORD: usize = 1 + 3 * 32 * 32;

pub fn load(files: &[&PathBuf]) -> Result<Dataset> {
    let (mut values, mut labels) = (Vec::new(), Vec::new());
    for f in files {
        let b = read_maybe_gz(f)?;
        if b.is_empty() || b.len() % RECORD != 0 {
            return Err(bad(f, format!("is {} bytes, not a whole number of {RECORD}-byte CIFAR-10 records (truncated?)", b.len())));
        }
        for rec in b.chunks(RECORD) {
            if rec[0] > 9 {
                return Err(bad(
                    f,
                    format!("has label {} (CIFAR-10 labels are 0..9)", rec[0]),
                ));
            }
            labels.push(rec[0] as u32);
            values.extend(rec[1..].iter().map(|&v| v as f32 / 255.0));
        }
    }
    Ok(Dataset {
        name: String::new(),
        sample_shape: vec![3, 32, 32],
        values,
        labels,
        class_ids: Vec::new(),
        test_every: 5,
        labelled: true,
        ..Default::default()
    })
}
