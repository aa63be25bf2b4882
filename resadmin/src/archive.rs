//! Unpacking an uploaded Doee directory (`.tar.gz`) with bounds.
//!
//! The archive is untrusted, so it is read twice. The first pass writes
//! nothing: it decompresses into the void, counting bytes as it goes (a gzip
//! bomb stops at the limit, not after), and checks every entry: a regular
//! file or directory, a path that stays inside the target, no clash with
//! another entry, a `doee.toml` at the top, an intact gzip checksum. Only
//! then does the second pass write the same entries into the target; should
//! that fail (a full disk), the target is removed again. A refused upload
//! never touches the disk, and nothing half-written remains.

use flate2::read::GzDecoder;
use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

/// Bounds on an upload.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of the `.tar.gz` itself.
    pub max_compressed: u64,
    /// Bytes once decompressed (the tar stream, headers included).
    pub max_unpacked: u64,
    /// Entries in the archive.
    pub max_entries: u32,
    /// Decompressed bytes per compressed byte.
    pub max_ratio: u64,
    /// Decompressed bytes allowed whatever the ratio: the zero-padded tar
    /// headers of a small Doee compress far better than `max_ratio`.
    pub ratio_exempt: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_compressed: 16 << 20,
            max_unpacked: 128 << 20,
            max_entries: 10_000,
            max_ratio: 200,
            ratio_exempt: 1 << 20,
        }
    }
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Too big, too many entries or too compressed.
    #[error("{0}")]
    TooLarge(String),
    /// An entry that may not be unpacked.
    #[error("{0}")]
    Refused(String),
    /// Not a gzip-compressed tar.
    #[error("not a .tar.gz archive: {0}")]
    Malformed(String),
    /// Writing failed on our side.
    #[error("cannot unpack: {0}")]
    Io(io::Error),
}

/// Longest path inside the Doee directory, in components and in bytes.
const MAX_DEPTH: usize = 16;
const MAX_PATH_BYTES: usize = 1024;
/// Longest file name (Linux's `NAME_MAX`).
const MAX_NAME_BYTES: usize = 255;

/// Counts decompressed bytes and stops at the limit, remembering that it
/// did so the error can be told apart from a malformed archive.
struct Bounded<R> {
    inner: R,
    read: u64,
    max: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.max {
            self.tripped.set(true);
            return Err(io::Error::other("size limit"));
        }
        Ok(n)
    }
}

/// Unpacks `archive` into `target` (which must not exist yet; it is created
/// only once the whole archive has been checked). Returns the directory
/// holding `doee.toml`: the target itself, or its single top-level
/// directory if the archive wraps one.
pub fn unpack(archive: &[u8], target: &Path, limits: &Limits) -> Result<PathBuf, ArchiveError> {
    if archive.len() as u64 > limits.max_compressed {
        return Err(ArchiveError::TooLarge(format!(
            "the archive is {} bytes; the limit is {} bytes",
            archive.len(),
            limits.max_compressed
        )));
    }
    let root = read(archive, limits, None)?;
    fs::create_dir(target).map_err(ArchiveError::Io)?;
    match read(archive, limits, Some(target)) {
        Ok(_) => Ok(target.join(root)),
        Err(err) => {
            let _ = fs::remove_dir_all(target);
            Err(err)
        }
    }
}

