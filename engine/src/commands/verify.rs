//! `vkgrad verify`: the property harness on every component of a plugin file.

use std::path::Path;
use vkgrad::Result;

pub fn verify(
    path: &Path,
    cases: u32,
    seed: u64,
    component: Option<&str>,
    options: Option<&str>,
    json: bool,
) -> Result<()> {
    let mut reg = vkgrad::plugin::Registry::default();
    reg.load(path)?;
    let plugin = &reg.plugins[0];
    let only = vkgrad::plugin::verify::Only {
        component,
        options: options.unwrap_or("{}"),
    };
    let chosen = only.select(plugin)?;
    let total: usize = chosen
        .iter()
        .map(|c| vkgrad::plugin::verify::case_properties(c.kind).len())
        .sum();
    let total = total as u64;
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    let checks = vkgrad::plugin::verify::verify(&chosen, only.options, cases, seed, |what| {
        bar.set_message(what.to_string());
        bar.inc(1);
    });
    bar.finish_and_clear();
    let failed = checks.iter().filter(|c| !c.passed && !c.skipped).count();
    let skipped = checks.iter().filter(|c| c.skipped).count();
    if json {
        let out = serde_json::json!({ "plugin": plugin.name, "path": path, "checks": checks, "failed": failed, "not_run": skipped });
        println!("{out}");
    } else {
        for c in &checks {
            let mark = match (c.passed, c.skipped) {
                (true, _) => "ok  ",
                (_, true) => "skip",
                _ => "FAIL",
            };
            println!("{mark} {} — {}: {}", c.component, c.property, c.detail);
        }
        let passed = checks.len() - failed - skipped;
        if skipped > 0 {
            println!("{passed} passed, {failed} failed, {skipped} not run");
        } else {
            println!("{passed} passed, {failed} failed");
        }
    }
    if failed > 0 {
        return Err(vkgrad::Error::Other(format!(
            "{failed} check(s) failed for {}",
            path.display()
        )));
    }
    Ok(())
}
