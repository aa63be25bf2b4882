//! The upload unpacker against hostile and damaged archives: hand-made
//! entries the `tar` crate's builder would refuse to write, property tests
//! over generated trees and mutated archives, and every bound exactly at
//! its limit.
//!
//! Why one file of this size: one list of hostile archives, each a short
//! hand-made case, plus the property tests over the same unpacker.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use flate2::Compression;
use flate2::write::GzEncoder;
use isms_resadmin::archive::{ArchiveError, Limits, pack, unpack};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use tar::{EntryType, Header};

// ---- helpers -------------------------------------------------------------

/// A fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "isms-archive-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // In memory where possible: the properties create and remove
        // thousands of files, and on a disk each unlink can cost a
        // millisecond.
        for base in [Path::new("/dev/shm").to_path_buf(), std::env::temp_dir()] {
            let dir = base.join(&name);
            if std::fs::create_dir(&dir).is_ok() {
                return TempDir(dir);
            }
        }
        panic!("cannot create a temporary directory {name}");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a case unpacks: eight levels below a fresh parent, so an entry
/// that climbs out with up to eight `..` still lands inside the parent,
/// where [`only_target_below`] sees it.
struct Sandbox {
    parent: TempDir,
    target: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let parent = TempDir::new();
        let target = parent.0.join("1/2/3/4/5/6/7/8/target");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        Sandbox { parent, target }
    }

    fn unpack(&self, archive: &[u8], limits: &Limits) -> Result<PathBuf, ArchiveError> {
        let result = unpack(archive, &self.target, limits);
        self.only_target_below(result.is_ok());
        result
    }

    /// Everything under the parent is the chain of directories down to the
    /// target, and the target exists exactly when the unpack succeeded.
    fn only_target_below(&self, unpacked: bool) {
        for path in walk(&self.parent.0).keys() {
            let full = self.parent.0.join(path);
            assert!(
                self.target.starts_with(&full) || full.starts_with(&self.target),
                "{} was written outside the target",
                full.display()
            );
        }
        assert_eq!(
            self.target.exists(),
            unpacked,
            "the target must exist after a success and only then"
        );
    }
}

/// A tree as relative path → `None` for a directory, `Some(bytes)` for a
/// file (never following symbolic links, which would show as an error).
fn walk(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            if kind.is_dir() {
                out.insert(relative, None);
                go(root, &path, out);
            } else {
                assert!(kind.is_file(), "{} is not a regular file", path.display());
                out.insert(relative, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, root, &mut out);
    out
}

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(tar).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(archive: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(archive)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A tar written header by header, with whatever path bytes and entry
/// types a test wants (the `tar` crate's builder refuses `..` and `/`).
#[derive(Default)]
struct RawTar(Vec<u8>);

impl RawTar {
    fn entry(mut self, path: &[u8], kind: EntryType, data: &[u8]) -> RawTar {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..path.len()].copy_from_slice(path);
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        header.set_cksum();
        self.0.extend_from_slice(header.as_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
        self
    }

    fn file(self, path: &str, data: &[u8]) -> RawTar {
        self.entry(path.as_bytes(), EntryType::Regular, data)
    }

    fn dir(self, path: &str) -> RawTar {
        self.entry(path.as_bytes(), EntryType::Directory, b"")
    }

    fn link(mut self, path: &str, kind: EntryType, to: &str) -> RawTar {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(kind);
        header.set_size(0);
        if !to.is_empty() {
            header.set_link_name(to).unwrap();
        }
        header.set_cksum();
        self.0.extend_from_slice(header.as_bytes());
        self
    }

    /// A PAX extended header giving the next entry's path.
    fn pax_path(self, path: &[u8]) -> RawTar {
        let mut record = Vec::new();
        let body = [b"path=".as_slice(), path, b"\n"].concat();
        // The length counts its own digits and the space.
        let mut len = body.len() + 2;
        while len.to_string().len() + 1 + body.len() != len {
            len += 1;
        }
        record.extend_from_slice(format!("{len} ").as_bytes());
        record.extend_from_slice(&body);
        self.entry(b"PaxHeaders/x", EntryType::XHeader, &record)
    }

    /// A GNU long-name entry giving the next entry's path.
    fn long_name(self, path: &[u8]) -> RawTar {
        self.entry(
            b"././@LongLink",
            EntryType::GNULongName,
            &[path, b"\0"].concat(),
        )
    }

    fn manifest(self) -> RawTar {
        self.file("doee.toml", b"name = \"x\"\nlanguage = \"rust\"\n")
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0; 1024]);
        self.0
    }

    fn gz(self) -> Vec<u8> {
        gzip(&self.finish())
    }
}

