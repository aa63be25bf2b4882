//! Hostile uploads against a real platform: archives that climb out of the
//! upload area, links, devices, a gzip bomb, too many entries, broken
//! manifests, bodies that are not archives at all and bodies beyond the
//! upload limit. Each gets a 4xx whose error names the problem, writes
//! nothing outside the upload area, and leaves no half-made version.
//!
//! Why one file of this size: every way an upload can be bad, each a short
//! case against one running platform.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use flate2::write::GzEncoder;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use isms_test_support::http::{self, Response};
use isms_test_support::{Options, Platform, eventually};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tar::{EntryType, Header};

const PROJECT: &str = "hostile";
const MANIFEST: &[u8] = b"name = \"victim\"\nlanguage = \"c\"\nsources = [\"main.c\"]\n\n\
    [[triggers.http]]\nroute = \"/victim\"\n";

// ---- archives, written entry by entry ------------------------------------

/// A tar written header by header, so paths and entry types can be what
/// the `tar` crate's own builder refuses to write.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn header(path: &str, kind: EntryType, size: u64) -> Header {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        header
    }

    fn push(mut self, mut header: Header, data: &[u8]) -> Tar {
        header.set_cksum();
        self.0.extend_from_slice(header.as_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
        self
    }

    fn file(self, path: &str, data: &[u8]) -> Tar {
        self.push(
            Tar::header(path, EntryType::Regular, data.len() as u64),
            data,
        )
    }

    fn dir(self, path: &str) -> Tar {
        self.push(Tar::header(path, EntryType::Directory, 0), b"")
    }

    fn special(self, path: &str, kind: EntryType, link: &str) -> Tar {
        let mut header = Tar::header(path, kind, 0);
        if !link.is_empty() {
            header.set_link_name(link).unwrap();
        }
        if kind == EntryType::Char {
            header.set_device_major(1).unwrap();
            header.set_device_minor(3).unwrap();
        }
        self.push(header, b"")
    }

    /// A file whose name is longer than a tar header holds, given in a GNU
    /// long-name entry before it.
    fn long_name(self, path: &str, data: &[u8]) -> Tar {
        let name = [path.as_bytes(), b"\0"].concat();
        self.push(
            Tar::header("././@LongLink", EntryType::GNULongName, name.len() as u64),
            &name,
        )
        .file("placeholder", data)
    }

    /// The victim's sources, so only the hostile part is wrong.
    fn victim(self) -> Tar {
        self.file("doee.toml", MANIFEST)
            .file("main.c", b"int answer(void) { return 42; }\n")
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0; 1024]);
        self.0
    }

    fn gz(self) -> Vec<u8> {
        gzip(&self.finish())
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Raw deflate of `data` from a fresh compressor. A full flush leaves the
/// output byte-aligned and referring to nothing before it, so such pieces
/// can be laid end to end.
fn deflate(data: &[u8], finish: bool) -> Vec<u8> {
    let mut compress = Compress::new(Compression::best(), false);
    let flush = if finish {
        FlushCompress::Finish
    } else {
        FlushCompress::Full
    };
    let mut out = Vec::with_capacity(64 << 10);
    loop {
        let consumed = compress.total_in() as usize;
        let status = compress
            .compress_vec(&data[consumed..], &mut out, flush)
            .unwrap();
        let all_in = compress.total_in() as usize == data.len();
        if status == Status::StreamEnd || (!finish && all_in && out.len() < out.capacity()) {
            return out;
        }
        out.reserve(64 << 10);
    }
}

/// A `.tar.gz` holding the victim's manifest and a file of `gib` GiB of
/// zeros: about a thousand times smaller than what it unpacks to. Built
/// from one compressed MiB repeated, so making it takes no time.
fn gzip_bomb(gib: usize) -> Vec<u8> {
    let size = (gib as u64) << 30;
    let head = Tar::default()
        .file("doee.toml", MANIFEST)
        .push(Tar::header("zeros", EntryType::Regular, size), b"")
        .0;
    let mib = vec![0u8; 1 << 20];
    let tail = [0u8; 1024];
    let mut crc = Crc::new();
    crc.update(&head);
    let mut mib_crc = Crc::new();
    mib_crc.update(&mib);
    let mut tail_crc = Crc::new();
    tail_crc.update(&tail);

    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    out.extend(deflate(&head, false));
    let zeros = deflate(&mib, false);
    for _ in 0..(gib << 10) {
        out.extend_from_slice(&zeros);
        crc.combine(&mib_crc);
    }
    out.extend(deflate(&tail, true));
    crc.combine(&tail_crc);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&crc.amount().to_le_bytes());
    out
}

