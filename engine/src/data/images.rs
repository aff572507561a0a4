//! Folders of PNG / JPEG images, as torchvision's `ImageFolder` reads them: one subfolder per
//! class (labels from the folder names, sorted; files found recursively) or a flat folder of
//! images (no labels). Decoded once — in parallel, with a progress bar — and cached as 8-bit
//! pixels in the cache folder, keyed by the folder's listing (paths, sizes, modification
//! times) and the options, so the next run does not decode again. The held-out split is by a
//! hash of each file's relative path: adding or removing files moves no other file.

use super::{bad, DataOptions, Dataset};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];
const CACHE_MAGIC: &[u8] = b"vkgrad-images-1\n";
/// How many unreadable files a warning or error names.
const NAMED: usize = 5;

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Every file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| bad(&d, format!("cannot be listed: {e}")))? {
            let p = e
                .map_err(|e| bad(&d, format!("cannot be listed: {e}")))?
                .path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `dir` holds images this reads (directly or in subfolders).
pub fn holds_images(dir: &Path) -> bool {
    files_under(dir).is_ok_and(|f| f.iter().any(|p| is_image(p)))
}

/// The images of a folder, their labels and the class names.
struct Listing {
    files: Vec<PathBuf>,
    labels: Vec<u32>,
    classes: Vec<String>,
    labelled: bool,
    ignored: usize,
}

fn list(dir: &Path) -> Result<Listing> {
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| bad(dir, format!("cannot be listed: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    let mut l = Listing {
        files: Vec::new(),
        labels: Vec::new(),
        classes: Vec::new(),
        labelled: false,
        ignored: 0,
    };
    for s in &subdirs {
        let (imgs, other): (Vec<PathBuf>, Vec<PathBuf>) =
            files_under(s)?.into_iter().partition(|p| is_image(p));
        l.ignored += other.len();
        if imgs.is_empty() {
            continue;
        }
        let label = l.classes.len() as u32;
        l.classes
            .push(s.file_name().unwrap_or_default().to_string_lossy().into());
        l.labels.extend(std::iter::repeat_n(label, imgs.len()));
        l.files.extend(imgs);
    }
    let top: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| bad(dir, format!("cannot be listed: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    if l.files.is_empty() {
        // A flat folder: images without labels.
        let (mut imgs, other): (Vec<PathBuf>, Vec<PathBuf>) =
            top.into_iter().partition(|p| is_image(p));
        imgs.sort();
        l.ignored += other.len();
        l.labels = vec![0; imgs.len()];
        l.files = imgs;
    } else {
        // As torchvision's ImageFolder: files beside the class folders belong to no class.
        let loose = top.iter().filter(|p| is_image(p)).count();
        if loose > 0 {
            eprintln!(
                "warning: {}: {loose} images beside the class folders belong to no class and are not used",
                dir.display()
            );
        }
        l.ignored += top.len() - loose;
        l.labelled = true;
    }
    if l.files.is_empty() {
        return Err(bad(
            dir,
            "holds no .png, .jpg or .jpeg images (in class subfolders or directly)",
        ));
    }
    Ok(l)
}

/// What the cache is keyed by: the folder, every file's path, size and modification time, and
/// the options that change the pixels.
fn cache_key(dir: &Path, l: &Listing, o: &DataOptions) -> String {
    let mut h = Sha256::new();
    h.update(dir.display().to_string());
    h.update(format!("{:?} {:?}", o.image_size, o.channels));
    for f in &l.files {
        h.update(f.display().to_string());
        if let Ok(m) = std::fs::metadata(f) {
            h.update(m.len().to_le_bytes());
            // A file system without modification times keys on the size alone (still a new
            // key for most edits; the fingerprint check on --resume / eval catches the rest).
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            h.update(t.to_le_bytes());
        }
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The cache folder: `VKGRAD_CACHE`, else `$XDG_CACHE_HOME/vkgrad`, else `~/.cache/vkgrad`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("VKGRAD_CACHE") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("vkgrad"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("vkgrad"))
}

/// Decoded pixels: [N, C, H, W] bytes, which files were decoded, and the unreadable ones.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    /// Indices (into the listing) of the decoded files.
    kept: Vec<usize>,
    /// The unreadable files and why.
    failed: Vec<(String, String)>,
}

fn read_cache(path: &Path) -> Option<(Header, Vec<u8>)> {
    let bytes = std::fs::read(path).ok()?;
    let rest = bytes.strip_prefix(CACHE_MAGIC)?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let header: Header = serde_json::from_slice(&rest[..nl]).ok()?;
    let pixels = rest[nl + 1..].to_vec();
    (pixels.len() == header.n * header.c * header.h * header.w && header.kept.len() == header.n)
        .then_some((header, pixels))
}

/// Writes the cache atomically; a cache that cannot be written is a warning (the data is
/// already in memory; only the next run's decode is at stake).
fn write_cache(path: &Path, header: &Header, pixels: &[u8]) {
    let written = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut bytes = CACHE_MAGIC.to_vec();
        bytes.extend(serde_json::to_vec(header).map_err(std::io::Error::other)?);
        bytes.push(b'\n');
        bytes.extend_from_slice(pixels);
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    })();
    if let Err(e) = written {
        eprintln!(
            "warning: the decoded images cannot be cached at {}: {e} (the next run decodes them again; set VKGRAD_CACHE to another folder)",
            path.display()
        );
    }
}

/// One decoded image: RGB bytes (alpha dropped), its size, and whether it was grayscale.
struct Decoded {
    rgb: Vec<u8>,
    w: u32,
    h: u32,
    gray: bool,
}

fn decode(path: &Path, size: Option<usize>) -> std::result::Result<Decoded, String> {
    let img = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    let gray = !img.color().has_color();
    let mut rgb = img.to_rgb8();
    if let Some(s) = size {
        // Triangle = bilinear, widened when shrinking (PIL's antialiased resize), so a
        // downscale averages the area it covers instead of skipping pixels.
        rgb = image::imageops::resize(
            &rgb,
            s as u32,
            s as u32,
            image::imageops::FilterType::Triangle,
        );
    }
    Ok(Decoded {
        w: rgb.width(),
        h: rgb.height(),
        rgb: rgb.into_raw(),
        gray,
    })
}

/// Decodes every file on all cores, with a progress bar.
fn decode_all(files: &[PathBuf], size: Option<usize>) -> Vec<std::result::Result<Decoded, String>> {
    let bar = indicatif::ProgressBar::new(files.len() as u64).with_message("decoding images");
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<std::result::Result<Decoded, String>>>> =
        files.iter().map(|_| Mutex::new(None)).collect();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= files.len() {
                    break;
                }
                let r = decode(&files[i], size);
                *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or_else(|| Err("not decoded".into()))
        })
        .collect()
}