fn refused(archive: &[u8]) -> String {
    let sandbox = Sandbox::new();
    match sandbox.unpack(archive, &Limits::default()) {
        Ok(root) => panic!("unpacked into {}", root.display()),
        Err(err @ (ArchiveError::Refused(_) | ArchiveError::Malformed(_))) => err.to_string(),
        Err(other) => panic!("the archive's fault was reported as {other:?}"),
    }
}

// ---- hostile entries -----------------------------------------------------

#[test]
fn paths_that_leave_the_directory_are_refused() {
    for path in [
        "../x",
        "../../../../../../../../../../x",
        "a/../../x",
        "./../x",
        "/tmp/isms-archive-escape",
        "//x",
    ] {
        let archive = RawTar::default().manifest().file(path, b"pwned").gz();
        let why = refused(&archive);
        assert!(
            why.contains("leaves the Doee directory") || why.contains("absolute path"),
            "{path}: {why}"
        );
        assert!(why.contains(path), "the error names the entry: {why}");
    }
    assert!(!Path::new("/tmp/isms-archive-escape").exists());
}

#[test]
fn links_and_special_files_are_refused() {
    let cases = [
        (EntryType::Symlink, "/etc/passwd", "a symbolic link"),
        (EntryType::Symlink, "../../..", "a symbolic link"),
        (EntryType::Link, "doee.toml", "a hard link"),
        (EntryType::Link, "/etc/shadow", "a hard link"),
        (EntryType::Char, "", "a device file"),
        (EntryType::Block, "", "a device file"),
        (EntryType::Fifo, "", "a FIFO"),
        (EntryType::new(b'Z'), "", "a special entry"),
    ];
    for (kind, to, what) in cases {
        let archive = RawTar::default().manifest().link("evil", kind, to).gz();
        let why = refused(&archive);
        assert!(why.contains(&format!("\"evil\" is {what}")), "{why}");
    }
    // A link first, then a file through it: the link is refused before
    // anything is written.
    let archive = RawTar::default()
        .link("d", EntryType::Symlink, "/tmp")
        .file("d/isms-archive-through-link", b"x")
        .manifest()
        .gz();
    assert!(refused(&archive).contains("symbolic link"));
    assert!(!Path::new("/tmp/isms-archive-through-link").exists());
}

/// Found by these tests: each of these made the unpacker fail with an I/O
/// error (a 500 from the API) instead of refusing the archive.
#[test]
fn names_the_file_system_cannot_hold_are_refused() {
    let nul = RawTar::default()
        .manifest()
        .pax_path(b"a\0b")
        .file("placeholder", b"")
        .gz();
    assert!(refused(&nul).contains("NUL"));

    let long = "n".repeat(256);
    let archive = RawTar::default()
        .manifest()
        .long_name(long.as_bytes())
        .file("placeholder", b"")
        .gz();
    assert!(refused(&archive).contains("longer than 255 bytes"));
    // 255 is fine.
    let archive = RawTar::default()
        .manifest()
        .long_name("n".repeat(255).as_bytes())
        .file("placeholder", b"")
        .gz();
    Sandbox::new().unpack(&archive, &Limits::default()).unwrap();

    let deep = vec!["d"; 17].join("/");
    let archive = RawTar::default().manifest().file(&deep, b"").gz();
    assert!(refused(&archive).contains("nested too deep"));
}

#[test]
fn entries_that_clash_are_refused() {
    let cases = [
        (
            RawTar::default().file("a", b"1").file("a", b"2"),
            "appears twice",
        ),
        (
            RawTar::default().file("a", b"1").file("a/b", b"2"),
            "also holds as a file",
        ),
        (
            RawTar::default().file("a", b"1").dir("a"),
            "both a file and a directory",
        ),
        (
            RawTar::default().dir("a").file("a", b"1"),
            "both a file and a directory",
        ),
        (
            RawTar::default().file("a/b", b"1").file("a", b"1"),
            "both a file and a directory",
        ),
        (
            RawTar::default().file("a/b/c", b"1").file("a/b", b""),
            "both a file and a directory",
        ),
        (
            RawTar::default()
                .file("doee.toml", b"")
                .file("./doee.toml", b""),
            "appears twice",
        ),
    ];
    for (tar, expected) in cases {
        let why = refused(&tar.manifest().gz());
        assert!(why.contains(expected), "{why}");
    }
    // A directory listed twice, or after files inside it, is fine.
    let archive = RawTar::default()
        .file("a/b", b"1")
        .dir("a")
        .dir("a/")
        .dir("./")
        .manifest()
        .gz();
    Sandbox::new().unpack(&archive, &Limits::default()).unwrap();
}

