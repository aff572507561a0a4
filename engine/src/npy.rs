//! `.npy` files (what NumPy's `np.save` writes), for comparing vkgrad with Python code: f32/f64
//! arrays and integer labels in, f32 gradients out (written atomically).

use crate::error::{Error, Result};
use npyz::{DType, NpyFile, TypeChar, WriterBuilder};
use std::path::Path;

fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Other(format!("{}: {why}", path.display()))
}

fn open(path: &Path) -> Result<NpyFile<std::io::BufReader<std::fs::File>>> {
    let f = std::fs::File::open(path).map_err(|e| bad(path, format!("cannot be read: {e}")))?;
    let npy = NpyFile::new(std::io::BufReader::new(f))
        .map_err(|e| bad(path, format!("is not a valid .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(bad(
            path,
            "is in Fortran order; save it with np.ascontiguousarray first",
        ));
    }
    Ok(npy)
}

/// The shape of an opened file, checked against the file's size before anything is allocated:
/// a damaged header that claims more values than the file holds is an error, not a huge
/// allocation.
fn sized_shape(
    path: &Path,
    npy: &NpyFile<std::io::BufReader<std::fs::File>>,
) -> Result<Vec<usize>> {
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let item = npy.dtype().num_bytes().unwrap_or(1).max(1);
    let file_len = std::fs::metadata(path)
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    let bytes = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .and_then(|n| n.checked_mul(item));
    match bytes {
        Some(b) if b <= file_len => Ok(shape),
        _ => Err(bad(
            path,
            format!("is truncated or corrupt: shape {shape:?} needs more bytes than the file's {file_len}"),
        )),
    }
}

fn plain(path: &Path, dtype: &DType) -> Result<(TypeChar, u64)> {
    match dtype {
        DType::Plain(t) => Ok((t.type_char(), t.size_field())),
        other => Err(bad(
            path,
            format!("has a structured dtype {other:?}; expected a plain number array"),
        )),
    }
}

/// An f32 or f64 array, as f64, with its shape.
pub fn read_floats(path: &Path) -> Result<(Vec<usize>, Vec<f64>)> {
    let npy = open(path)?;
    let shape = sized_shape(path, &npy)?;
    let dtype = npy.dtype();
    let data: Vec<f64> = match plain(path, &dtype)? {
        (TypeChar::Float, 4) => npy
            .into_vec::<f32>()
            .map(|v| v.into_iter().map(f64::from).collect()),
        (TypeChar::Float, 8) => npy.into_vec::<f64>(),
        (c, s) => {
            return Err(bad(
                path,
                format!("has dtype {c:?}{s}; expected float32 or float64"),
            ))
        }
    }
    .map_err(|e| bad(path, format!("is truncated or corrupt: {e}")))?;
    if data.len() != shape.iter().product::<usize>() {
        return Err(bad(
            path,
            format!("holds {} values for shape {shape:?}", data.len()),
        ));
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(bad(
            path,
            format!("value {i} is {}; inputs must be finite", data[i]),
        ));
    }
    Ok((shape, data))
}

/// Integer labels of any width and sign, as u32.
pub fn read_labels(path: &Path) -> Result<(Vec<usize>, Vec<u32>)> {
    let npy = open(path)?;
    let shape = sized_shape(path, &npy)?;
    let dtype = npy.dtype();
    let corrupt = |e: std::io::Error| bad(path, format!("is truncated or corrupt: {e}"));
    let wide: Vec<i128> = match plain(path, &dtype)? {
        (TypeChar::Int, 1) => npy
            .into_vec::<i8>()
            .map_err(corrupt)?
            .into_iter()
            .map(i128::from)
            .collect(),
        (TypeChar::Int, 2) => npy
            .into_vec::<i16>()
            .map_err(corrupt)?
            .into_iter()
            .map(i128::from)
            .collect(),
        (TypeChar::Int, 4) => npy
            .into_vec::<i32>()
            .map_err(corrupt)?
            .into_iter()
            .map(i128::from)
            .collect(),
        (TypeChar::Int, 8) => npy
            .into_vec::<i64>()
            .map_err(corrupt)?
            .into_iter()
            .map(i128::from)
            .collect(),
        (TypeChar::Uint, 1) => npy
            .into_vec::<u8>()
            .map_err(corrupt)?
            .into_iter()
            .map(i128::from)
            .collect(),
        (TypeChar::Uint, 2) => npy
            .into_vec::<u16>()
            .map_err(corrupt)?
            .into_iter()
            .map(i128::from)
            .collect(),
        (TypeChar::Uint, 4) => npy
            .into_vec::<u32>()
            .map_err(corrupt)?
            .into_iter()
            .map(i128::from)
            .collect(),
        (TypeChar::Uint, 8) => npy
            .into_vec::<u64>()
            .map_err(corrupt)?
            .into_iter()
            .map(i128::from)
            .collect(),
        (c, s) => {
            return Err(bad(
                path,
                format!("has dtype {c:?}{s}; labels must be integers"),
            ))
        }
    };
    if wide.len() != shape.iter().product::<usize>() {
        return Err(bad(
            path,
            format!("holds {} values for shape {shape:?}", wide.len()),
        ));
    }
    let labels = wide
        .iter()
        .map(|&l| {
            u32::try_from(l).map_err(|_| {
                bad(
                    path,
                    format!("label {l} is out of range (0 ..= {})", u32::MAX),
                )
            })
        })
        .collect::<Result<Vec<u32>>>()?;
    Ok((shape, labels))
}

/// Writes an f32 array, atomically (a temporary file renamed into place).
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write(path, shape, data)
}

/// Writes an i64 array (labels, as PyTorch and NumPy index with them), atomically.
pub fn write_i64(path: &Path, shape: &[usize], data: &[i64]) -> Result<()> {
    write(path, shape, data)
}

fn write<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    let tmp = path.with_extension("npy.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut f)
            .begin_nd()?;
        w.extend(data.iter().copied())?;
        w.finish()?;
        std::io::Write::flush(&mut f)?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()
    };
    // A failed write (a full disk) leaves neither a temp file nor a changed `path`.
    write()
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            bad(path, format!("cannot be written: {e}"))
        })
}
