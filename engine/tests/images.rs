//! Folders of PNG / JPEG images (`data/images.rs`), built on the fly: labels from class
//! folders, flat folders without labels, grayscale / RGB detection, resizing, the held-out
//! split by path hash, undecodable files (skipped and named, or an error with `strict`), the
//! decode cache (used, and invalidated when a file changes), and `vkgrad train` on a folder.

mod common;

use image::{GrayImage, Luma, Rgb, RgbImage};
use std::path::{Path, PathBuf};
use vkgrad::data::{images, DataOptions, Dataset, Split};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vkgrad-images-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The grey level of pixel (x, y) of image `i` of class `c`.
fn level(c: usize, i: usize, x: u32, y: u32) -> u8 {
    ((c * 90 + i * 7 + (x * 3 + y * 5) as usize) % 256) as u8
}

fn gray(path: &Path, c: usize, i: usize, size: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    GrayImage::from_fn(size, size, |x, y| Luma([level(c, i, x, y)]))
        .save(path)
        .unwrap();
}

fn opts(cache: &Path) -> DataOptions {
    DataOptions {
        cache_dir: Some(cache.to_path_buf()),
        ..Default::default()
    }
}

#[test]
fn class_folders_give_labels_sorted_by_name_and_exact_pixels() {
    let root = tmp("classes");
    let data = root.join("data");
    for (c, name) in ["zebra", "apple", "mango"].iter().enumerate() {
        for i in 0..4 {
            gray(&data.join(name).join(format!("{i}.png")), c, i, 6);
        }
    }
    // Nested files belong to their class folder; other files are ignored.
    gray(&data.join("apple").join("more").join("x.png"), 1, 9, 6);
    std::fs::write(data.join("apple").join("notes.txt"), "not an image").unwrap();
    let d = Dataset::load_with(data.to_str().unwrap(), &opts(&root.join("cache"))).unwrap();
    assert!(d.labelled);
    assert_eq!(d.len(), 13);
    assert_eq!(d.sample_shape, vec![1, 6, 6], "all grayscale: one channel");
    assert_eq!(d.class_names, vec!["apple", "mango", "zebra"]);
    // Samples in (class, path) order: apple/0..3.png, apple/more/x.png, mango/..., zebra/...
    assert_eq!(d.labels[..5], [0, 0, 0, 0, 0]);
    assert_eq!(d.class_name(d.labels[5]), "mango");
    assert_eq!(d.class_name(d.labels[12]), "zebra");
    // apple is class index 1 in the generator (names listed as zebra, apple, mango).
    let px = &d.values[0..36];
    for y in 0..6 {
        for x in 0..6 {
            let want = level(1, 0, x, y) as f32 / 255.0;
            assert_eq!(px[(y * 6 + x) as usize], want, "pixel ({x}, {y})");
        }
    }
    // The split is the path hash rule, and both parts are non-empty with the default 0.2.
    for i in 0..d.len() {
        let _ = d.is_test(i);
    }
    let rel = [
        "apple/0.png",
        "apple/1.png",
        "apple/2.png",
        "apple/3.png",
        "apple/more/x.png",
    ];
    for (i, r) in rel.iter().enumerate() {
        assert_eq!(d.is_test(i), images::held_out(r, 0.2), "{r}");
    }
    assert_eq!(
        d.indices(Split::Train).len() + d.indices(Split::Test).len(),
        d.len()
    );
}

#[test]
fn the_split_is_stable_when_files_are_added() {
    let root = tmp("split");
    let data = root.join("data");
    for i in 0..30 {
        gray(&data.join("a").join(format!("{i:02}.png")), 0, i, 4);
    }
    let o = DataOptions {
        holdout: Some(0.3),
        ..opts(&root.join("cache"))
    };
    let before = Dataset::load_with(data.to_str().unwrap(), &o).unwrap();
    for i in 30..40 {
        gray(&data.join("a").join(format!("{i:02}.png")), 0, i, 4);
    }
    let after = Dataset::load_with(data.to_str().unwrap(), &o).unwrap();
    for i in 0..30 {
        assert_eq!(before.is_test(i), after.is_test(i), "file {i} moved split");
    }
    let held = after.indices(Split::Test).len();
    assert!(held > 3 && held < 25, "{held} of 40 held out at 0.3");
}