/// Found by these tests: an archive without `doee.toml` was unpacked and
/// then refused, and its files stayed behind in the upload area.
#[test]
fn where_the_manifest_must_be() {
    let sandbox = Sandbox::new();
    let wrapped = RawTar::default()
        .dir("hello")
        .file("hello/doee.toml", b"x")
        .gz();
    let root = sandbox.unpack(&wrapped, &Limits::default()).unwrap();
    assert_eq!(root, sandbox.target.join("hello"));

    for (tar, case) in [
        (RawTar::default().file("src/lib.rs", b""), "none"),
        (
            RawTar::default().dir("doee.toml").file("doee.toml/x", b""),
            "a directory",
        ),
        (
            RawTar::default()
                .file("a/doee.toml", b"")
                .file("b/doee.toml", b""),
            "two candidates",
        ),
        (
            RawTar::default()
                .file("a/doee.toml", b"")
                .file("README", b""),
            "beside a file",
        ),
        (RawTar::default().file("a/b/doee.toml", b""), "too deep"),
        (RawTar::default(), "empty"),
    ] {
        let why = refused(&tar.gz());
        assert!(
            why.contains("no doee.toml at its top level"),
            "{case}: {why}"
        );
    }
}

#[test]
fn old_style_and_extended_entries_are_understood() {
    let sandbox = Sandbox::new();
    let archive = RawTar::default()
        // `git archive` starts with a PAX global header.
        .entry(
            b"pax_global_header",
            EntryType::XGlobalHeader,
            b"52 comment=0123456789012345678901234567890123456789\n",
        )
        // A V7 tar marks a directory by its trailing slash.
        .entry(b"src/", EntryType::Regular, b"")
        .file("src/lib.rs", b"fn main() {}")
        .pax_path(b"src/named-by-pax.rs")
        .file("ignored", b"p")
        .long_name(format!("src/{}", "l".repeat(200)).as_bytes())
        .file("ignored-too", b"l")
        .manifest()
        .gz();
    sandbox.unpack(&archive, &Limits::default()).unwrap();
    let tree = walk(&sandbox.target);
    assert_eq!(tree[Path::new("src")], None);
    assert_eq!(
        tree[Path::new("src/named-by-pax.rs")].as_deref(),
        Some(&b"p"[..])
    );
    assert_eq!(
        tree[&Path::new("src").join("l".repeat(200))].as_deref(),
        Some(&b"l"[..])
    );
    assert_eq!(tree.len(), 5, "{tree:?}");
}

/// Found by these tests: the gzip trailer was never read, so a damaged
/// upload was unpacked as if whole.
#[test]
fn a_damaged_gzip_is_refused() {
    let mut archive = RawTar::default().manifest().gz();
    let n = archive.len();
    archive[n - 8] ^= 1; // the CRC-32
    assert!(refused(&archive).contains("not a .tar.gz archive"));

    let archive = RawTar::default().manifest().gz();
    let truncated = &archive[..archive.len() - 4];
    assert!(refused(truncated).contains("not a .tar.gz archive"));

    for body in [
        &b""[..],
        b"hello",
        b"PK\x03\x04 a zip",
        &RawTar::default().manifest().finish(),
    ] {
        let why = refused(body);
        assert!(why.contains("not gzip-compressed"), "{why}");
    }
}

#[test]
fn the_executable_bit_survives_and_nothing_else() {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, mode) in [("run.sh", 0o4777), ("data", 0o600), ("doee.toml", 0o644)] {
        let mut header = Header::new_gnu();
        header.set_size(1);
        header.set_mode(mode);
        tar.append_data(&mut header, path, &b"x"[..]).unwrap();
    }
    let archive = gzip(&tar.into_inner().unwrap());
    let sandbox = Sandbox::new();
    sandbox.unpack(&archive, &Limits::default()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(sandbox.target.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("run.sh"), 0o755);
    assert_eq!(mode("data") & 0o111, 0);
}

// ---- the bounds, exactly -------------------------------------------------

