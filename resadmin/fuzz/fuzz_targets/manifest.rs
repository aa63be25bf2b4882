//! Any text as a `doee.toml`: the parser never panics, and every error is
//! the manifest's, saying where or what.
#![no_main]

use isms_resadmin::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(err) = Manifest::parse(text) {
        let message = err.to_string();
        assert!(message.starts_with("doee.toml: "), "{message}");
        assert!(
            message.contains('`') || message.contains("(line ") || message.contains("bytes"),
            "{message}"
        );
    }
});