fn many_entries(n: usize) -> Vec<u8> {
    let mut tar = Tar::default().victim();
    for i in 0..n {
        tar = tar.file(&format!("e/{i:06}"), b"");
    }
    tar.gz()
}

fn manifest_archive(manifest: &str) -> Vec<u8> {
    Tar::default()
        .file("doee.toml", manifest.as_bytes())
        .file("main.c", b"")
        .gz()
}

// ---- the platform's state ------------------------------------------------

/// Every path under the data directory with its content; `None` for
/// directories, sockets, and what a running platform may change by itself
/// (logs, its database, its run directory).
fn snapshot(data_dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            let kind = entry.file_type().unwrap();
            let content = if kind.is_file() && !volatile(&relative) {
                std::fs::read(&path).ok()
            } else {
                None
            };
            out.insert(relative, content);
            if kind.is_dir() {
                go(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    go(data_dir, data_dir, &mut out);
    out
}

fn volatile(relative: &Path) -> bool {
    relative.starts_with("logs")
        || relative.starts_with("run")
        || relative
            .to_str()
            .is_some_and(|p| p.starts_with("resadmin/state.db"))
}

/// What changed between two snapshots, other than volatile files.
fn changes(
    before: &BTreeMap<PathBuf, Option<Vec<u8>>>,
    after: &BTreeMap<PathBuf, Option<Vec<u8>>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (path, content) in after {
        match before.get(path) {
            None if !volatile(path) => out.push(format!("new: {}", path.display())),
            Some(old) if old != content => out.push(format!("changed: {}", path.display())),
            _ => {}
        }
    }
    for path in before.keys() {
        if !after.contains_key(path) && !volatile(path) {
            out.push(format!("gone: {}", path.display()));
        }
    }
    out
}

// ---- the API -------------------------------------------------------------

struct Api<'a> {
    platform: &'a Platform,
    token: String,
}

impl Api<'_> {
    fn upload(&self, body: &[u8]) -> Response {
        http::request(
            "POST",
            &format!("{}/api/v1/projects/{PROJECT}/doees", self.platform.api),
            &[
                ("Authorization", &format!("Bearer {}", self.token)),
                ("Content-Type", "application/gzip"),
            ],
            body,
        )
    }

    fn doee(&self, name: &str) -> Response {
        http::request(
            "GET",
            &format!(
                "{}/api/v1/projects/{PROJECT}/doees/{name}",
                self.platform.api
            ),
            &[("Authorization", &format!("Bearer {}", self.token))],
            b"",
        )
    }

    /// The project as the project list shows it, with its count of Doees.
    fn project(&self) -> serde_json::Value {
        let response = http::request(
            "GET",
            &format!("{}/api/v1/projects", self.platform.api),
            &[("Authorization", &format!("Bearer {}", self.token))],
            b"",
        );
        assert_eq!(response.status, 200, "{}", response.text());
        let projects = response.json();
        let project = projects
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == PROJECT);
        project
            .cloned()
            .unwrap_or_else(|| panic!("no {PROJECT} in {projects}"))
    }

    /// The victim's versions, as the API shows them.
    fn versions(&self) -> serde_json::Value {
        let response = self.doee("victim");
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()["versions"].clone()
    }

    /// Declares a body of `length` bytes and sends none of it: a gate that
    /// reads a body past its limit before refusing would hang here.
    fn declare_upload(&self, length: u64) -> (u16, String) {
        let host = self.platform.api.strip_prefix("http://").unwrap();
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "POST /api/v1/projects/{PROJECT}/doees HTTP/1.1\r\nHost: {host}\r\n\
             Authorization: Bearer {}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
            self.token
        )
        .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