/// One pass over the archive: checks every entry and, given a target,
/// writes it there. Returns the root (see [`unpack`]) relative to the
/// target. The checks are the same in both passes and the bytes are the
/// same, so a second pass fails only where writing fails.
fn read(archive: &[u8], limits: &Limits, target: Option<&Path>) -> Result<PathBuf, ArchiveError> {
    // Said plainly here; the decoder would only report an early end or a
    // bad header.
    if !archive.starts_with(&[0x1f, 0x8b]) {
        return Err(ArchiveError::Malformed(
            "the body is not gzip-compressed (a gzip stream starts with the bytes 1f 8b)".into(),
        ));
    }
    let by_ratio = (archive.len() as u64)
        .saturating_mul(limits.max_ratio)
        .max(limits.ratio_exempt);
    let (max, why) = if by_ratio < limits.max_unpacked {
        (
            by_ratio,
            format!(
                "the archive decompresses to more than {} times its size (a gzip bomb?)",
                limits.max_ratio
            ),
        )
    } else {
        (
            limits.max_unpacked,
            format!(
                "the archive decompresses to more than the unpacked size limit of {} bytes",
                limits.max_unpacked
            ),
        )
    };
    let tripped = Rc::new(Cell::new(false));
    let stream = Bounded {
        inner: GzDecoder::new(archive),
        read: 0,
        max,
        tripped: tripped.clone(),
    };
    let classify = |err: io::Error| {
        if tripped.get() {
            ArchiveError::TooLarge(why.clone())
        } else {
            // Reading from memory cannot fail, so any error of the stream
            // is the archive's.
            ArchiveError::Malformed(err.to_string())
        }
    };
    let mut tar = tar::Archive::new(stream);
    let mut layout = Layout::default();
    let mut count = 0u64;
    for entry in tar.entries().map_err(classify)? {
        let mut entry = entry.map_err(classify)?;
        count += 1;
        if count > u64::from(limits.max_entries) {
            return Err(ArchiveError::TooLarge(format!(
                "the archive has more than {} entries",
                limits.max_entries
            )));
        }
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            // Metadata for the archive as a whole (`git archive` writes
            // the commit id there); nothing to unpack.
            continue;
        }
        let raw_path = entry.path().map_err(classify)?.into_owned();
        let shown = raw_path.display().to_string();
        let relative = safe_path(&raw_path)?;
        // Old tars mark a directory by a trailing slash alone.
        let is_dir = kind.is_dir() || (kind.is_file() && entry.path_bytes().ends_with(b"/"));
        if !is_dir && !kind.is_file() {
            let what = if kind.is_symlink() {
                "a symbolic link"
            } else if kind.is_hard_link() {
                "a hard link"
            } else if kind.is_character_special() || kind.is_block_special() {
                "a device file"
            } else if kind.is_fifo() {
                "a FIFO"
            } else {
                "a special entry"
            };
            return Err(ArchiveError::Refused(format!(
                "\"{shown}\" is {what}; only regular files and directories may be uploaded"
            )));
        }
        if relative.as_os_str().is_empty() {
            if is_dir {
                continue; // "./"
            }
            return Err(ArchiveError::Refused(format!(
                "\"{shown}\" is a file without a name"
            )));
        }
        layout.add(&relative, is_dir, &shown)?;
        if is_dir {
            if let Some(target) = target {
                fs::create_dir_all(target.join(&relative)).map_err(ArchiveError::Io)?;
            }
            continue;
        }
        let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
        match target {
            None => {
                io::copy(&mut entry, &mut io::sink()).map_err(classify)?;
            }
            Some(target) => {
                let dest = target.join(&relative);
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent).map_err(ArchiveError::Io)?;
                }
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
                    .map_err(ArchiveError::Io)?;
                copy(&mut entry, &mut file, &classify)?;
                if executable {
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
                        .map_err(ArchiveError::Io)?;
                }
            }
        }
    }
    // Read to the end, past the tar's end marker, so the decoder checks
    // the gzip trailer: a damaged upload is refused, not built.
    io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(classify)?;
    layout.root()
}

/// Copies an entry into a file, telling the archive's faults (classified)
/// from the disk's.
fn copy(
    entry: &mut impl Read,
    file: &mut File,
    classify: &impl Fn(io::Error) -> ArchiveError,
) -> Result<(), ArchiveError> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = entry.read(&mut buf).map_err(classify)?;
        if n == 0 {
            return file.flush().map_err(ArchiveError::Io);
        }
        file.write_all(&buf[..n]).map_err(ArchiveError::Io)?;
    }
}

/// What the archive holds so far, so an entry that clashes with an earlier
/// one (a file twice, a file that is also a directory) is refused before
/// anything is written.
#[derive(Default)]
struct Layout {
    /// Every path, with whether it is a directory; directories that entries
    /// imply without listing them included.
    entries: HashMap<PathBuf, bool>,
}