/// Decodes the listing into [N, C, H, W] bytes; the channel count is 1 when every image is
/// grayscale (or `channels` says so), else 3.
fn decode_listing(dir: &Path, l: &Listing, o: &DataOptions) -> Result<(Header, Vec<u8>)> {
    let results = decode_all(&l.files, o.image_size);
    let mut kept = Vec::new();
    let mut failed = Vec::new();
    let mut ok = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(d) => {
                kept.push(i);
                ok.push(d);
            }
            Err(e) => failed.push((l.files[i].display().to_string(), e)),
        }
    }
    let Some(first) = ok.first() else {
        return Err(bad(
            dir,
            format!(
                "none of its {} images can be decoded (first: {} — {})",
                l.files.len(),
                failed[0].0,
                failed[0].1
            ),
        ));
    };
    let (w, h) = (first.w, first.h);
    if let Some((j, d)) = ok.iter().enumerate().find(|(_, d)| (d.w, d.h) != (w, h)) {
        return Err(bad(
            dir,
            format!(
                "holds images of different sizes ({} is {w}x{h}, {} is {}x{}); give --image-size S to resize them all to S x S",
                l.files[kept[0]].display(),
                l.files[kept[j]].display(),
                d.w,
                d.h
            ),
        ));
    }
    let c = o
        .channels
        .unwrap_or(if ok.iter().all(|d| d.gray) { 1 } else { 3 });
    let plane = (w * h) as usize;
    let mut pixels = Vec::with_capacity(ok.len() * c * plane);
    for d in &ok {
        if c == 1 {
            // ITU-R BT.601 luma, as PIL's convert("L") (exact for grayscale sources).
            pixels.extend(d.rgb.chunks(3).map(|p| {
                ((299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32 + 500) / 1000) as u8
            }));
        } else {
            for ch in 0..3 {
                pixels.extend(d.rgb.chunks(3).map(|p| p[ch]));
            }
        }
    }
    let header = Header {
        n: ok.len(),
        c,
        h: h as usize,
        w: w as usize,
        kept,
        failed,
    };
    Ok((header, pixels))
}

