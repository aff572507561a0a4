//! Options drawn from the domains a component declares (ABI 1.4, the SDK's `options!`): every
//! generated case carries an options set, so a device path that ignores an option disagrees
//! with its reference on the cases that set it. Shrinking goes towards the defaults (an
//! option left out), so a failure is reported with the fewest options that still fail.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// An option the component declares a domain for.
#[derive(Debug, Clone)]
pub struct Sampled {
    pub name: String,
    pub domain: Value,
    /// Why ignoring it cannot change the output (declared by the component), if it cannot.
    pub exempt: Option<String>,
}

/// The options of a component's schema that have a domain, and the names of those without.
pub fn sampled_options(schema: &Value) -> (Vec<Sampled>, Vec<String>) {
    let mut with = Vec::new();
    let mut without = Vec::new();
    for o in schema.as_array().into_iter().flatten() {
        let name = o["name"].as_str().unwrap_or("?").to_string();
        match o.get("domain") {
            Some(d) if !d.is_null() => with.push(Sampled {
                name,
                domain: d.clone(),
                exempt: o["exempt"].as_str().map(str::to_string),
            }),
            _ => without.push(name),
        }
    }
    (with, without)
}

/// A float rounded to 4 significant digits, so reports show readable values.
fn round4(x: f64) -> f64 {
    format!("{x:.3e}").parse().unwrap_or(x)
}

/// Values of one domain (the SDK's `Domain`, serialised); `Err` names what is not a domain.
fn domain_strategy(d: &Value) -> Result<BoxedStrategy<Value>, String> {
    if d == "bool" {
        return Ok(any::<bool>().prop_map(Value::Bool).boxed());
    }
    if let Some(f) = d.get("float") {
        let (lo, hi) = (f["lo"].as_f64(), f["hi"].as_f64());
        let log = f["log"].as_bool().unwrap_or(false);
        return match (lo, hi) {
            (Some(lo), Some(hi)) if lo <= hi && (!log || lo > 0.0) => Ok((0.0f64..=1.0)
                .prop_map(move |u| {
                    let x = if log {
                        (lo.ln() + u * (hi.ln() - lo.ln())).exp()
                    } else {
                        lo + u * (hi - lo)
                    };
                    Value::from(round4(x).clamp(lo, hi))
                })
                .boxed()),
            _ => Err(format!(
                "float domain {f} needs lo <= hi (and lo > 0 when log)"
            )),
        };
    }
    if let Some(i) = d.get("int") {
        return match (i["lo"].as_i64(), i["hi"].as_i64()) {
            (Some(lo), Some(hi)) if lo <= hi => Ok((lo..=hi).prop_map(Value::from).boxed()),
            _ => Err(format!("int domain {i} needs lo <= hi")),
        };
    }
    if let Some(Value::Array(values)) = d.get("choice") {
        if values.is_empty() {
            return Err("a choice domain needs at least one value".into());
        }
        let values = values.clone();
        return Ok((0..values.len())
            .prop_map(move |k| values[k].clone())
            .boxed());
    }
    if let Some(inner) = d.get("nullable") {
        let inner = domain_strategy(inner)?;
        return Ok(prop_oneof![Just(Value::Null), inner].boxed());
    }
    Err(format!("unknown option domain {d}"))
}

/// Options sets as JSON objects: a quarter of the cases take every default (`{}`), the others
/// set each sampled option with probability 1/2. `pinned` (`--options`) replaces sampling.
pub fn options_strategy(
    sampled: &[Sampled],
    pinned: Option<&str>,
) -> Result<BoxedStrategy<String>, String> {
    if let Some(p) = pinned {
        return Ok(Just(p.to_string()).boxed());
    }
    if sampled.is_empty() {
        return Ok(Just("{}".to_string()).boxed());
    }
    let mut each = Vec::new();
    for s in sampled {
        let values = domain_strategy(&s.domain).map_err(|e| format!("option {}: {e}", s.name))?;
        let name = s.name.clone();
        each.push(
            prop_oneof![
                Just(None),
                values.prop_map(move |v| Some((name.clone(), v)))
            ]
            .boxed(),
        );
    }
    let set = each.prop_map(|picked| {
        let m: Map<String, Value> = picked.into_iter().flatten().collect();
        Value::Object(m).to_string()
    });
    Ok(prop_oneof![1 => Just("{}".to_string()), 3 => set].boxed())
}

/// `options` without `name`: what a device path that ignores `name` is built with.
pub fn without(options: &str, name: &str) -> String {
    match serde_json::from_str::<Value>(options) {
        Ok(Value::Object(mut m)) => {
            m.remove(name);
            Value::Object(m).to_string()
        }
        _ => options.to_string(),
    }
}
