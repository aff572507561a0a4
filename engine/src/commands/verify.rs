//! `vkgrad verify`: the property harness on every component of a plugin file. Each component
//! is verified in a child process of this binary, so a plugin that crashes the process (a
//! segmentation fault, an abort) fails that component's checks — named with the property it
//! was checking — instead of ending the harness, and a panic poisons one component, not the
//! plugin. The child is this same command with one `--component` and `--json`, marked by
//! `VKGRAD_VERIFY_CHILD`; it runs the harness in-process.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use vkgrad::Result;

/// Set in a child's environment: run in-process, report progress on stderr.
const CHILD: &str = "VKGRAD_VERIFY_CHILD";
/// The prefix of a child's progress lines on stderr.
const PROGRESS: &str = "vkgrad-verify-progress: ";

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
    let only = vkgrad::plugin::verify::Only { component, options };
    let chosen = only.select(plugin)?;
    let child = std::env::var_os(CHILD).is_some();
    let total: usize = chosen
        .iter()
        .map(|c| vkgrad::plugin::verify::case_properties(c.kind).len())
        .sum();
    let bar = if json || child {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total as u64)
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    let checks: Vec<Value> = if child {
        let checks = vkgrad::plugin::verify::verify(&chosen, only.options, cases, seed, |what| {
            eprintln!("{PROGRESS}{what}");
        });
        checks
            .iter()
            .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
            .collect()
    } else {
        let mut all = Vec::new();
        for c in &chosen {
            bar.set_message(c.name.clone());
            all.extend(in_child(path, &c.name, cases, seed, options)?);
            bar.inc(vkgrad::plugin::verify::case_properties(c.kind).len() as u64);
        }
        all
    };
    bar.finish_and_clear();
    let flag = |c: &Value, k: &str| c.get(k).and_then(Value::as_bool).unwrap_or(false);
    let failed = checks
        .iter()
        .filter(|c| !flag(c, "passed") && !flag(c, "skipped"))
        .count();
    let skipped = checks.iter().filter(|c| flag(c, "skipped")).count();
    if json || child {
        let out = serde_json::json!({ "plugin": plugin.name, "path": path, "checks": checks, "failed": failed, "not_run": skipped });
        println!("{out}");
    } else {
        let text = |c: &Value, k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        for c in &checks {
            let mark = match (flag(c, "passed"), flag(c, "skipped")) {
                (true, _) => "ok  ",
                (_, true) => "skip",
                _ => "FAIL",
            };
            let (comp, prop, detail) =
                (text(c, "component"), text(c, "property"), text(c, "detail"));
            println!("{mark} {comp} — {prop}: {detail}");
        }
        let passed = checks.len() - failed - skipped;
        if skipped > 0 {
            println!("{passed} passed, {failed} failed, {skipped} not run");
        } else {
            println!("{passed} passed, {failed} failed");
        }
    }
    if failed > 0 && !child {
        return Err(vkgrad::Error::Other(format!(
            "{failed} check(s) failed for {}",
            path.display()
        )));
    }
    Ok(())
}

/// Verifies one component in a child process; its checks, or — if the process did not end
/// with a report — one failed check naming how it ended and what it was checking.
fn in_child(
    path: &Path,
    component: &str,
    cases: u32,
    seed: u64,
    options: Option<&str>,
) -> Result<Vec<Value>> {
    let exe = std::env::current_exe()
        .map_err(|e| vkgrad::Error::Other(format!("verify: cannot find its own binary: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg("verify")
        .arg(path)
        .args(["--component", component, "--json"])
        .args(["--cases", &cases.to_string(), "--seed", &seed.to_string()]);
    if let Some(o) = options {
        cmd.args(["--options", o]);
    }
    let out = cmd
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| vkgrad::Error::Other(format!("verify: cannot start a child process: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Pass the child's own messages (warnings, the crash handler's) on; keep its progress.
    let mut last = None;
    for line in stderr.lines() {
        match line.strip_prefix(PROGRESS) {
            Some(p) => last = Some(p.to_string()),
            None => eprintln!("{line}"),
        }
    }
    let report = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok());
    if let Some(checks) = report
        .as_ref()
        .and_then(|r| r.get("checks"))
        .and_then(Value::as_array)
    {
        return Ok(checks.clone());
    }
    let how = match out.status.code() {
        Some(code) => format!("exited with status {code} without a report"),
        None => ended_by_signal(&out.status),
    };
    let during = last.map_or("before its first check".to_string(), |p| {
        format!("while checking \"{p}\"")
    });
    let crash = stderr
        .lines()
        .rfind(|l| !l.starts_with(PROGRESS))
        .unwrap_or("")
        .trim()
        .to_string();
    Ok(vec![serde_json::json!({
        "component": component,
        "property": "runs without crashing the process",
        "passed": false,
        "skipped": false,
        "detail": format!("the process {how} {during}{}{crash}", if crash.is_empty() { "" } else { ": " }),
    })])
}

#[cfg(unix)]
fn ended_by_signal(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(s) => format!("was killed by signal {s}"),
        None => "ended without a report".into(),
    }
}

#[cfg(not(unix))]
fn ended_by_signal(_: &std::process::ExitStatus) -> String {
    "ended without a report".into()
}

/// `vkgrad verify --self-test`: each component verified clean, then with each known fault
/// injected (in this process: the faults are the host's, around a healthy plugin).
pub fn self_test(
    path: &Path,
    cases: u32,
    seed: u64,
    component: Option<&str>,
    json: bool,
) -> Result<()> {
    let mut reg = vkgrad::plugin::Registry::default();
    reg.load(path)?;
    let plugin = &reg.plugins[0];
    let only = vkgrad::plugin::verify::Only {
        component,
        options: None,
    };
    let chosen = only.select(plugin)?;
    let (clean, outcomes) =
        vkgrad::plugin::verify::faults::self_test(&chosen, cases, seed, |what| {
            if !json {
                eprintln!("self-test: {what}");
            }
        });
    let failed_clean: Vec<_> = clean.iter().filter(|c| !c.clean()).collect();
    let blind: Vec<_> = outcomes.iter().filter(|o| o.caught_by.is_empty()).collect();
    if json {
        let out = serde_json::json!({ "plugin": plugin.name, "components": chosen.len(), "failed_without_faults": failed_clean, "faults": outcomes, "blind_spots": blind.len() });
        println!("{out}");
    } else {
        for c in &failed_clean {
            println!(
                "FAIL {} — {} (without faults): {}",
                c.component, c.property, c.detail
            );
        }
        for o in &outcomes {
            match o.caught_by.is_empty() {
                true => println!(
                    "BLIND SPOT {} — {}: no property caught it",
                    o.component, o.fault
                ),
                false => println!(
                    "caught {} — {}: by {}",
                    o.component,
                    o.fault,
                    o.caught_by.join(", ")
                ),
            }
        }
        println!(
            "{} fault(s) injected into {} component(s): {} caught, {} blind spot(s)",
            outcomes.len(),
            chosen.len(),
            outcomes.len() - blind.len(),
            blind.len()
        );
    }
    if !failed_clean.is_empty() {
        return Err(vkgrad::Error::Other(format!(
            "{} check(s) failed without faults for {}: fix those first",
            failed_clean.len(),
            path.display()
        )));
    }
    if !blind.is_empty() {
        return Err(vkgrad::Error::Other(format!(
            "{} fault(s) went unnoticed in {}",
            blind.len(),
            path.display()
        )));
    }
    Ok(())
}
