//! `vkgrad plugins`: the plugins found, their components and options, and the files refused.

use std::path::PathBuf;
use vkgrad::Result;

pub fn plugins(plugins: &[PathBuf], json: bool) -> Result<()> {
    vkgrad::plugin::check_explicit(plugins)?;
    let files = vkgrad::plugin::search_paths(plugins);
    let reg = vkgrad::plugin::Registry::load_all(&files);
    if json {
        let refused: Vec<String> = reg.refused.iter().map(|e| e.to_string()).collect();
        println!(
            "{}",
            serde_json::json!({ "plugins": reg.plugins, "refused": refused })
        );
        return Ok(());
    }
    for p in &reg.plugins {
        println!(
            "{} {} (ABI {}) — {}",
            p.name,
            p.version,
            p.abi,
            p.path.display()
        );
        for c in &p.components {
            println!("  {} [{}]: {}", c.name, c.kind, c.description);
            for o in c.options.as_array().into_iter().flatten() {
                let field = |k: &str| o[k].as_str().unwrap_or("?").to_string();
                println!(
                    "      {} ({}, default {}): {}",
                    field("name"),
                    field("type"),
                    o["default"],
                    field("doc")
                );
            }
        }
    }
    if reg.plugins.is_empty() {
        let searched: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        println!("no plugins found (searched: {})", searched.join(", "));
    }
    for e in &reg.refused {
        eprintln!("refused: {e}");
    }
    Ok(())
}