#[test]
fn rgb_is_detected_resized_and_channels_can_be_forced() {
    let root = tmp("rgb");
    let data = root.join("data");
    std::fs::create_dir_all(data.join("a")).unwrap();
    RgbImage::from_fn(8, 8, |x, y| Rgb([(x * 30) as u8, (y * 30) as u8, 200]))
        .save(data.join("a").join("c.png"))
        .unwrap();
    // A JPEG of another size: refused without --image-size, resized with it.
    RgbImage::from_fn(12, 10, |x, _| Rgb([(x * 20) as u8, 10, 10]))
        .save(data.join("a").join("d.jpg"))
        .unwrap();
    let e = Dataset::load_with(data.to_str().unwrap(), &opts(&root.join("cache")))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("different sizes") && e.contains("--image-size"),
        "{e}"
    );
    let o = DataOptions {
        image_size: Some(4),
        ..opts(&root.join("cache"))
    };
    let d = Dataset::load_with(data.to_str().unwrap(), &o).unwrap();
    assert_eq!(d.sample_shape, vec![3, 4, 4]);
    // c.png's blue plane is 200 everywhere, whatever the filter.
    assert!(d.values[32..48].iter().all(|&v| v == 200.0 / 255.0));
    let o1 = DataOptions {
        channels: Some(1),
        ..o.clone()
    };
    let g = Dataset::load_with(data.to_str().unwrap(), &o1).unwrap();
    assert_eq!(g.sample_shape, vec![1, 4, 4]);
    let e = Dataset::load_with(
        data.to_str().unwrap(),
        &DataOptions {
            channels: Some(2),
            ..o
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--channels 2"), "{e}");
}

#[test]
fn a_flat_folder_has_no_labels() {
    let root = tmp("flat");
    let data = root.join("data");
    for i in 0..5 {
        gray(&data.join(format!("{i}.png")), 0, i, 4);
    }
    let d = Dataset::load_with(data.to_str().unwrap(), &opts(&root.join("cache"))).unwrap();
    assert!(!d.labelled);
    assert_eq!(d.len(), 5);
    assert!(d.class_names.is_empty());
}

#[test]
fn undecodable_images_are_skipped_and_named_or_refused_with_strict() {
    let root = tmp("corrupt");
    let data = root.join("data");
    for i in 0..4 {
        gray(&data.join("a").join(format!("{i}.png")), 0, i, 4);
    }
    std::fs::write(data.join("a").join("broken.png"), b"\x89PNG not really").unwrap();
    std::fs::write(data.join("a").join("empty.jpg"), b"").unwrap();
    let d = Dataset::load_with(data.to_str().unwrap(), &opts(&root.join("cache"))).unwrap();
    assert_eq!(d.len(), 4, "the two broken files are skipped");
    let strict = DataOptions {
        strict: true,
        ..opts(&root.join("cache"))
    };
    let e = Dataset::load_with(data.to_str().unwrap(), &strict)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("2 of 6 images cannot be decoded")
            && e.contains("broken.png")
            && e.contains("empty.jpg"),
        "{e}"
    );
    // No images at all, and options on data that is not an image folder.
    let empty = root.join("none");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("a.txt"), "x").unwrap();
    let e = Dataset::load_with(empty.to_str().unwrap(), &opts(&root.join("cache")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no data"), "{e}");
    let e = Dataset::load_with(
        "digits",
        &DataOptions {
            image_size: Some(8),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("apply to folders of images"), "{e}");
    for h in [0.0, 1.0, -0.5, f64::NAN] {
        let e = Dataset::load_with(
            data.to_str().unwrap(),
            &DataOptions {
                holdout: Some(h),
                ..opts(&root.join("cache"))
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--holdout"), "{h}: {e}");
    }
}

#[test]
fn decoded_images_are_cached_and_a_changed_file_is_decoded_again() {
    let root = tmp("cache");
    let data = root.join("data");
    for i in 0..3 {
        gray(&data.join("a").join(format!("{i}.png")), 0, i, 4);
    }
    let cache = root.join("cache");
    let first = Dataset::load_with(data.to_str().unwrap(), &opts(&cache)).unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one cache file: {files:?}");
    // The next load reads the cache: a byte changed there shows up in the data.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] = bytes[last].wrapping_add(1);
    std::fs::write(&files[0], &bytes).unwrap();
    let second = Dataset::load_with(data.to_str().unwrap(), &opts(&cache)).unwrap();
    assert_ne!(first.values, second.values, "the cache was not read");
    // A changed image is a new key (its size or time changed): decoded again, so the
    // loaded pixels are the new file's, as a load with an empty cache sees them.
    std::thread::sleep(std::time::Duration::from_millis(20));
    gray(&data.join("a").join("2.png"), 1, 5, 4);
    let third = Dataset::load_with(data.to_str().unwrap(), &opts(&cache)).unwrap();
    let fresh = Dataset::load_with(data.to_str().unwrap(), &opts(&root.join("cache2"))).unwrap();
    assert_eq!(third.values, fresh.values);
    assert_ne!(third.values, first.values);
}

/// `vkgrad train` on a folder of class subfolders: the run reports the class split, and a
/// flat folder trains but skips the label-based scores; SupCon refuses a flat folder.
#[test]
fn train_runs_on_an_image_folder() {
    common::shipped_plugins();
    let root = tmp("train");
    let data = root.join("data");
    for c in 0..2 {
        for i in 0..24 {
            gray(
                &data.join(format!("class{c}")).join(format!("{i}.png")),
                c,
                i,
                8,
            );
        }
    }
    let cache = root.join("cache");
    let cache_s = cache.to_str().unwrap();
    let run = root.join("run");
    let (ok, out, err) = common::vkgrad(
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--out",
            run.to_str().unwrap(),
            "--stop-after",
            "1",
            "--json",
        ],
        &[("VKGRAD_CACHE", cache_s)],
    );
    assert!(ok, "{out}\n{err}");
    let m = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(
        m.contains("\"knn_accuracy\":0") || m.contains("\"knn_accuracy\":1"),
        "{m}"
    );
    let flat = root.join("flat");
    for i in 0..24 {
        gray(&flat.join(format!("{i}.png")), i % 2, i, 8);
    }
    let run2 = root.join("run2");
    let (ok, out, err) = common::vkgrad(
        &[
            "train",
            "--data",
            flat.to_str().unwrap(),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--out",
            run2.to_str().unwrap(),
            "--stop-after",
            "1",
            "--json",
        ],
        &[("VKGRAD_CACHE", cache_s)],
    );
    assert!(ok, "{out}\n{err}");
    let m = std::fs::read_to_string(run2.join("metrics.jsonl")).unwrap();
    assert!(m.contains("\"knn_accuracy\":null"), "{m}");
    assert!(!run2.join("best.safetensors").exists());
    let (ok, _, err) = common::vkgrad(
        &[
            "train",
            "--data",
            flat.to_str().unwrap(),
            "--method",
            "supcon",
            "--out",
            root.join("run3").to_str().unwrap(),
        ],
        &[("VKGRAD_CACHE", cache_s)],
    );
    assert!(
        !ok && err.contains(
            "the loss contrastive::supcon needs labels, and this folder of images has none"
        ),
        "{err}"
    );
}
