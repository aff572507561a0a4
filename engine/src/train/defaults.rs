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

/// The augmentation's defaults for samples of `shape`, for view 1 or 2.
pub fn augment(shape: &[usize], view: usize) -> Value {
    let mut d = if shape.len() == 3 {
        json!({ "channels": shape[0], "size": shape[1] })
    } else {
        json!({ "dim": shape[0] })
    };
    d["view"] = json!(view);
    d
}
