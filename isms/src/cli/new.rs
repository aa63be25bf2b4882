//! `isms new <name> --lang rust`: scaffolds a working Doee with a test.

use anyhow::{Context as _, bail};
use isms_ipc::DoeeName;
use std::path::{Path, PathBuf};

/// `isms new`'s arguments.
#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The Doee's name: a-z, 0-9 and -, up to 63 characters.
    pub name: String,
    /// Its language.
    #[arg(long, default_value = "rust", value_parser = ["rust"])]
    pub lang: String,
    /// Where to create it [default: ./<name>]
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const RUST: &[(&str, &str)] = &[
    ("doee.toml", include_str!("../../templates/rust/doee.toml")),
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml"),
    ),
    ("src/lib.rs", include_str!("../../templates/rust/lib.rs")),
    (".gitignore", include_str!("../../templates/rust/gitignore")),
];

/// Creates the Doee directory.
pub fn run(args: NewArgs) -> anyhow::Result<()> {
    let name = DoeeName::new(&args.name)?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(name.as_str()));
    if dir.exists() {
        bail!(
            "{} already exists; choose another name or --dir",
            dir.display()
        );
    }
    for (relative, template) in RUST {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, template.replace("%NAME%", name.as_str()))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let sdk = install_sdk()?;
    write_sdk_patch(&dir, &sdk)?;
    println!("Created the Rust Doee {name} in {}.", dir.display());
    println!("  test it:    (cd {} && cargo test)", dir.display());
    println!(
        "  deploy it:  isms deploy {} --project <project> --wait",
        dir.display()
    );
    Ok(())
}

/// Installs the SDK bundled with this binary under the user's data
/// directory, so a scaffolded Doee's `cargo test` works offline.
fn install_sdk() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".local/share")
        }
    };
    let dir = base
        .join("isms")
        .join("sdk")
        .join(env!("CARGO_PKG_VERSION"));
    isms_resadmin::sdk::install(&dir)
        .with_context(|| format!("cannot install the Doee SDK in {}", dir.display()))
}

/// Points `doee-sdk` at the installed SDK for local builds. The platform
/// ignores this file: it builds against its own copy.
fn write_sdk_patch(dir: &Path, sdk: &Path) -> anyhow::Result<()> {
    let config = dir.join(".cargo").join("config.toml");
    std::fs::create_dir_all(dir.join(".cargo"))?;
    let path = sdk
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    std::fs::write(
        &config,
        format!(
            "# Lets `cargo test` find the Doee SDK that ships with isms.\n\
             # The platform ignores this file when it builds the Doee.\n\
             [patch.crates-io]\ndoee-sdk = {{ path = \"{path}\" }}\n"
        ),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    Ok(())
}
