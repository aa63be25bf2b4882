//! Python Doees: the host's Python, a Doee's requirements, and the script
//! that packs a Doee with its packages.
//!
//! A Python Doee builds into one shared object: the Python runtime
//! (`doee-sdk/python/isms_python.c`, compiled against the host's
//! `libpython3.x`) with a zip archive appended, holding the upload under
//! `doee/` and its requirements' wheels, unpacked, under `site-packages/`.
//! Requirements come as wheels only (`pip download --only-binary=:all:`), so
//! no `setup.py` ever runs, and the fetch runs in its own sandbox with
//! network (see [`crate::fetch`]).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python that builds and runs Python Doees: Debian's, in `/usr`, which
/// every Worker sees read-only.
pub const PYTHON: &str = "/usr/bin/python3";

/// The host's Python, as Python Doees use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPython {
    /// `3.11`.
    pub version: String,
    /// Where `Python.h` is.
    pub include: PathBuf,
}

impl HostPython {
    /// The library the runtime links: `python3.11`.
    pub fn library(&self) -> String {
        format!("python{}", self.version)
    }
}

/// Finds the host's Python and its headers, or says what to install.
pub fn detect() -> Result<HostPython, String> {
    const INSTALL: &str = "apt-get install python3 python3-dev python3-pip";
    if !Path::new(PYTHON).is_file() {
        return Err(format!("{PYTHON} is missing: {INSTALL}"));
    }
    let output = Command::new(PYTHON)
        .args([
            "-I",
            "-c",
            "import sys, sysconfig; print('%d.%d' % sys.version_info[:2]); print(sysconfig.get_paths()['include'])",
        ])
        .output()
        .map_err(|e| format!("cannot run {PYTHON}: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let (Some(version), Some(include)) = (lines.next(), lines.next()) else {
        return Err(format!("{PYTHON} did not say its version"));
    };
    let include = PathBuf::from(include);
    if !include.join("Python.h").is_file() {
        return Err(format!(
            "Python {version}'s headers are missing ({} has no Python.h): {INSTALL}",
            include.display()
        ));
    }
    Ok(HostPython {
        version: version.to_string(),
        include,
    })
}

/// The requirements of a Doee's `requirements.txt` (none without one):
/// package names with their versions, extras and markers. Options, paths,
/// URLs and direct references are refused, naming the line: a Doee's
/// packages come from the configured index, as wheels.
pub fn requirements(root: &Path) -> Result<Vec<String>, String> {
    let Ok(text) = std::fs::read_to_string(root.join("requirements.txt")) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let refuse = |why: &str| {
            Err(format!(
                "requirements.txt line {}: `{line}` {why}",
                number + 1
            ))
        };
        if line.starts_with('-') {
            return refuse(
                "is an option; list packages by name (the index is the platform's: resadmin.pip_index_url)",
            );
        }
        if !is_index_requirement(line) {
            return refuse(
                "is not a package of the index: paths, files, URLs and direct references are refused",
            );
        }
        found.push(line.to_string());
    }
    Ok(found)
}

/// Whether `line` is a requirement pip can only look up in the index: a
/// name, extras, version specifiers and an environment marker, and nothing
/// pip would take for a local file or directory (which it would build,
/// running its `setup.py`).
fn is_index_requirement(line: &str) -> bool {
    let (requirement, marker) = line.split_once(';').unwrap_or((line, ""));
    let name_end = requirement
        .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
        .unwrap_or(requirement.len());
    let (name, rest) = requirement.split_at(name_end);
    let rest = rest.trim_start();
    let (extras, specifiers) = match rest.strip_prefix('[') {
        Some(inner) => match inner.split_once(']') {
            Some((extras, after)) => (extras, after),
            None => return false,
        },
        None => ("", rest),
    };
    const ARCHIVES: &[&str] = &[
        ".zip", ".whl", ".tar", ".gz", ".tgz", ".bz2", ".tbz", ".xz", ".txz", ".tlz", ".lz",
        ".lzma",
    ];
    let lower = name.to_ascii_lowercase();
    name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !ARCHIVES.iter().any(|suffix| lower.ends_with(suffix))
        && extras
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-, ".contains(c))
        && specifiers
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+*!=<>~, ".contains(c))
        && !marker.contains(['/', '\\', '@'])
}

/// Unpacks the fetched wheels into `site-packages`, checks the upload's
/// Python files compile (a syntax error names the file and line) and packs
/// both into `payload.zip`, all under `.isms-build/`. Runs in the build's
/// sandbox, offline; it runs none of the upload's code.
pub const PACK: &str = r#"
import pathlib, sys, zipfile
out = pathlib.Path('.isms-build')
site = out / 'site-packages'
wheels = sorted((out / 'wheels').glob('*.whl'))
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
files, failed = [], False
for path in sorted(pathlib.Path('.').rglob('*')):
    if path.parts[0] == '.isms-build' or '__pycache__' in path.parts or not path.is_file():
        continue
    files.append(path)
    if path.suffix == '.py':
        try:
            compile(path.read_bytes(), str(path), 'exec', dont_inherit=True)
        except SyntaxError as e:
            print(f'{e.filename}, line {e.lineno}: {e.msg}', file=sys.stderr)
            failed = True
if failed:
    sys.exit(1)
packages = [p for p in sorted(site.rglob('*')) if p.is_file() and '__pycache__' not in p.parts] if site.is_dir() else []
with zipfile.ZipFile(out / 'payload.zip', 'w', zipfile.ZIP_DEFLATED) as z:
    for path in files:
        z.write(path, 'doee/' + path.as_posix())
    for path in packages:
        z.write(path, 'site-packages/' + path.relative_to(site).as_posix())
print(f'packed {len(files)} files of the Doee and {len(packages)} of {len(wheels)} packages', file=sys.stderr)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<String>, String> {
        let dir =
            std::env::temp_dir().join(format!("isms-req-{}-{}", std::process::id(), text.len()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("requirements.txt"), text).unwrap();
        let parsed = requirements(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        parsed
    }

    #[test]
    fn requirements_are_packages_of_the_index() {
        assert_eq!(
            parse(
                "# sensors\npython-dateutil==2.9.0  # dates\n\nujson>=5 ; python_version >= '3.8'\nrequests[socks]\n"
            ),
            Ok(vec![
                "python-dateutil==2.9.0".to_string(),
                "ujson>=5 ; python_version >= '3.8'".to_string(),
                "requests[socks]".to_string()
            ])
        );
        for (text, says) in [
            ("-e .\n", "line 1: `-e .` is an option"),
            ("ok\n--index-url https://evil.example/simple\n", "line 2"),
            (".\n", "not a package of the index"),
            ("./local\n", "not a package of the index"),
            ("pkg @ https://example.com/pkg.whl\n", "direct references"),
            ("https://example.com/x.tar.gz\n", "URLs"),
            ("evil.zip\n", "files"),
            ("pkg-1.0.tar.gz\n", "files"),
            ("sub/dir\n", "not a package of the index"),
            ("C:evil\n", "not a package of the index"),
            ("pkg[extra\n", "not a package of the index"),
            ("pkg ; sys_platform == '/tmp'\n", "not a package"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
        assert_eq!(requirements(Path::new("/nonexistent")), Ok(Vec::new()));
    }
}
