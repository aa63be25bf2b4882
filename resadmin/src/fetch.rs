//! The fetch phase of a build: the Doee's dependencies downloaded, with
//! network and running none of the upload's code, into a cache per
//! project, which the build phase then reads offline (and read-only) in
//! its sandbox without network.
//!
//! For Rust, `cargo fetch` against the Doee's `Cargo.lock` (or one it
//! makes), from crates.io or the registry the operator configured
//! (`resadmin.crates_registry`): cargo only downloads and unpacks crates,
//! it never runs a build script while fetching. Dependencies from git, and
//! paths that leave the upload, are refused before anything runs.

use std::path::{Component, Path, PathBuf};

/// Where the fetch phase fetches from; a project's quota bounds how much.
#[derive(Clone, Debug, Default)]
pub struct FetchConfig {
    /// A crates.io mirror (a sparse registry URL), or `None` for crates.io.
    pub crates_registry: Option<String>,
    /// A PyPI mirror (a simple index URL), or `None` for PyPI.
    pub pip_index_url: Option<String>,
}

/// Refuses a project's cache of `bytes` past its quota, naming it.
pub fn within_quota(project: &str, bytes: u64, quota: u64) -> Result<(), String> {
    if bytes <= quota {
        return Ok(());
    }
    Err(format!(
        "the project's dependencies take {:.1} MB, past project `{project}`'s quota max_dependencies_bytes of {quota}",
        bytes as f64 / 1e6
    ))
}

/// The SDK's crate, which builds take from the platform, not a registry.
const SDK_CRATE: &str = "doee-sdk";

/// Checks where every crate of a Doee's upload (its Cargo.toml, and any
/// crate beside it that a path dependency may bring in) takes its
/// dependencies from, and says whether any needs the registry.
pub fn upload_dependencies(root: &Path) -> Result<bool, String> {
    let mut manifests = Vec::new();
    find_manifests(root, Path::new(""), 0, &mut manifests)?;
    let mut from_registry = false;
    for relative in manifests {
        let text = std::fs::read_to_string(root.join(&relative))
            .map_err(|e| format!("cannot read {}: {e}", relative.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("{}: {}", relative.display(), e.message()))?;
        let dir = relative.parent().unwrap_or(Path::new(""));
        from_registry |= rust_dependencies(&table, dir)
            .map_err(|why| why.replacen("Cargo.toml", &relative.display().to_string(), 1))?;
    }
    Ok(from_registry)
}

/// The Cargo.toml files under `dir` (relative to the upload), depth first.
fn find_manifests(
    root: &Path,
    dir: &Path,
    depth: usize,
    found: &mut Vec<PathBuf>,
) -> Result<(), String> {
    const MAX_DEPTH: usize = 16;
    const MAX_MANIFESTS: usize = 256;
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return Ok(());
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let relative = dir.join(entry.file_name());
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && entry.file_name() != "target" {
            find_manifests(root, &relative, depth + 1, found)?;
        } else if kind.is_file() && entry.file_name() == "Cargo.toml" {
            found.push(relative);
            if found.len() > MAX_MANIFESTS {
                return Err(format!(
                    "the upload has more than {MAX_MANIFESTS} Cargo.toml files"
                ));
            }
        }
    }
    Ok(())
}

