//! `isms new <name> --lang rust|c|cpp|python`: scaffolds a working Doee with a test.

use anyhow::{Context as _, bail};
use isms_ipc::DoeeName;
use std::path::{Path, PathBuf};

/// `isms new`'s arguments.
#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The Doee's name: a-z, 0-9 and -, up to 63 characters.
    pub name: String,
    /// Its language.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
    /// Where to create it [default: ./<name>]
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The languages a Doee can be scaffolded in.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// A crate against the `doee-sdk` crate; tested with `cargo test`.
    Rust,
    /// C against `<isms/doee.h>`; tested with `make test`.
    C,
    /// C++ against `<isms/doee.hpp>`; tested with `make test`.
    Cpp,
    /// Python 3: a `handler.py`; tested with `python3 -m unittest`.
    Python,
}

impl Lang {
    fn templates(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::Rust => RUST,
            Lang::C => C,
            Lang::Cpp => CPP,
            Lang::Python => PYTHON,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::C => "C",
            Lang::Cpp => "C++",
            Lang::Python => "Python",
        }
    }
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

const C: &[(&str, &str)] = &[
    ("doee.toml", include_str!("../../templates/c/doee.toml")),
    ("src/%NAME%.c", include_str!("../../templates/c/doee.c")),
    ("tests/test.c", include_str!("../../templates/c/test.c")),
    ("Makefile", include_str!("../../templates/c/Makefile")),
    ("README.md", include_str!("../../templates/c/README.md")),
    (".gitignore", include_str!("../../templates/c/gitignore")),
];

const CPP: &[(&str, &str)] = &[
    ("doee.toml", include_str!("../../templates/cpp/doee.toml")),
    (
        "src/%NAME%.cpp",
        include_str!("../../templates/cpp/doee.cpp"),
    ),
    (
        "tests/test.cpp",
        include_str!("../../templates/cpp/test.cpp"),
    ),
    ("Makefile", include_str!("../../templates/cpp/Makefile")),
    ("README.md", include_str!("../../templates/cpp/README.md")),
    (".gitignore", include_str!("../../templates/cpp/gitignore")),
];

const PYTHON: &[(&str, &str)] = &[
    (
        "doee.toml",
        include_str!("../../templates/python/doee.toml"),
    ),
    (
        "handler.py",
        include_str!("../../templates/python/handler.py"),
    ),
    (
        "test_handler.py",
        include_str!("../../templates/python/test_handler.py"),
    ),
    (
        "isms_testing.py",
        include_str!("../../../doee-sdk/python/isms_testing.py"),
    ),
    (
        "requirements.txt",
        include_str!("../../templates/python/requirements.txt"),
    ),
    (
        "README.md",
        include_str!("../../templates/python/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/python/gitignore"),
    ),
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
    let sdk = install_sdk()?;
    let include = isms_resadmin::sdk::include_dir(&sdk);
    for (relative, template) in args.lang.templates() {
        let path = dir.join(relative.replace("%NAME%", name.as_str()));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = template
            .replace("%NAME%", name.as_str())
            .replace("%INCLUDE%", &include.display().to_string());
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let test = match args.lang {
        Lang::Rust => {
            write_sdk_patch(&dir, &sdk)?;
            "cargo test"
        }
        Lang::Python => "python3 -m unittest",
        Lang::C | Lang::Cpp => "make test",
    };
    println!(
        "Created the {} Doee {name} in {}.",
        args.lang.name(),
        dir.display()
    );
    println!("  test it:    (cd {} && {test})", dir.display());
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