impl Layout {
    fn add(&mut self, path: &Path, is_dir: bool, shown: &str) -> Result<(), ArchiveError> {
        for ancestor in path.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() {
                break;
            }
            match self.entries.get(ancestor) {
                // Its own ancestors were added with it.
                Some(true) => break,
                Some(false) => {
                    return Err(ArchiveError::Refused(format!(
                        "\"{shown}\" lies inside \"{}\", which the archive also holds as a file",
                        ancestor.display()
                    )));
                }
                None => {
                    self.entries.insert(ancestor.to_path_buf(), true);
                }
            }
        }
        match (self.entries.get(path), is_dir) {
            (None, _) => {
                self.entries.insert(path.to_path_buf(), is_dir);
                Ok(())
            }
            (Some(true), true) => Ok(()),
            (Some(false), false) => Err(ArchiveError::Refused(format!(
                "\"{shown}\" appears twice in the archive"
            ))),
            (Some(_), _) => Err(ArchiveError::Refused(format!(
                "\"{shown}\" is both a file and a directory in the archive"
            ))),
        }
    }

    /// Where `doee.toml` is: at the top, or in the one top-level directory.
    fn root(&self) -> Result<PathBuf, ArchiveError> {
        let manifest = Path::new(crate::manifest::FILE);
        if self.entries.get(manifest) == Some(&false) {
            return Ok(PathBuf::new());
        }
        let mut top = self
            .entries
            .keys()
            .filter(|path| path.components().count() == 1);
        if let (Some(only), None) = (top.next(), top.next())
            && self.entries.get(only) == Some(&true)
            && self.entries.get(&only.join(manifest)) == Some(&false)
        {
            return Ok(only.clone());
        }
        Err(ArchiveError::Refused(format!(
            "the archive has no {} at its top level",
            crate::manifest::FILE
        )))
    }
}

/// A path made only of normal components (and `.`), at most
/// [`MAX_DEPTH`] deep, whose names the file system can hold.
fn safe_path(path: &Path) -> Result<PathBuf, ArchiveError> {
    let shown = path.display();
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => {
                let bytes = part.as_encoded_bytes();
                if bytes.contains(&0) {
                    return Err(ArchiveError::Refused(format!(
                        "\"{}\" contains a NUL byte",
                        shown.to_string().escape_default()
                    )));
                }
                if bytes.len() > MAX_NAME_BYTES {
                    return Err(ArchiveError::Refused(format!(
                        "\"{shown}\" has a name longer than {MAX_NAME_BYTES} bytes"
                    )));
                }
                out.push(part);
            }
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(ArchiveError::Refused(format!(
                    "\"{shown}\" leaves the Doee directory (..)"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::Refused(format!(
                    "\"{shown}\" is an absolute path"
                )));
            }
        }
    }
    if out.components().count() > MAX_DEPTH || out.as_os_str().len() > MAX_PATH_BYTES {
        return Err(ArchiveError::Refused(format!(
            "\"{shown}\" is nested too deep (at most {MAX_DEPTH} levels and {MAX_PATH_BYTES} bytes)"
        )));
    }
    Ok(out)
}

/// Packs a directory into a `.tar.gz`, skipping build output and VCS data.
/// Used by the CLI and by tests; symbolic links are refused.
pub fn pack(dir: &Path) -> io::Result<Vec<u8>> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(false);
    add_dir(&mut builder, dir, Path::new(""))?;
    builder.into_inner()?.finish()
}

fn add_dir<W: Write>(builder: &mut tar::Builder<W>, dir: &Path, rel: &Path) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if rel.as_os_str().is_empty() && (name == "target" || name == ".git") {
            continue;
        }
        let path = entry.path();
        let rel = rel.join(&name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            builder.append_dir(&rel, &path)?;
            add_dir(builder, &path, &rel)?;
        } else if kind.is_file() {
            let mut file = File::open(&path)?;
            builder.append_file(&rel, &mut file)?;
        } else {
            return Err(io::Error::other(format!(
                "{} is not a regular file or directory",
                path.display()
            )));
        }
    }
    Ok(())
}
