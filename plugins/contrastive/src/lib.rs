//! Loss families of contrastive learning, as specified in `shared/design/LOSSES.md`:
//! - `nt_xent`: NT-Xent / InfoNCE over V >= 2 views (SimCLR's 2N-view form for V = 2);
//! - `info_nce`: the general query / positive key / negative keys form (CPC, MoCo);
//! - `supcon`: supervised contrastive (Khosla et al. 2020), L_out (default) or L_in,
//!   `contrast_mode` all / one, optional base temperature;
//! - `byol`: BYOL's 2 - 2 cos regression onto target projections (extra input `targets`);
//! - `moco`: MoCo's InfoNCE against a FIFO queue of past keys (component state);
//! - `n_pair`: N-pair (Sohn 2016);
//! - `align_uniform`: alignment + λ uniformity (Wang & Isola 2020);
//! - `margin`: margin contrastive on pairs (Hadsell, Chopra & LeCun 2006);
//! - `triplet`: triplet loss, all triplets or batch-hard, hinge or soft margin.
//!
//! Both share one device implementation (`masked.rs`): NT-Xent is SupCon whose "labels" are the
//! sample indices, so the positives of an anchor are the other views of its own sample. Each has
//! its own CPU reference, written straight from its formula.

mod align_uniform;
mod byol;
mod info_nce;
mod margin;
mod masked;
mod moco;
mod n_pair;
mod nt_xent;
mod supcon;
mod triplet;

pub use align_uniform::AlignUniform;
pub use byol::Byol;
pub use info_nce::InfoNce;
pub use margin::Margin;
pub use moco::Moco;
pub use n_pair::NPair;
pub use nt_xent::NtXent;
pub use supcon::SupCon;
pub use triplet::Triplet;

vkgrad_plugin::export_plugin!(
    name: "contrastive",
    version: "0.1.0",
    losses: [NtXent, InfoNce, SupCon, Byol, Moco, NPair, AlignUniform, Margin, Triplet],
);

/// The epsilon of the L2 normalisation (PyTorch's F.normalize): a zero feature vector stays
/// zero, so its similarity with everything is 0.
pub const EPS: f64 = 1e-12;

/// Checks a temperature option.
pub(crate) fn check_temperature(name: &str, key: &str, t: f64) -> Result<(), String> {
    if !(t > 0.0 && t.is_finite()) {
        return Err(format!(
            "{name}: {key} must be positive and finite, got {t}"
        ));
    }
    Ok(())
}

/// Checks features `[N, V, D]` and returns (N, V, D).
pub(crate) fn check_features(
    name: &str,
    dims: &[usize],
    min_views: usize,
) -> Result<(usize, usize, usize), String> {
    let [n, v, d] = dims[..] else {
        return Err(format!(
            "{name}: features must have rank 3, [N, V, D], got shape {dims:?}"
        ));
    };
    if n == 0 || d == 0 {
        return Err(format!("{name}: empty batch: features of shape {dims:?}"));
    }
    if v < min_views {
        return Err(format!(
            "{name}: needs V >= {min_views} views, got features of shape {dims:?}"
        ));
    }
    Ok((n, v, d))
}

/// For the references: embedding (sample `i`, view `w`) of features `[N, V, D]`, divided by
/// max(||.||, EPS) when `normalize`.
pub(crate) fn row(f: &vkgrad_plugin::Array, i: usize, w: usize, normalize: bool) -> Vec<f64> {
    let d = f.dims[2];
    let r: Vec<f64> = (0..d).map(|k| f.at(&[i, w, k])).collect();
    if !normalize {
        return r;
    }
    let norm = r.iter().map(|x| x * x).sum::<f64>().sqrt().max(EPS);
    r.iter().map(|x| x / norm).collect()
}

/// Unit vectors of every embedding, view-major: index a = view * N + sample (as SupContrast's
/// torch.cat(unbind(1))).
pub(crate) fn unit_rows(f: &vkgrad_plugin::Array, n: usize, v: usize) -> Vec<Vec<f64>> {
    (0..v)
        .flat_map(|w| (0..n).map(move |i| (i, w)))
        .map(|(i, w)| row(f, i, w, true))
        .collect()
}
