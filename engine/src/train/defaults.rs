//! The defaults policy: which options a component gets from the data when the user did not
//! set them (input shape, widths), and how they are merged into what is saved with the run.

use crate::error::Result;
use crate::plugin::Registry;
use serde_json::{json, Map, Value};

/// A component's options: the user's, plus each data-dependent default the component declares
/// and the user did not set. The defaults are written into `user` too, so the saved config
/// holds every option a checkpoint was built with (a later change of a default cannot change
/// what an old run's checkpoint loads into).
pub fn options_for(
    reg: &Registry,
    kind: &str,
    name: &str,
    user: &mut Map<String, Value>,
    defaults: Value,
) -> Result<Value> {
    let known = reg.find(kind, name)?.option_names();
    if let Value::Object(d) = defaults {
        for (k, v) in d {
            if known.contains(&k) {
                user.entry(k).or_insert(v);
            }
        }
    }
    Ok(Value::Object(user.clone()))
}

/// The encoder's data-dependent defaults for samples of `shape` ([C, H, W] or [D]).
pub fn encoder(shape: &[usize]) -> Value {
    if shape.len() == 3 {
        // 8x8 digits: two conv widths and global pooling. Larger images: the classic MNIST
        // net, whose flatten + Linear keeps where strokes are (docs/results.md: better kNN on
        // MNIST-10k than a third width with global pooling).
        if shape[1] <= 8 {
            json!({ "channels": shape[0], "size": shape[1], "widths": [32, 64] })
        } else {
            json!({ "channels": shape[0], "size": shape[1], "widths": [32, 64], "fc": 128 })
        }
    } else {
        json!({ "sizes": [shape[0], 256, 128], "batch_norm": true })
    }
}

/// The projection head's defaults on top of an encoder `width` wide.
pub fn head(width: usize, projection_dim: usize) -> Value {
    json!({ "in_features": width, "hidden": width.max(128), "out_features": projection_dim })
}

/// BYOL's predictor on a projection `d` wide.
pub fn predictor(d: usize) -> Value {
    json!({ "in_features": d, "hidden": (4 * d).max(128), "out_features": d })
}

/// The augmentation's defaults for samples of `shape`, for view 1 or 2, with the `preset`
/// the run uses and the run's recipe generation (`Config::recipe`).
pub fn augment(shape: &[usize], view: usize, preset: &str, recipe: u32) -> Value {
    let mut d = if shape.len() == 3 {
        json!({ "channels": shape[0], "size": shape[1] })
    } else {
        json!({ "dim": shape[0] })
    };
    d["view"] = json!(view);
    // Grayscale images through the SimCLR preset: digits and letters are not mirror
    // symmetric and have no colour, and a crop under half the image loses the character —
    // the recipe that took MNIST-10k from kNN 0.938 to 0.962 (docs/results.md).
    if recipe >= 2 && preset == "simclr" && shape.len() == 3 && shape[0] == 1 {
        d["min_scale"] = json!(0.5);
        d["flip"] = json!(0.0);
        d["jitter_strength"] = json!(0.5);
    }
    d
}

/// The loss's data-dependent defaults: NT-Xent on images at τ = 0.2 (above the plugin's
/// 0.5: on digits kNN 0.991 against 0.980, on MNIST-10k 0.962 against 0.938 — the
/// similarities of a small encoder's features need a sharper softmax to spread them).
pub fn loss(shape: &[usize], loss: &str, recipe: u32) -> Value {
    if recipe >= 2 && shape.len() == 3 && matches!(loss, "nt_xent" | "contrastive::nt_xent") {
        json!({ "temperature": 0.2 })
    } else {
        json!({})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run saved with the first generation of defaults (recipe 1) gets none of today's
    /// tuned options, so resuming it changes nothing; recipe 2 gets them, on images only.
    #[test]
    fn tuned_recipes_apply_only_to_new_runs_and_images() {
        let img = [1, 28, 28];
        assert_eq!(loss(&img, "nt_xent", 1), json!({}));
        assert_eq!(loss(&img, "nt_xent", 2), json!({ "temperature": 0.2 }));
        assert_eq!(loss(&[64], "nt_xent", 2), json!({}));
        assert_eq!(loss(&img, "supcon", 2), json!({}));
        let old = augment(&img, 1, "simclr", 1);
        assert!(old.get("min_scale").is_none(), "{old}");
        let new = augment(&img, 1, "simclr", 2);
        assert_eq!(new["min_scale"], json!(0.5));
        assert_eq!(new["flip"], json!(0.0));
        // RGB images keep the SimCLR preset's own strengths (flips, full jitter).
        assert!(augment(&[3, 32, 32], 1, "simclr", 2).get("flip").is_none());
    }
}