fn error_of(response: &Response) -> String {
    response.json()["error"].as_str().unwrap_or("").to_string()
}

// ---- the test ------------------------------------------------------------

struct Case {
    what: &'static str,
    body: Vec<u8>,
    status: u16,
    /// Must appear in the JSON `error`.
    error: &'static str,
}

fn case(what: &'static str, body: Vec<u8>, status: u16, error: &'static str) -> Case {
    Case {
        what,
        body,
        status,
        error,
    }
}

#[test]
fn hostile_uploads_are_refused_without_a_trace() {
    let p = Options::new(env!("CARGO_BIN_EXE_isms"), env!("CARGO_TARGET_TMPDIR")).start();
    p.login_admin();
    p.run(&["project", "create", PROJECT]);
    let api = Api {
        platform: &p,
        token: p.token(),
    };

    // One good version first, so "no half-made version" has something to
    // keep. Whether its build succeeds does not matter here, only that it
    // has ended before the data directory is compared.
    let deployed = api.upload(&Tar::default().victim().gz());
    assert_eq!(deployed.status, 202, "{}", deployed.text());
    eventually(Duration::from_secs(120), "the victim's build", || {
        let status = api.versions()[0]["build"]["status"].clone();
        (status == "succeeded" || status == "failed").then_some(())
    });
    let versions = api.versions();
    assert_eq!(versions.as_array().unwrap().len(), 1);
    let project = api.project();
    assert_eq!(project["doees"], 1, "{project}");

    // Where escapes would land: beside the upload area, in the test's own
    // directory (absolute and by climbing), and in /etc (the platform runs
    // as whoever runs the tests, root on CI).
    let sources = p.data_dir.join("resadmin/sources");
    let outside = p.root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("existing"), b"untouched").unwrap();
    // Twelve levels up from the upload area is the root directory (the
    // tar header holds 100 bytes of path).
    let climb = format!(
        "{}{}",
        "../".repeat(11),
        &outside.display().to_string()[1..]
    );
    let absolute = outside.join("absolute");
    let in_etc = PathBuf::from(format!("/etc/isms-hostile-{}", std::process::id()));

    let cases = vec![
        case(
            "a path climbing out of the upload area",
            Tar::default().victim().file("../escaped", b"x").gz(),
            400,
            "\"../escaped\" leaves the Doee directory",
        ),
        case(
            "a path climbing out of the data directory to the test's",
            Tar::default()
                .victim()
                .file(&format!("{climb}/climbed"), b"x")
                .gz(),
            400,
            "leaves the Doee directory",
        ),
        case(
            "a path climbing out of a wrapping directory",
            Tar::default()
                .dir("victim")
                .file("victim/doee.toml", MANIFEST)
                .file("victim/../../escaped-wrapped", b"x")
                .gz(),
            400,
            "\"victim/../../escaped-wrapped\" leaves the Doee directory",
        ),
        case(
            "an absolute path",
            Tar::default()
                .victim()
                .file(&absolute.display().to_string(), b"x")
                .gz(),
            400,
            "is an absolute path",
        ),
        case(
            "an absolute path into /etc",
            Tar::default()
                .victim()
                .file(&in_etc.display().to_string(), b"x")
                .gz(),
            400,
            "is an absolute path",
        ),
        case(
            "a symbolic link, then a file through it",
            Tar::default()
                .victim()
                .special("link", EntryType::Symlink, &outside.display().to_string())
                .file("link/through-link", b"x")
                .gz(),
            400,
            "\"link\" is a symbolic link",
        ),
        case(
            "a symbolic link to /etc/passwd",
            Tar::default()
                .victim()
                .special("passwd", EntryType::Symlink, "/etc/passwd")
                .gz(),
            400,
            "\"passwd\" is a symbolic link",
        ),
        case(
            "a hard link to a file outside",
            Tar::default()
                .victim()
                .special(
                    "hard",
                    EntryType::Link,
                    &outside.join("existing").display().to_string(),
                )
                .file("hard", b"overwritten")
                .gz(),
            400,
            "\"hard\" is a hard link",
        ),
        case(
            "a character device",
            Tar::default()
                .victim()
                .special("null", EntryType::Char, "")
                .gz(),
            400,
            "\"null\" is a device file",
        ),
        case(
            "a block device",
            Tar::default()
                .victim()
                .special("disk", EntryType::Block, "")
                .gz(),
            400,
            "\"disk\" is a device file",
        ),
        case(
            "a FIFO",
            Tar::default()
                .victim()
                .special("pipe", EntryType::Fifo, "")
                .gz(),
            400,
            "\"pipe\" is a FIFO",
        ),
        case(
            "a gzip bomb: 1 GiB of zeros",
            gzip_bomb(1),
            413,
            "decompresses to more than the unpacked size limit of 134217728 bytes",
        ),
        case(
            "100,000 tiny entries",
            many_entries(100_000),
            413,
            "more than 10000 entries",
        ),
        case(
            "a file and a directory of the same name",
            Tar::default()
                .victim()
                .file("a", b"1")
                .file("a/b", b"2")
                .gz(),
            400,
            "\"a/b\" lies inside \"a\", which the archive also holds as a file",
        ),
        case(
            "a name longer than the file system allows",
            Tar::default()
                .victim()
                .long_name(&"n".repeat(256), b"")
                .gz(),
            400,
            "has a name longer than 255 bytes",
        ),
        case(
            "a manifest naming the Doee Bad_Name",
            manifest_archive("name = \"Bad_Name\"\nlanguage = \"c\"\nsources = [\"main.c\"]\n"),
            400,
            "`name`: invalid Doee name `Bad_Name`: may contain only a-z, 0-9 and -",
        ),
        case(
            "a route without /",
            manifest_archive(
                "name = \"victim\"\nlanguage = \"c\"\nsources = [\"main.c\"]\n\
                 [[triggers.http]]\nroute = \"victim\"\n",
            ),
            400,
            "`triggers.http[0].route` must start with /",
        ),
        case(
            "an unknown language",
            manifest_archive("name = \"victim\"\nlanguage = \"go\"\n"),
            400,
            "`language` must be \"rust\", \"c\", \"cpp\" or \"python\" (got \"go\")",
        ),
        case(
            "an unknown key",
            manifest_archive(
                "name = \"victim\"\nlanguage = \"c\"\nsources = [\"main.c\"]\ncolour = \"red\"\n",
            ),
            400,
            "unknown field `colour`",
        ),
        case(
            "a value of the wrong type",
            manifest_archive("name = \"victim\"\nlanguage = \"c\"\nsources = \"main.c\"\n"),
            400,
            "`sources`: invalid type: string \"main.c\", expected a sequence (line 3)",
        ),
        case(
            "a manifest that is not TOML",
            manifest_archive("name = \"victim\nlanguage = c\n"),
            400,
            "(line 1)",
        ),
        case(
            "no doee.toml",
            Tar::default().file("main.c", b"").dir("src").gz(),
            400,
            "the archive has no doee.toml at its top level",
        ),
        case(
            "doee.toml as a directory",
            Tar::default()
                .dir("doee.toml")
                .file("doee.toml/x", b"")
                .gz(),
            400,
            "the archive has no doee.toml at its top level",
        ),
        case(
            "a body that is not gzip",
            b"hello, this is not an archive".to_vec(),
            400,
            "the body is not gzip-compressed",
        ),
        case(
            "a tar that is not compressed",
            Tar::default().victim().finish(),
            400,
            "the body is not gzip-compressed",
        ),
        case(
            "a damaged gzip stream",
            {
                let mut archive = Tar::default().victim().gz();
                let n = archive.len();
                archive[n - 8] ^= 0xff; // the CRC-32
                archive
            },
            400,
            "not a .tar.gz archive",
        ),
        case(
            "a gzip that holds no tar",
            gzip(b"just some text, not a tar archive\n"),
            400,
            "not a .tar.gz archive",
        ),
        case(
            "an empty body",
            Vec::new(),
            400,
            "the body must be the Doee directory as .tar.gz",
        ),
        case(
            "a body of exactly the upload limit, which is not gzip",
            vec![b'x'; 16 << 20],
            400,
            "the body is not gzip-compressed",
        ),
    ];

    let before = snapshot(&p.data_dir);
    for case in cases {
        let what = case.what;
        let response = api.upload(&case.body);
        assert_eq!(
            response.status,
            case.status,
            "{what}: expected {} but got {}",
            case.status,
            response.text()
        );
        let error = error_of(&response);
        assert!(
            error.contains(case.error),
            "{what}: expected {:?} in the error, got {error:?}",
            case.error
        );
        let changed = changes(&before, &snapshot(&p.data_dir));
        assert!(changed.is_empty(), "{what} left traces: {changed:#?}");
        assert_eq!(api.versions(), versions, "{what}: the versions changed");
        assert_eq!(
            api.project(),
            project,
            "{what}: the project's Doees changed"
        );
    }

    // A body declared beyond the limit is refused before it is read.
    let (status, body) = api.declare_upload((16 << 20) + 1);
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("the body is larger than 16777216 bytes"),
        "{body}"
    );
    let (status, body) = api.declare_upload(1 << 40);
    assert_eq!(status, 413, "{body}");

    // Without a token nothing is even unpacked.
    let anonymous = http::request(
        "POST",
        &format!("{}/api/v1/projects/{PROJECT}/doees", p.api),
        &[],
        &Tar::default().victim().gz(),
    );
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());

    let changed = changes(&before, &snapshot(&p.data_dir));
    assert!(changed.is_empty(), "left traces: {changed:#?}");
    assert_eq!(api.versions(), versions);

    // Nothing landed where the escapes pointed.
    for path in [
        sources.join("escaped"),
        sources.join("escaped-wrapped"),
        p.data_dir.join("resadmin/escaped"),
        outside.join("climbed"),
        outside.join("through-link"),
        absolute,
    ] {
        assert!(!path.exists(), "{} exists", path.display());
    }
    let etc_exists = in_etc.exists();
    let _ = std::fs::remove_file(&in_etc);
    assert!(!etc_exists, "{} exists", in_etc.display());
    assert_eq!(
        std::fs::read(outside.join("existing")).unwrap(),
        b"untouched"
    );
    let outside_now: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside_now, ["existing"]);

    // The upload area holds the one completed version and nothing else:
    // no staging directory of a refused upload.
    // (The C build of that version writes its output under `.isms-build`.)
    let mut stored: Vec<String> = snapshot(&sources)
        .keys()
        .map(|p| p.display().to_string())
        .filter(|p| !p.contains("/.isms-build"))
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        [
            "hostile",
            "hostile/victim",
            "hostile/victim/1",
            "hostile/victim/1/doee.toml",
            "hostile/victim/1/main.c",
        ]
    );

    // The control: the same platform still takes a good upload, as a new
    // version, with the longest file name Linux allows.
    let good = api.upload(
        &Tar::default()
            .victim()
            .long_name(&"n".repeat(255), b"")
            .gz(),
    );
    assert_eq!(good.status, 202, "{}", good.text());
    assert_eq!(good.json()["version"], 2);
}