/// Checks where one crate's Cargo.toml (in `dir`, relative to the upload)
/// takes its dependencies from, and says whether it needs any from the
/// registry (beyond the SDK).
fn rust_dependencies(cargo_toml: &toml::Table, dir: &Path) -> Result<bool, String> {
    let mut from_registry = false;
    let mut tables: Vec<(String, &toml::Table)> = Vec::new();
    for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(table) = cargo_toml.get(kind).and_then(toml::Value::as_table) {
            tables.push((kind.to_string(), table));
        }
    }
    if let Some(targets) = cargo_toml.get("target").and_then(toml::Value::as_table) {
        for (cfg, target) in targets {
            for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
                if let Some(table) = target.get(kind).and_then(toml::Value::as_table) {
                    tables.push((format!("target.{cfg}.{kind}"), table));
                }
            }
        }
    }
    if let Some(patches) = cargo_toml.get("patch").and_then(toml::Value::as_table) {
        for (source, table) in patches {
            if let Some(table) = table.as_table() {
                tables.push((format!("patch.{source}"), table));
            }
        }
    }
    for key in ["replace", "workspace"] {
        if let Some(table) = cargo_toml.get(key).and_then(toml::Value::as_table) {
            if key == "replace" && !table.is_empty() {
                return Err("Cargo.toml: [replace] is not supported; use [patch] with a path inside the upload".into());
            }
            if table.contains_key("dependencies") {
                return Err("Cargo.toml: [workspace.dependencies] is not supported; declare dependencies in [dependencies]".into());
            }
        }
    }
    for (section, table) in tables {
        for (name, spec) in table {
            let spec = match spec {
                toml::Value::String(_) => None,
                toml::Value::Table(spec) => Some(spec),
                _ => return Err(format!("Cargo.toml: [{section}] {name} is malformed")),
            };
            let package = spec
                .and_then(|s| s.get("package"))
                .and_then(toml::Value::as_str)
                .unwrap_or(name);
            if let Some(git) = spec.and_then(|s| s.get("git")) {
                return Err(format!(
                    "Cargo.toml: [{section}] {name} comes from git ({}): a Doee's dependencies come from the registry, or from a path inside its upload",
                    git.as_str().unwrap_or("?")
                ));
            }
            if spec.is_some_and(|s| s.contains_key("registry") || s.contains_key("registry-index"))
            {
                return Err(format!(
                    "Cargo.toml: [{section}] {name} names another registry: a Doee's dependencies come from the platform's"
                ));
            }
            match spec.and_then(|s| s.get("path")) {
                Some(path) => {
                    let path = path.as_str().unwrap_or("");
                    if !inside(dir, Path::new(path)) {
                        return Err(format!(
                            "Cargo.toml: [{section}] {name} has the path `{path}`, outside the upload"
                        ));
                    }
                }
                None if package != SDK_CRATE && !section.starts_with("patch.") => {
                    from_registry = true;
                }
                None => {}
            }
        }
    }
    Ok(from_registry)
}

/// Whether `path`, relative to `dir` (itself relative to the upload), stays
/// inside the upload, by its words: no absolute path, no `..` above the
/// upload. Links inside an upload were refused when it was unpacked.
fn inside(dir: &Path, path: &Path) -> bool {
    let mut depth = dir.components().count();
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// A project's cache of fetched dependencies: the `CARGO_HOME` of its Rust
/// fetches (writable) and builds (read-only), and its pip cache (`pip/`);
/// made readable by the builds' uid.
pub fn project_cache(cargo_home: &Path, project: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let projects = cargo_home.join("projects");
    let home = projects.join(project);
    for dir in [&projects, &home] {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o005 != 0o005 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o755))?;
        }
    }
    Ok(home)
}

/// The cargo configuration of a project's fetches and builds: the
/// registry, and patience with a slow network.
pub fn cargo_config(config: &FetchConfig) -> String {
    let mut text = String::from("[net]\nretry = 2\n\n[http]\ntimeout = 60\n");
    if let Some(url) = &config.crates_registry {
        let url = url.trim_start_matches("sparse+");
        text.push_str(&format!(
            "\n[source.crates-io]\nreplace-with = \"isms-registry\"\n\n[source.isms-registry]\nregistry = \"sparse+{}\"\n",
            url.replace('\\', "\\\\").replace('"', "\\\"")
        ));
    }
    text
}

