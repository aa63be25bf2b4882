//! The Doee SDK as shipped inside the platform, so Doees build offline
//! against exactly the ABI this platform's Executor speaks: the Rust crate
//! and the C and C++ headers.

use std::io;
use std::path::{Path, PathBuf};

/// The SDK's files, relative to its crate root.
pub const FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../doee-sdk/Cargo.toml")),
    ("src/lib.rs", include_str!("../../doee-sdk/src/lib.rs")),
    ("src/abi.rs", include_str!("../../doee-sdk/src/abi.rs")),
    (
        "src/testing.rs",
        include_str!("../../doee-sdk/src/testing.rs"),
    ),
    (
        "include/isms/doee.h",
        include_str!("../../doee-sdk/include/isms/doee.h"),
    ),
    (
        "include/isms/doee.hpp",
        include_str!("../../doee-sdk/include/isms/doee.hpp"),
    ),
    (
        "include/isms/testing.h",
        include_str!("../../doee-sdk/include/isms/testing.h"),
    ),
    (
        "python/isms_python.c",
        include_str!("../../doee-sdk/python/isms_python.c"),
    ),
    (
        "python/isms_testing.py",
        include_str!("../../doee-sdk/python/isms_testing.py"),
    ),
];

/// The runtime of Python Doees, as C source, in an SDK that [`install`] wrote.
pub fn python_runtime(sdk: &Path) -> PathBuf {
    sdk.join("python/isms_python.c")
}

/// The C and C++ headers' directory (`-I`) of an SDK that [`install`] wrote.
pub fn include_dir(sdk: &Path) -> PathBuf {
    sdk.join("include")
}

/// Writes the SDK crate to `dir/doee-sdk` (rewriting files that differ) and
/// returns the crate's directory. Readable by all, whatever the umask: the
/// builds' uid reads it.
pub fn install(dir: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let root = dir.join("doee-sdk");
    for (relative, content) in FILES {
        let path = root.join(relative);
        if !std::fs::read_to_string(&path).is_ok_and(|existing| existing == *content) {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, content)?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        for parent in path.ancestors().skip(1) {
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))?;
            if parent == root {
                break;
            }
        }
    }
    Ok(root)
}
