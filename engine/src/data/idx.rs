//! The IDX format of MNIST and Fashion-MNIST: magic (0, 0, type 0x08 = u8, rank), big-endian
//! u32 sizes, then the values.

use super::{bad, read_maybe_gz, Dataset};
use crate::error::Result;
use std::path::{Path, PathBuf};

/// Dimensions and payload of an IDX u8 file.
fn parse<'a>(path: &Path, b: &'a [u8], rank: u8) -> Result<(Vec<usize>, &'a [u8])> {
    if b.len() < 4 || b[0] != 0 || b[1] != 0 {
        return Err(bad(path, "is not an IDX file (bad magic number)"));
    }
    if b[2] != 0x08 {
        return Err(bad(
            path,
            format!(
                "has IDX element type 0x{:02x}; only unsigned bytes (0x08) are read",
                b[2]
            ),
        ));
    }
    if b[3] != rank {
        return Err(bad(path, format!("has rank {}, expected {rank}", b[3])));
    }
    let head = 4 + 4 * rank as usize;
    if b.len() < head {
        return Err(bad(path, "is truncated inside its header"));
    }
    let dims: Vec<usize> = (0..rank as usize)
        .map(|i| u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let Some(n) = n.filter(|&n| n <= b.len() - head) else {
        return Err(bad(
            path,
            format!(
                "is truncated or its header is damaged: sizes {dims:?} need more bytes than the {} it holds",
                b.len() - head
            ),
        ));
    };
    if b.len() - head < n {
        return Err(bad(
            path,
            format!(
                "is truncated: {dims:?} needs {n} bytes of data, found {}",
                b.len() - head
            ),
        ));
    }
    Ok((dims, &b[head..head + n]))
}

/// Images [N, H, W] and labels [N].
pub fn pair(ip: &Path, images: &[u8], lp: &Path, labels: &[u8]) -> Result<Dataset> {
    let (dims, px) = parse(ip, images, 3)?;
    let (ldims, lab) = parse(lp, labels, 1)?;
    if ldims[0] != dims[0] {
        return Err(bad(
            lp,
            format!(
                "has {} labels for {} images in {}",
                ldims[0],
                dims[0],
                ip.display()
            ),
        ));
    }
    Ok(Dataset {
        name: String::new(),
        sample_shape: vec![1, dims[1], dims[2]],
        values: px.iter().map(|&v| v as f32 / 255.0).collect(),
        labels: lab.iter().map(|&l| l as u32).collect(),
        class_ids: Vec::new(),
        test_every: 5,
        labelled: true,
        ..Default::default()
    })
}

/// An images file; its labels are the file named with `labels-idx1` for `images-idx3`.
pub fn load(images: &Path) -> Result<Dataset> {
    let name = images
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if !name.contains("images-idx3") {
        return Err(bad(images, "is not recognised: expected an IDX images file (*images-idx3-ubyte[.gz]), a .npy file or a directory"));
    }
    let labels: PathBuf = images.with_file_name(name.replace("images-idx3", "labels-idx1"));
    if !labels.exists() {
        return Err(bad(
            &labels,
            format!("does not exist; {} needs its labels file", images.display()),
        ));
    }
    pair(
        images,
        &read_maybe_gz(images)?,
        &labels,
        &read_maybe_gz(&labels)?,
    )
}