/// Whether the file at `rel` (its path relative to the data folder) is held out: the first
/// 8 bytes of SHA-256(rel) as a fraction of 2^64, below `holdout`.
pub fn held_out(rel: &str, holdout: f64) -> bool {
    let h = Sha256::digest(rel.as_bytes());
    let v = u64::from_be_bytes(h[..8].try_into().unwrap_or([0; 8]));
    (v as f64 / 2f64.powi(64)) < holdout
}

/// Loads an image folder.
pub fn load(dir: &Path, o: &DataOptions) -> Result<Dataset> {
    if let Some(c) = o.channels {
        if c != 1 && c != 3 {
            return Err(Error::Other(format!(
                "--channels {c}: images are read as 1 (grayscale) or 3 (RGB) channels"
            )));
        }
    }
    if o.image_size == Some(0) {
        return Err(Error::Other(
            "--image-size 0: give a size of at least 1".into(),
        ));
    }
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let l = list(&dir)?;
    let key = cache_key(&dir, &l, o);
    let cache = o
        .cache_dir
        .clone()
        .or_else(cache_dir)
        .map(|d| d.join(format!("images-{key}.bin")));
    let (header, pixels) = match cache.as_deref().and_then(read_cache) {
        Some(hit) => hit,
        None => {
            let decoded = decode_listing(&dir, &l, o)?;
            if let Some(c) = &cache {
                write_cache(c, &decoded.0, &decoded.1);
            }
            decoded
        }
    };
    if !header.failed.is_empty() {
        let named: Vec<String> = header
            .failed
            .iter()
            .take(NAMED)
            .map(|(p, e)| format!("{p} ({e})"))
            .collect();
        let msg = format!(
            "{} of {} images cannot be decoded: {}{}",
            header.failed.len(),
            l.files.len(),
            named.join("; "),
            if header.failed.len() > NAMED {
                "; …"
            } else {
                ""
            }
        );
        if o.strict {
            return Err(bad(&dir, msg));
        }
        eprintln!(
            "warning: {}: {msg} — skipped (--strict makes this an error)",
            dir.display()
        );
    }
    if l.ignored > 0 {
        eprintln!(
            "note: {}: {} files that are not .png/.jpg/.jpeg are ignored",
            dir.display(),
            l.ignored
        );
    }
    let holdout = o.holdout.unwrap_or(0.2);
    let test_mask: Vec<bool> = header
        .kept
        .iter()
        .map(|&i| {
            let rel = l.files[i].strip_prefix(&dir).unwrap_or(&l.files[i]);
            held_out(&rel.to_string_lossy(), holdout)
        })
        .collect();
    Ok(Dataset {
        name: String::new(),
        sample_shape: vec![header.c, header.h, header.w],
        values: pixels.iter().map(|&v| v as f32 / 255.0).collect(),
        labels: header.kept.iter().map(|&i| l.labels[i]).collect(),
        class_ids: Vec::new(),
        test_every: 0,
        test_mask: Some(test_mask),
        labelled: l.labelled,
        class_names: if l.labelled { l.classes } else { Vec::new() },
    })
}
