//! `vkgrad loss`: one evaluation of a loss component on .npy files.

/// Evaluates the loss; writes d loss / d features to `grad_out` (never over an input file).
#[allow(clippy::too_many_arguments)]
pub fn loss(
    name: &str,
    features: &std::path::Path,
    labels: Option<&std::path::Path>,
    inputs: &[String],
    sets: &[String],
    grad_out: Option<&std::path::Path>,
    plugins: &[std::path::PathBuf],
    json: bool,
) -> vkgrad::Result<()> {
    use vkgrad::{Error, IntTensor, Tensor};
    if let Some(out) = grad_out {
        let inputs_named = inputs
            .iter()
            .filter_map(|kv| kv.split_once('=').map(|(_, f)| f));
        let given: Vec<&std::path::Path> = [Some(features), labels]
            .into_iter()
            .flatten()
            .chain(inputs_named.map(std::path::Path::new))
            .collect();
        if let Some(p) = given
            .iter()
            .find(|p| vkgrad::train::rundir::same_file(p, out))
        {
            return Err(Error::Other(format!(
                "--grad-out {} is an input ({}); write the gradient to another file",
                out.display(),
                p.display()
            )));
        }
    }
    let reg = vkgrad::plugin::Registry::load_for(plugins)?;
    let comp = reg.find("loss", name)?;
    let mut options = serde_json::Map::new();
    for kv in sets {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::Other(format!("--set {kv}: expected KEY=VALUE")))?;
        let value =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        options.insert(k.to_string(), value);
    }
    let loss = comp.create_loss(&serde_json::Value::Object(options).to_string())?;
    if labels.is_none() && loss.describe()?.needs_labels {
        return Err(Error::Other(format!(
            "{} needs labels: pass --labels FILE.npy (one integer per sample)",
            comp.name
        )));
    }
    let (shape, data) = vkgrad::npy::read_floats(features)?;
    if shape.len() != 3 {
        return Err(Error::Other(format!(
            "{}: features must be [N, V, D], got shape {shape:?}",
            features.display()
        )));
    }
    let x = Tensor::from_vec(data.iter().map(|&v| v as f32).collect(), &shape)?.requires_grad();
    let labels = match labels {
        Some(p) => {
            let (lshape, l) = vkgrad::npy::read_labels(p)?;
            if lshape != [shape[0]] {
                return Err(Error::Other(format!(
                    "{}: labels of shape {lshape:?} for {} samples; expected [{}]",
                    p.display(),
                    shape[0],
                    shape[0]
                )));
            }
            Some(IntTensor::from_vec(l, &[shape[0]])?)
        }
        None => None,
    };
    let wanted = loss.describe()?.extra_inputs;
    let mut extra = Vec::new();
    for key in &wanted {
        let file = inputs
            .iter()
            .find_map(|kv| kv.split_once('=').filter(|(k, _)| k == key).map(|(_, f)| f))
            .ok_or_else(|| Error::Other(format!("{} needs --input {key}=FILE.npy", comp.name)))?;
        let (eshape, e) = vkgrad::npy::read_floats(std::path::Path::new(file))?;
        if eshape != shape {
            return Err(Error::Other(format!(
                "{file}: shape {eshape:?} differs from the features' {shape:?}"
            )));
        }
        extra.push(Tensor::from_vec(
            e.iter().map(|&v| v as f32).collect(),
            &shape,
        )?);
    }
    for kv in inputs {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        if !wanted.iter().any(|w| w == key) {
            return Err(Error::Other(format!(
                "--input {kv}: {} takes no input `{key}` (it takes {wanted:?})",
                comp.name
            )));
        }
    }
    let y = loss.forward_with(&x, labels.as_ref(), &extra)?;
    let value = y.item()?;
    if !value.is_finite() {
        return Err(Error::Other(format!(
            "{}: the loss is {value} on {} (degenerate features, e.g. a zero vector or a constant column?)",
            comp.name,
            features.display()
        )));
    }
    if let Some(path) = grad_out {
        y.backward()?;
        // No gradient at all means the loss does not depend on its features (a detached
        // graph): an error, not a file of zeros that would look like a flat minimum.
        let g = x.grad().map(|g| g.to_vec()).transpose()?.ok_or_else(|| {
            Error::Other(format!(
                "{}: the loss does not depend on the features (no gradient reached them)",
                comp.name
            ))
        })?;
        if let Some(i) = g.iter().position(|v| !v.is_finite()) {
            return Err(Error::Other(format!(
                "{}: the gradient is {} at index {i} (not written to {})",
                comp.name,
                g[i],
                path.display()
            )));
        }
        vkgrad::npy::write_f32(path, &shape, &g)?;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "loss": value, "component": comp.name })
        );
    } else {
        println!("{}: {value}", comp.name);
    }
    Ok(())
}