fn too_large(result: Result<PathBuf, ArchiveError>) -> String {
    match result {
        Err(ArchiveError::TooLarge(why)) => why,
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

/// No bound but the one under test.
fn open_limits() -> Limits {
    Limits {
        max_compressed: u64::MAX,
        max_unpacked: u64::MAX,
        max_entries: u32::MAX,
        max_ratio: u64::MAX,
        ratio_exempt: 0,
    }
}

/// An archive's compressed size, decompressed size and entry count, as the
/// unpacker counts them.
fn measure(archive: &[u8]) -> (u64, u64, u32) {
    let tar = gunzip(archive);
    let entries = tar::Archive::new(&tar[..]).entries().unwrap().count();
    (archive.len() as u64, tar.len() as u64, entries as u32)
}

/// Each bound passes at the archive's own size and refuses one below it.
fn check_bounds_exactly(archive: &[u8]) {
    let (compressed, unpacked, entries) = measure(archive);
    let sandbox = Sandbox::new();
    let at = |limits: Limits| {
        let result = sandbox.unpack(archive, &limits);
        if result.is_ok() {
            std::fs::remove_dir_all(&sandbox.target).unwrap();
        }
        result
    };

    at(Limits {
        max_compressed: compressed,
        ..open_limits()
    })
    .unwrap();
    let why = too_large(at(Limits {
        max_compressed: compressed - 1,
        ..open_limits()
    }));
    assert!(
        why.contains(&format!("the limit is {} bytes", compressed - 1)),
        "{why}"
    );

    at(Limits {
        max_entries: entries,
        ..open_limits()
    })
    .unwrap();
    let why = too_large(at(Limits {
        max_entries: entries - 1,
        ..open_limits()
    }));
    assert!(
        why.contains(&format!("more than {} entries", entries - 1)),
        "{why}"
    );

    at(Limits {
        max_unpacked: unpacked,
        ..open_limits()
    })
    .unwrap();
    let why = too_large(at(Limits {
        max_unpacked: unpacked - 1,
        ..open_limits()
    }));
    assert!(why.contains("unpacked size limit"), "{why}");

    // The ratio: whole multiples, then the exemption byte by byte.
    let ratio = unpacked.div_ceil(compressed);
    at(Limits {
        max_ratio: ratio,
        ..open_limits()
    })
    .unwrap();
    if ratio > 1 {
        let why = too_large(at(Limits {
            max_ratio: ratio - 1,
            ..open_limits()
        }));
        assert!(
            why.contains(&format!("more than {} times its size", ratio - 1)),
            "{why}"
        );
    }
    at(Limits {
        max_ratio: 0,
        ratio_exempt: unpacked,
        ..open_limits()
    })
    .unwrap();
    let why = too_large(at(Limits {
        max_ratio: 0,
        ratio_exempt: unpacked - 1,
        ..open_limits()
    }));
    assert!(why.contains("times its size"), "{why}");
}

#[test]
fn the_ratio_is_exact_to_the_byte() {
    // A gzip comment pads the compressed size until it is exactly the
    // decompressed size divided by the ratio; one byte less is over.
    let tar = RawTar::default()
        .manifest()
        .file("zeros", &vec![0; 64 << 10])
        .finish();
    let unpacked = tar.len();
    let with_comment = |len: usize| {
        let mut encoder = flate2::GzBuilder::new()
            .comment(vec![b'c'; len])
            .write(Vec::new(), Compression::best());
        encoder.write_all(&tar).unwrap();
        encoder.finish().unwrap()
    };
    let bare = with_comment(1).len();
    let ratio = (1..=512)
        .rev()
        .find(|r| unpacked % r == 0 && unpacked / r > bare)
        .unwrap();
    let exact = with_comment(1 + unpacked / ratio - bare);
    assert_eq!(exact.len() * ratio, unpacked);
    let limits = Limits {
        max_ratio: ratio as u64,
        ..open_limits()
    };
    Sandbox::new().unpack(&exact, &limits).unwrap();
    let short = with_comment(unpacked / ratio - bare);
    let why = too_large(Sandbox::new().unpack(&short, &limits));
    assert!(why.contains("gzip bomb"), "{why}");
}

#[test]
fn a_gzip_bomb_stops_at_the_limit() {
    // 16 MiB of zeros in one file, compressed hundreds of times.
    let mut header = Header::new_gnu();
    header.set_path("bomb").unwrap();
    header.set_size(16 << 20);
    header.set_cksum();
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(header.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..16 {
        encoder.write_all(&zeros).unwrap();
    }
    encoder.write_all(&[0; 1024]).unwrap();
    let bomb = encoder.finish().unwrap();
    let why = too_large(Sandbox::new().unpack(&bomb, &Limits::default()));
    assert!(why.contains("gzip bomb"), "{why}");
    let limits = Limits {
        max_ratio: u64::MAX,
        max_unpacked: 8 << 20,
        ..Limits::default()
    };
    let why = too_large(Sandbox::new().unpack(&bomb, &limits));
    assert!(
        why.contains("unpacked size limit of 8388608 bytes"),
        "{why}"
    );
}

// ---- properties ----------------------------------------------------------

/// A Doee directory: files and empty directories, `doee.toml` at the top or
/// in one wrapping directory.
#[derive(Debug, Clone)]
struct Tree {
    wrap: Option<String>,
    files: BTreeMap<String, Vec<u8>>,
    dirs: Vec<String>,
    executable: Vec<bool>,
}

fn name() -> impl Strategy<Value = String> {
    // Few letters, so paths meet; the odd long or unusual name.
    prop_oneof![
        8 => "[a-c]{1,2}",
        1 => "[a-zA-Z0-9 ._~-]{1,40}".prop_filter("not . or ..", |n| n != "." && n != ".."),
        1 => Just("x".repeat(150)),
        1 => "[^/\\x00]{1,8}".prop_filter("not . or ..", |n| n != "." && n != ".."),
    ]
}

fn tree() -> impl Strategy<Value = Tree> {
    let path = || prop::collection::vec(name(), 1..4).prop_map(|parts| parts.join("/"));
    let content = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        (0usize..3000).prop_map(|n| vec![b'z'; n]),
    ];
    (
        prop::option::of("[a-z]{1,5}"),
        prop::collection::btree_map(path(), content, 0..10),
        prop::collection::vec(path(), 0..4),
        prop::collection::vec(any::<bool>(), 10),
    )
        .prop_map(|(wrap, mut files, dirs, executable)| {
            // A file cannot also be a directory: drop files that are
            // another path's ancestor.
            let all: Vec<String> = files.keys().chain(&dirs).cloned().collect();
            files.retain(|f, _| !all.iter().any(|p| p.starts_with(&format!("{f}/"))));
            // `pack` leaves out a top-level `target` and `.git`.
            let skipped =
                |p: &str| wrap.is_none() && matches!(p.split('/').next(), Some("target" | ".git"));
            files.retain(|f, _| !skipped(f));
            let dirs = dirs
                .into_iter()
                .filter(|d| !files.contains_key(d) && !skipped(d))
                .collect();
            files.insert(
                "doee.toml".into(),
                b"name = \"t\"\nlanguage = \"rust\"\n".to_vec(),
            );
            Tree {
                wrap,
                files,
                dirs,
                executable,
            }
        })
}

impl Tree {
    /// Writes the tree under `dir`; returns the Doee directory (`dir`, or
    /// the wrapping directory in it).
    fn write(&self, dir: &Path) -> PathBuf {
        let root = match &self.wrap {
            Some(wrap) => dir.join(wrap),
            None => dir.to_path_buf(),
        };
        for d in &self.dirs {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for (i, (path, data)) in self.files.iter().enumerate() {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, data).unwrap();
            if self.executable[i % self.executable.len()] {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
            }
        }
        root
    }
}

/// A tar entry whose path is made of arbitrary components.
fn hostile_path() -> impl Strategy<Value = Vec<u8>> {
    let part = prop_oneof![
        Just(b"..".to_vec()),
        Just(b".".to_vec()),
        Just(b"".to_vec()),
        Just(b"doee.toml".to_vec()),
        "[a-b]{1,2}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 1..4),
    ];
    (any::<bool>(), prop::collection::vec(part, 1..6)).prop_map(|(absolute, parts)| {
        let mut path = if absolute { b"/".to_vec() } else { Vec::new() };
        path.extend(parts.join(&b'/'));
        path.truncate(99);
        path
    })
}

fn entry_type() -> impl Strategy<Value = EntryType> {
    prop_oneof![
        6 => Just(EntryType::Regular),
        3 => Just(EntryType::Directory),
        1 => any::<u8>().prop_map(EntryType::new),
    ]
}

/// What may be done to a good archive.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..600).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        if bytes.is_empty() {
            return;
        }
        let n = bytes.len();
        match m {
            Mutation::Flip { at, bit } => bytes[at % n] ^= 1 << bit,
            Mutation::Set { at, byte } => bytes[at % n] = *byte,
            Mutation::Truncate { at } => bytes.truncate(at % n),
            Mutation::Insert { at, bytes: new } => {
                let at = at % n;
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Remove { at, len } => {
                let at = at % n;
                bytes.drain(at..(at + len).min(n));
            }
        }
    }
}

