//! Any bytes as an upload: the unpacker never panics, writes only inside
//! its target, and leaves the target whole or absent. An input whose first
//! byte is odd is the tar itself, compressed here, so the fuzzer reaches
//! the tar parser instead of spending itself on deflate.
#![no_main]

use isms_resadmin::archive::{Limits, unpack};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fn parent() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("isms-fuzz-unpack-{}", std::process::id()))
}

fuzz_target!(|input: &[u8]| {
    let data = match input.split_first() {
        Some((first, tar)) if first % 2 == 1 => {
            use std::io::Write;
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(tar).unwrap();
            encoder.finish().unwrap()
        }
        _ => input.to_vec(),
    };
    let data = &data[..];
    let parent = parent();
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).unwrap();
    let target = parent.join("target");
    // Small bounds keep each run fast; the bounds themselves are tested
    // exactly in resadmin/tests/archive.rs.
    let limits = Limits {
        max_compressed: 1 << 20,
        max_unpacked: 4 << 20,
        max_entries: 1000,
        ..Limits::default()
    };
    let result = unpack(data, &target, &limits);
    let names: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    match result {
        Ok(root) => {
            assert_eq!(names, ["target"]);
            assert!(root.starts_with(&target));
            assert!(root.join("doee.toml").is_file());
        }
        Err(err) => {
            assert!(names.is_empty(), "{err} left {names:?}");
            assert!(
                !matches!(err, isms_resadmin::archive::ArchiveError::Io(_)),
                "the archive's fault reported as I/O: {err}"
            );
        }
    }
    std::fs::remove_dir_all(&parent).unwrap();
});
