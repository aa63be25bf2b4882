//! The C and C++ headers: they compile warning-free, a Doee written against
//! them exports exactly the ABI's four symbols, and the fake host of
//! `isms/testing.h` runs it.
//!
//! Needs the system's `cc` and `c++`, which the platform needs anyway to
//! build C and C++ Doees.

use std::path::{Path, PathBuf};
use std::process::Command;

fn include() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include")
}

fn c_api() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/doees/c-api/src")
}

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn out(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("doee-sdk-c");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs a command, failing the test with its output unless it succeeds.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e} (install gcc and g++)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

const C_FLAGS: &[&str] = &["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"];
const CPP_FLAGS: &[&str] = &["-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror"];

/// The dynamic symbols a shared object defines.
fn exported(so: &Path) -> Vec<String> {
    let listing = run(Command::new("nm").args(["-D", "--defined-only"]).arg(so));
    listing
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .map(str::to_string)
        .collect()
}

const ABI_SYMBOLS: [&str; 4] = [
    "isms_doee_abi_version",
    "isms_doee_execute",
    "isms_doee_initialize",
    "isms_doee_terminate",
];

/// The flags Resadmin builds a shared object with.
const SHARED: &[&str] = &[
    "-O2",
    "-shared",
    "-fPIC",
    "-fvisibility=hidden",
    "-Wl,-z,defs",
];

/// Compiles `sources` (then `extra` arguments, for linking) into `output`,
/// with the SDK's headers on the include path.
fn compile(
    compiler: &str,
    flags: &[&[&str]],
    output: &Path,
    sources: &[PathBuf],
    extra: &[String],
) {
    let mut command = Command::new(compiler);
    for flags in flags {
        command.args(*flags);
    }
    run(command
        .arg("-I")
        .arg(include())
        .arg("-o")
        .arg(output)
        .args(sources)
        .args(extra));
}

/// Runs a test program built against `testing.h` and checks its report.
fn passes(binary: &Path) {
    let report = run(&mut Command::new(binary));
    assert!(report.contains(" passed, 0 failed"), "{report}");
}

#[test]
fn a_c_doee_passes_its_tests_against_the_fake_host() {
    let binary = out("c_api_test");
    let sources = [
        c_api().join("api.c"),
        c_api().join("report.c"),
        tests_dir().join("c/api_test.c"),
    ];
    compile("cc", &[C_FLAGS], &binary, &sources, &[]);
    passes(&binary);
}

#[test]
fn a_cpp_doee_passes_its_tests_against_the_fake_host() {
    let binary = out("cpp_api_test");
    let sources = [
        tests_dir().join("cpp/api.cpp"),
        tests_dir().join("cpp/api_test.cpp"),
    ];
    compile("c++", &[CPP_FLAGS], &binary, &sources, &[]);
    passes(&binary);
}

/// Built as the platform builds it, a C Doee exports the ABI and nothing
/// else, and a program linked against the shared object runs it.
#[test]
fn a_c_shared_object_exports_exactly_the_abi() {
    let so = out("libcapi.so");
    let sources = [c_api().join("api.c"), c_api().join("report.c")];
    compile("cc", &[C_FLAGS, SHARED], &so, &sources, &[]);
    let mut symbols = exported(&so);
    symbols.retain(|s| s.starts_with("isms") || s == "report");
    symbols.sort();
    assert_eq!(symbols, ABI_SYMBOLS);

    let binary = out("c_api_test_linked");
    let dir = so.parent().unwrap();
    let link = [
        "-L".to_string(),
        dir.display().to_string(),
        "-lcapi".to_string(),
        format!("-Wl,-rpath,{}", dir.display()),
    ];
    compile(
        "cc",
        &[C_FLAGS],
        &binary,
        &[tests_dir().join("c/api_test.c")],
        &link,
    );
    passes(&binary);
}

#[test]
fn a_cpp_shared_object_exports_the_abi_unmangled() {
    let so = out("libcppapi.so");
    let sources = [tests_dir().join("cpp/api.cpp")];
    compile("c++", &[CPP_FLAGS, SHARED], &so, &sources, &[]);
    let mut symbols = exported(&so);
    // Template instances of the standard library may be weak exports.
    symbols.retain(|s| s.starts_with("isms"));
    symbols.sort();
    assert_eq!(symbols, ABI_SYMBOLS);
}

/// The ABI version of the C header is the Rust SDK's.
#[test]
fn the_c_header_speaks_the_rust_abi_version() {
    let header = std::fs::read_to_string(include().join("isms/doee.h")).unwrap();
    let expected = format!("#define ISMS_ABI_VERSION {}u", doee_sdk::abi::ABI_VERSION);
    assert!(header.contains(&expected), "doee.h lacks {expected}");
}