/// Whatever the outcome, only a whole target or nothing.
fn check_outcome(sandbox: &Sandbox, result: &Result<PathBuf, ArchiveError>) {
    match result {
        Ok(root) => {
            assert!(root.starts_with(&sandbox.target));
            assert!(root.join("doee.toml").is_file());
        }
        Err(ArchiveError::Io(err)) => panic!("an archive's fault reported as I/O: {err}"),
        Err(err) => assert!(!err.to_string().is_empty()),
    }
}

// Case counts keep the whole file to a few seconds unoptimised;
// PROPTEST_CASES raises them all for a longer hunt.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n),
    )
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn generated_trees_round_trip(tree in tree()) {
        let source = TempDir::new();
        let packed = tree.write(&source.0);
        let archive = pack(&source.0).unwrap();
        let sandbox = Sandbox::new();
        let root = sandbox.unpack(&archive, &Limits::default()).unwrap();
        prop_assert_eq!(walk(&root), walk(&packed));
        if tree.wrap.is_some() {
            prop_assert_eq!(walk(&sandbox.target).len(), walk(&packed).len() + 1);
        }
        use std::os::unix::fs::PermissionsExt;
        for (path, _) in walk(&packed).iter().filter(|(_, data)| data.is_some()) {
            let mode = |root: &Path| std::fs::metadata(root.join(path)).unwrap().permissions().mode();
            prop_assert_eq!(mode(&packed) & 0o100 != 0, mode(&root) & 0o111 == 0o111);
        }
    }

}

