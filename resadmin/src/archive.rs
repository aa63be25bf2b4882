//! Unpacking an uploaded Doee directory (`.tar.gz`) with bounds.
//!
//! The archive is untrusted: sizes are checked while decompressing (a gzip
//! bomb stops at the limit, not after), only regular files and directories
//! are written, every path must stay inside the target, and the target is
//! removed again on any error, so nothing half-written remains.

use flate2::read::GzDecoder;
use std::cell::Cell;
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_compressed: 16 << 20,
            max_unpacked: 128 << 20,
            max_entries: 10_000,
            max_ratio: 200,
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

/// Unpacks `archive` into `target` (which must not exist). On error the
/// target is removed. Returns the directory holding `doee.toml`: the target
/// itself, or its single top-level directory if the archive wraps one.
pub fn unpack(archive: &[u8], target: &Path, limits: &Limits) -> Result<PathBuf, ArchiveError> {
    if archive.len() as u64 > limits.max_compressed {
        return Err(ArchiveError::TooLarge(format!(
            "the archive is {} bytes; the limit is {} bytes",
            archive.len(),
            limits.max_compressed
        )));
    }
    fs::create_dir(target).map_err(ArchiveError::Io)?;
    match unpack_into(archive, target, limits) {
        Ok(()) => root_of(target),
        Err(err) => {
            let _ = fs::remove_dir_all(target);
            Err(err)
        }
    }
}

fn unpack_into(archive: &[u8], target: &Path, limits: &Limits) -> Result<(), ArchiveError> {
    let by_ratio = (archive.len() as u64)
        .saturating_mul(limits.max_ratio)
        .max(1 << 20);
    let (max, why) = if by_ratio < limits.max_unpacked {
        (
            by_ratio,
            "the archive decompresses to more than its allowed ratio (a gzip bomb?)",
        )
    } else {
        (
            limits.max_unpacked,
            "the archive decompresses to more than the unpacked size limit",
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
            ArchiveError::TooLarge(why.to_string())
        } else {
            match err.kind() {
                io::ErrorKind::Other
                | io::ErrorKind::InvalidData
                | io::ErrorKind::InvalidInput
                | io::ErrorKind::UnexpectedEof => ArchiveError::Malformed(err.to_string()),
                _ => ArchiveError::Io(err),
            }
        }
    };
    let mut tar = tar::Archive::new(stream);
    let entries = tar.entries().map_err(classify)?;
    let mut count = 0u32;
    for entry in entries {
        let mut entry = entry.map_err(classify)?;
        count += 1;
        if count > limits.max_entries {
            return Err(ArchiveError::TooLarge(format!(
                "the archive has more than {} entries",
                limits.max_entries
            )));
        }
        let raw_path = entry.path().map_err(classify)?.into_owned();
        let shown = raw_path.display().to_string();
        let relative = safe_path(&raw_path)?;
        let kind = entry.header().entry_type();
        if relative.as_os_str().is_empty() {
            continue; // "./"
        }
        let dest = target.join(&relative);
        if kind.is_dir() {
            fs::create_dir_all(&dest).map_err(ArchiveError::Io)?;
            continue;
        }
        if !kind.is_file() {
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
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(ArchiveError::Io)?;
        }
        let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => {
                    ArchiveError::Refused(format!("\"{shown}\" appears twice in the archive"))
                }
                _ => ArchiveError::Io(e),
            })?;
        io::copy(&mut entry, &mut file).map_err(classify)?;
        file.flush().map_err(ArchiveError::Io)?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
                .map_err(ArchiveError::Io)?;
        }
    }
    Ok(())
}

/// A path made only of normal components (and `.`), at most 16 deep.
fn safe_path(path: &Path) -> Result<PathBuf, ArchiveError> {
    let shown = path.display();
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
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
    if out.components().count() > 16 || out.as_os_str().len() > 1024 {
        return Err(ArchiveError::Refused(format!(
            "\"{shown}\" is nested too deep"
        )));
    }
    Ok(out)
}

fn root_of(target: &Path) -> Result<PathBuf, ArchiveError> {
    if target.join(crate::manifest::FILE).is_file() {
        return Ok(target.to_path_buf());
    }
    let entries: Vec<_> = fs::read_dir(target)
        .map_err(ArchiveError::Io)?
        .filter_map(Result::ok)
        .collect();
    if let [only] = &entries[..] {
        let inner = only.path();
        if inner.is_dir() && inner.join(crate::manifest::FILE).is_file() {
            return Ok(inner);
        }
    }
    Err(ArchiveError::Refused(format!(
        "the archive has no {} at its top level",
        crate::manifest::FILE
    )))
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
