//! Data loaders: the shipped sets, and small files of every supported format written here —
//! valid ones load, corrupt / truncated / mismatched ones give errors naming file and problem.

use npyz::WriterBuilder;
use std::io::Write;
use std::path::{Path, PathBuf};
use vkgrad::data::{Dataset, Split};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vkgrad-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn idx_images(n: u32, h: u32, w: u32) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, 3];
    for d in [n, h, w] {
        b.extend(d.to_be_bytes());
    }
    b.extend((0..n * h * w).map(|i| (i % 256) as u8));
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, 1];
    b.extend((labels.len() as u32).to_be_bytes());
    b.extend(labels);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn err(spec: &Path) -> String {
    Dataset::load(spec.to_str().unwrap())
        .unwrap_err()
        .to_string()
}

#[test]
fn shipped_sets_load_with_their_splits() {
    let d = Dataset::load("digits").unwrap();
    assert_eq!(
        (d.len(), d.sample_shape.clone(), d.classes()),
        (1797, vec![1, 8, 8], 10)
    );
    assert_eq!(d.indices(Split::Test).len(), 450);
    assert!(d.values.iter().all(|v| (0.0..=1.0).contains(v)));
    let m = Dataset::load("mnist10k").unwrap();
    assert_eq!(
        (m.len(), m.sample_shape.clone(), m.classes()),
        (10_000, vec![1, 28, 28], 10)
    );
    assert_eq!(
        (m.indices(Split::Train).len(), m.indices(Split::Test).len()),
        (8000, 2000)
    );
    assert!(m.values.contains(&1.0) && m.values.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn idx_files_load_gzipped_or_not_and_bad_ones_are_named() {
    let dir = scratch("idx");
    std::fs::write(dir.join("train-images-idx3-ubyte"), idx_images(3, 2, 2)).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_labels(&[1, 0, 2])).unwrap();
    let d = Dataset::load(dir.to_str().unwrap()).unwrap();
    assert_eq!(
        (d.len(), d.sample_shape.clone(), d.labels.clone()),
        (3, vec![1, 2, 2], vec![1, 0, 2])
    );
    assert_eq!(d.values[5], 5.0 / 255.0);
    let gzdir = scratch("idxgz");
    std::fs::write(
        gzdir.join("t10k-images-idx3-ubyte.gz"),
        gz(&idx_images(3, 2, 2)),
    )
    .unwrap();
    std::fs::write(
        gzdir.join("t10k-labels-idx1-ubyte.gz"),
        gz(&idx_labels(&[1, 0, 2])),
    )
    .unwrap();
    let g = Dataset::load(gzdir.join("t10k-images-idx3-ubyte.gz").to_str().unwrap()).unwrap();
    assert_eq!(g.values, d.values);

    let images = dir.join("train-images-idx3-ubyte");
    let mut t = idx_images(3, 2, 2);
    t.truncate(t.len() - 1);
    std::fs::write(&images, &t).unwrap();
    let e = err(&images);
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("truncated"),
        "{e}"
    );
    std::fs::write(&images, b"not an idx file").unwrap();
    assert!(err(&images).contains("bad magic number"));
    std::fs::write(&images, idx_images(4, 2, 2)).unwrap();
    let e = err(&images);
    assert!(
        e.contains("train-labels-idx1-ubyte") && e.contains("3 labels for 4 images"),
        "{e}"
    );
    std::fs::write(
        gzdir.join("t10k-images-idx3-ubyte.gz"),
        &gz(&idx_images(3, 2, 2))[..20],
    )
    .unwrap();
    let e = err(&gzdir.join("t10k-images-idx3-ubyte.gz"));
    assert!(e.contains("gzip"), "{e}");
    std::fs::remove_file(gzdir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(
        gzdir.join("t10k-images-idx3-ubyte.gz"),
        gz(&idx_images(3, 2, 2)),
    )
    .unwrap();
    let e = err(&gzdir.join("t10k-images-idx3-ubyte.gz"));
    assert!(
        e.contains("t10k-labels-idx1-ubyte.gz: does not exist"),
        "{e}"
    );
}

#[test]
fn cifar_batches_load_and_bad_ones_are_named() {
    let dir = scratch("cifar");
    let mut b = Vec::new();
    for label in [3u8, 7] {
        b.push(label);
        b.extend((0..3072).map(|i| (i % 251) as u8));
    }
    std::fs::write(dir.join("data_batch_1.bin"), &b).unwrap();
    let d = Dataset::load(dir.to_str().unwrap()).unwrap();
    // Labels become dense class ids; the class map keeps the file's labels.
    let file_labels: Vec<u32> = d.labels.iter().map(|&l| d.class_ids[l as usize]).collect();
    assert_eq!(
        (
            d.len(),
            d.sample_shape.clone(),
            d.labels.clone(),
            file_labels
        ),
        (2, vec![3, 32, 32], vec![0, 1], vec![3, 7])
    );
    std::fs::write(dir.join("data_batch_1.bin"), &b[..5000]).unwrap();
    let e = err(&dir);
    assert!(
        e.contains("data_batch_1.bin") && e.contains("not a whole number"),
        "{e}"
    );
    b[0] = 12;
    std::fs::write(dir.join("data_batch_1.bin"), &b).unwrap();
    assert!(err(&dir).contains("label 12"));
}

#[test]
fn npy_pairs_load_and_mismatches_are_named() {
    let dir = scratch("npy");
    vkgrad::npy::write_f32(&dir.join("features.npy"), &[3, 4], &[0.5; 12]).unwrap();
    let labels = |n: usize| {
        let mut f = std::fs::File::create(dir.join("labels.npy")).unwrap();
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[n as u64])
            .writer(&mut f)
            .begin_nd()
            .unwrap();
        w.extend((0..n as i64).map(|i| i % 2)).unwrap();
        w.finish().unwrap();
    };
    labels(3);
    let d = Dataset::load(dir.to_str().unwrap()).unwrap();
    assert_eq!(
        (d.sample_shape.clone(), d.labels.clone()),
        (vec![4], vec![0, 1, 0])
    );
    let f = Dataset::load(dir.join("features.npy").to_str().unwrap()).unwrap();
    assert_eq!(f.values, d.values);
    labels(2);
    let e = err(&dir);
    assert!(
        e.contains("labels.npy") && e.contains("do not match features of shape [3, 4]"),
        "{e}"
    );
    std::fs::write(dir.join("features.npy"), b"\x93NUMPY garbage").unwrap();
    assert!(err(&dir).contains("features.npy"));
}

#[test]
fn unknown_paths_and_folders_are_named() {
    assert!(err(Path::new("/nonexistent/x")).contains("/nonexistent/x: does not exist"));
    let dir = scratch("empty");
    assert!(err(&dir).contains("holds no data this reads"));
    std::fs::write(dir.join("notes.txt"), "hi").unwrap();
    assert!(err(&dir.join("notes.txt")).contains("is not recognised"));
}
