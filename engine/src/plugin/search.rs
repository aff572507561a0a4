//! Which files are plugins: `--plugin` paths, `VKGRAD_PLUGIN_PATH`, the binary's folder.

use super::*;

/// The plugin files to load: `explicit` paths (files or folders), then `VKGRAD_PLUGIN_PATH`
/// (`:`-separated), then the folder of the running `vkgrad` (where the built-in plugins are
/// built). Folders contribute their `libvkgrad_plugin_*` / `*.so` / `*.dylib` / `*.dll` files.
pub fn search_paths(explicit: &[PathBuf]) -> Vec<PathBuf> {
    let mut roots: Vec<(PathBuf, bool)> = explicit.iter().map(|p| (p.clone(), true)).collect();
    if let Ok(v) = std::env::var("VKGRAD_PLUGIN_PATH") {
        roots.extend(
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| (p, true)),
        );
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        roots.push((dir, false));
    }
    let mut files = Vec::new();
    for (root, any_library) in roots {
        if root.is_dir() {
            files.extend(plugin_files(&root, any_library));
        } else {
            files.push(root);
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    files
}

/// The `--plugin` paths must exist, and a folder among them must hold plugin files.
pub fn check_explicit(explicit: &[PathBuf]) -> Result<()> {
    for p in explicit {
        if !p.exists() {
            return Err(refuse(p, "does not exist (given with --plugin)"));
        }
        if p.is_dir() && plugin_files(p, true).is_empty() {
            return Err(Error::Other(format!(
                "--plugin {}: the folder holds no plugin files (*.so, *.dylib, *.dll)",
                p.display()
            )));
        }
    }
    Ok(())
}

/// The library files in `dir`, sorted; with `any_library` false only our built-in plugins
/// (`*vkgrad_plugin_*`), as in the binary's own folder.
fn plugin_files(dir: &Path, any_library: bool) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let library = [".so", ".dylib", ".dll"]
                .iter()
                .any(|ext| name.ends_with(ext));
            library && (any_library || name.contains("vkgrad_plugin_"))
        })
        .collect();
    found.sort();
    found
}