/// The packages (crates, wheels) in a directory tree, and the bytes it
/// holds.
pub fn cache_size(cargo_home: &Path) -> (usize, u64) {
    fn walk(dir: &Path, crates: &mut usize, bytes: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                walk(&entry.path(), crates, bytes);
            } else {
                *bytes += meta.len();
                if entry
                    .path()
                    .extension()
                    .is_some_and(|e| e == "crate" || e == "whl")
                {
                    *crates += 1;
                }
            }
        }
    }
    let (mut crates, mut bytes) = (0, 0);
    walk(cargo_home, &mut crates, &mut bytes);
    (crates, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<bool, String> {
        rust_dependencies(&text.parse().unwrap(), Path::new(""))
    }

    /// A crate beside the Doee's, brought in by a path, is checked too.
    #[test]
    fn every_crate_of_the_upload_is_checked() {
        let root = std::env::temp_dir().join(format!("isms-fetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("helper")).unwrap();
        std::fs::write(
            root.join("Cargo.toml"),
            "[dependencies]\nhelper = { path = \"helper\" }\n",
        )
        .unwrap();
        std::fs::write(
            root.join("helper/Cargo.toml"),
            "[dependencies]\nitoa = \"1\"\n",
        )
        .unwrap();
        assert_eq!(
            upload_dependencies(&root),
            Ok(true),
            "helper needs the registry"
        );
        std::fs::write(
            root.join("helper/Cargo.toml"),
            "[dependencies]\nx = { git = \"https://example.com/x\" }\n",
        )
        .unwrap();
        let err = upload_dependencies(&root).unwrap_err();
        assert!(
            err.contains("helper/Cargo.toml: [dependencies] x comes from git"),
            "{err}"
        );
        std::fs::write(
            root.join("helper/Cargo.toml"),
            "[dependencies]\ny = { path = \"../..\" }\n",
        )
        .unwrap();
        let err = upload_dependencies(&root).unwrap_err();
        assert!(err.contains("outside the upload"), "{err}");
        std::fs::write(
            root.join("helper/Cargo.toml"),
            "[dependencies]\nz = { path = \"..\" }\n",
        )
        .unwrap();
        assert_eq!(
            upload_dependencies(&root),
            Ok(false),
            "the upload's root is inside"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn registry_dependencies_are_found_and_the_sdk_is_not_one() {
        assert_eq!(check("[dependencies]\ndoee-sdk = \"0.1\"\n"), Ok(false));
        assert_eq!(
            check("[dependencies]\ndoee-sdk = \"0.1\"\nserde_json = \"1\"\n"),
            Ok(true)
        );
        assert_eq!(
            check("[target.'cfg(unix)'.build-dependencies]\ncc = { version = \"1\" }\n"),
            Ok(true)
        );
        assert_eq!(
            check("[dependencies]\nhelper = { path = \"helper\" }\n"),
            Ok(false)
        );
    }

    #[test]
    fn git_other_registries_and_paths_outside_are_refused_by_name() {
        for (text, says) in [
            (
                "[dependencies]\nx = { git = \"https://example.com/x\" }\n",
                "x comes from git",
            ),
            (
                "[dependencies]\nx = { path = \"../../other-project\" }\n",
                "x has the path `../../other-project`, outside",
            ),
            (
                "[dependencies]\nx = { path = \"/etc\" }\n",
                "outside the upload",
            ),
            (
                "[dependencies]\nx = { path = \"a/../../b\" }\n",
                "outside the upload",
            ),
            (
                "[patch.crates-io]\nserde = { git = \"https://example.com/serde\" }\n",
                "[patch.crates-io] serde comes from git",
            ),
            (
                "[dependencies]\nx = { version = \"1\", registry = \"evil\" }\n",
                "another registry",
            ),
            ("[replace]\n\"x:1.0.0\" = { path = \"x\" }\n", "[replace]"),
        ] {
            let err = check(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn a_mirror_replaces_crates_io() {
        let text = cargo_config(&FetchConfig {
            crates_registry: Some("https://mirror.example/index/".into()),
            ..FetchConfig::default()
        });
        let parsed: toml::Table = text.parse().unwrap();
        assert_eq!(
            parsed["source"]["isms-registry"]["registry"].as_str(),
            Some("sparse+https://mirror.example/index/")
        );
        assert!(!cargo_config(&FetchConfig::default()).contains("source"));
    }
}
