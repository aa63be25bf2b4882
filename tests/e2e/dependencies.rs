//! Doees that need dependencies: the fetch phase (with network, running
//! none of the upload) and the offline build against the project's cache.
//! Fetching reaches the real crates.io.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_test_support::{Options, Platform};

fn platform() -> Platform {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    p.login_admin();
    p.run(&["project", "create", "deps"]);
    p
}

/// A scaffolded Rust Doee named `name` with `dependencies` added to its
/// Cargo.toml and `lib` as its source.
fn rust_doee(p: &Platform, name: &str, dependencies: &str, lib: &str) -> std::path::PathBuf {
    p.run(&["new", name, "--lang", "rust"]);
    let dir = p.root.join(name);
    let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let cargo = cargo.replace(
        "doee-sdk = \"0.1\"\n",
        &format!("doee-sdk = \"0.1\"\n{dependencies}\n"),
    );
    std::fs::write(dir.join("Cargo.toml"), cargo).unwrap();
    if !lib.is_empty() {
        std::fs::write(dir.join("src/lib.rs"), lib).unwrap();
    }
    dir
}

const JSON_DOEE: &str = r#"
use doee_sdk::{Context, Doee, Error, export_doee};

#[derive(Default)]
pub struct Reading;

impl Doee for Reading {
    fn execute(&mut self, _ctx: &mut Context, input: &[u8]) -> Result<Vec<u8>, Error> {
        let value: serde_json::Value = serde_json::from_slice(input)?;
        let celsius = value["celsius"].as_f64().ok_or_else(|| Error::new("no celsius"))?;
        Ok(serde_json::json!({ "fahrenheit": celsius * 9.0 / 5.0 + 32.0 }).to_string().into_bytes())
    }
}

export_doee!(Reading);
"#;

/// A Doee depending on serde_json (and so on serde, whose build script
/// runs in the build's sandbox) is fetched, built offline and serves; a
/// second version builds from the project's cache.
#[test]
fn a_rust_doee_uses_crates_from_the_registry() {
    let p = platform();
    let dir = rust_doee(&p, "reading", "serde_json = \"1\"", JSON_DOEE);
    let deployed = p.deploy(&dir, "deps");
    assert!(
        deployed.contains("fetching dependencies from crates.io"),
        "{deployed}"
    );
    assert!(deployed.contains("Downloaded serde_json"), "{deployed}");
    assert!(
        deployed.contains("; the project's cache holds"),
        "{deployed}"
    );
    let r = p.trigger("/deps/reading", br#"{"celsius": 100}"#);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, r#"{"fahrenheit":212.0}"#)
    );

    // Again: nothing to download.
    let deployed = p.deploy(&dir, "deps");
    assert!(!deployed.contains("Downloaded serde_json"), "{deployed}");
}

/// A crate that does not exist fails the build naming it; git and paths
/// outside the upload are refused before anything runs.
#[test]
fn dependencies_that_cannot_be_had_are_refused_by_name() {
    let p = platform();
    let dir = rust_doee(&p, "missing", "isms-no-such-crate-7f3a = \"1\"", "");
    let said = p.deploy_refused(&dir, "deps");
    assert!(
        said.contains("cannot fetch the dependencies") && said.contains("isms-no-such-crate-7f3a"),
        "{said}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    for (name, dependency, says) in [
        (
            "from-git",
            "tool = { git = \"https://example.com/tool.git\" }",
            "tool comes from git",
        ),
        (
            "outside",
            "other = { path = \"../../other-project\" }",
            "other has the path `../../other-project`, outside the upload",
        ),
    ] {
        let dir = rust_doee(&p, name, dependency, "");
        let said = p.deploy_refused(&dir, "deps");
        assert!(said.contains(says), "{said}");
        assert!(
            !said.contains("fetching dependencies"),
            "refused before fetching: {said}"
        );
    }
}

/// A project's dependencies past its quota are refused naming it.
#[test]
fn dependencies_past_the_bound_are_refused_naming_it() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR"))
        .env("ISMS_RESADMIN_QUOTA_MAX_DEPENDENCIES_MB", "1")
        .start();
    p.login_admin();
    p.run(&["project", "create", "deps"]);
    let dir = rust_doee(&p, "reading", "serde_json = \"1\"", JSON_DOEE);
    let said = p.deploy_refused(&dir, "deps");
    assert!(
        said.contains("past project `deps`'s quota max_dependencies_bytes of 1048576"),
        "{said}"
    );
}