proptest! {
    #![proptest_config(cases(24))]

    #[test]
    fn bounds_hold_exactly_at_the_limit(tree in tree()) {
        let source = TempDir::new();
        tree.write(&source.0);
        check_bounds_exactly(&pack(&source.0).unwrap());
    }

}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn arbitrary_bytes_never_unpack(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        gzip_magic in any::<bool>(),
    ) {
        let bytes = if gzip_magic {
            [&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3][..], &bytes].concat()
        } else {
            bytes
        };
        let sandbox = Sandbox::new();
        let result = sandbox.unpack(&bytes, &Limits::default());
        check_outcome(&sandbox, &result);
        prop_assert!(result.is_err());
    }

    #[test]
    fn mutated_archives_unpack_whole_or_not_at_all(
        tree in tree(),
        mutations in prop::collection::vec(mutation(), 1..4),
        inside_gzip in any::<bool>(),
    ) {
        let source = TempDir::new();
        tree.write(&source.0);
        let archive = pack(&source.0).unwrap();
        // Mutating the tar under the compression reaches the tar parser;
        // mutating the compressed bytes reaches the decoder.
        let archive = if inside_gzip {
            let mut tar = gunzip(&archive);
            mutate(&mut tar, &mutations);
            gzip(&tar)
        } else {
            let mut archive = archive;
            mutate(&mut archive, &mutations);
            archive
        };
        let sandbox = Sandbox::new();
        let result = sandbox.unpack(&archive, &Limits::default());
        check_outcome(&sandbox, &result);
    }

    #[test]
    fn hostile_paths_stay_inside(
        entries in prop::collection::vec((hostile_path(), entry_type(), prop::collection::vec(any::<u8>(), 0..4)), 1..6),
        manifest_first in any::<bool>(),
    ) {
        let mut tar = RawTar::default();
        if manifest_first {
            tar = tar.manifest();
        }
        for (path, kind, data) in &entries {
            tar = tar.entry(path, *kind, data);
        }
        if !manifest_first {
            tar = tar.manifest();
        }
        let sandbox = Sandbox::new();
        let result = sandbox.unpack(&tar.gz(), &Limits::default());
        check_outcome(&sandbox, &result);
        // An accepted archive wrote only what it listed, as regular files
        // and directories.
        if result.is_ok() {
            walk(&sandbox.target);
        }
        for (path, kind, _) in &entries {
            // Other kinds are extension headers that name no path, or
            // refused whatever their path.
            if !kind.is_file() && !kind.is_dir() {
                continue;
            }
            use std::os::unix::ffi::OsStrExt;
            let path = Path::new(std::ffi::OsStr::from_bytes(path));
            let climbs = path.components().any(|c| c == std::path::Component::ParentDir);
            if climbs || path.is_absolute() {
                prop_assert!(result.is_err(), "{} was accepted", path.display());
            }
        }
    }
}
