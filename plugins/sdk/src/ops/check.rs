//! Checking a call's attributes against the table: a mistyped, unknown, missing or
//! out-of-range attribute is an error naming the op and the attribute — never a silent default.

use super::table::{attrs, describe, names, Need, Ty};
use serde_json::Value;

fn fits(t: Ty, v: &Value) -> bool {
    match t {
        Ty::F32 => v
            .as_f64()
            .is_some_and(|x| x.is_finite() && x.abs() <= f32::MAX as f64),
        Ty::Int => v.as_i64().is_some_and(|x| isize::try_from(x).is_ok()),
        Ty::UInt => v.as_u64().is_some_and(|x| usize::try_from(x).is_ok()),
        Ty::U32 => v.as_u64().is_some_and(|x| x <= u32::MAX as u64),
        Ty::U64 => v.as_u64().is_some(),
        Ty::Bool => v.is_boolean(),
        Ty::UList => v.as_array().is_some_and(|a| {
            a.iter()
                .all(|x| x.as_u64().is_some_and(|u| usize::try_from(u).is_ok()))
        }),
        Ty::Choice(c) => v.as_str().is_some_and(|s| c.contains(&s)),
    }
}

/// Checks a call's attributes against op `op`'s schema.
pub fn check(op: &str, a: &Value) -> Result<(), String> {
    let Some(schema) = attrs(op) else {
        return Err(format!(
            "unknown host op `{op}`; the host ops are: {} (docs/writing-a-plugin.md)",
            names().collect::<Vec<_>>().join(", ")
        ));
    };
    let Some(given) = a.as_object() else {
        return Err(format!("{op}: attributes must be a JSON object, got {a}"));
    };
    for (k, v) in given {
        let Some((_, t, _)) = schema.iter().find(|(n, _, _)| n == k) else {
            let known: Vec<&str> = schema.iter().map(|(n, _, _)| *n).collect();
            return Err(format!(
                "{op}: unknown attribute `{k}` ({op} takes {})",
                if known.is_empty() {
                    "no attributes".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        if !fits(*t, v) {
            return Err(format!(
                "{op}: attribute `{k}` must be {}, got {v}",
                describe(*t)
            ));
        }
    }
    for (n, t, need) in schema {
        if matches!(need, Need::Required) && !given.contains_key(*n) {
            return Err(format!(
                "{op}: attribute `{n}` ({}) is missing",
                describe(*t)
            ));
        }
    }
    Ok(())
}
