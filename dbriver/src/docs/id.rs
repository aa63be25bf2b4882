//! Document ids the platform generates: 24 hex digits laid out as a BSON
//! ObjectId (seconds since the epoch, 5 random bytes per process, a
//! counter), but a string on both backends, so a Doee sees the same
//! `_id` whichever store holds its documents. They sort by creation time
//! to the second.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Makes ids.
pub struct IdGenerator {
    random: [u8; 5],
    counter: AtomicU32,
}

impl IdGenerator {
    /// A generator with fresh random bytes.
    pub fn new() -> IdGenerator {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            // No entropy source: fall back on the clock and the process id,
            // still unique enough per process for ids.
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            seed = ((nanos as u64) ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
        }
        let mut random = [0u8; 5];
        random.copy_from_slice(&seed[..5]);
        let counter = u32::from_le_bytes([seed[5], seed[6], seed[7], 0]);
        IdGenerator {
            random,
            counter: AtomicU32::new(counter),
        }
    }

    /// The next id.
    pub fn next(&self) -> String {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        let count = self.counter.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&seconds.to_be_bytes());
        bytes[4..9].copy_from_slice(&self.random);
        bytes[9..].copy_from_slice(&count.to_be_bytes()[1..]);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Default for IdGenerator {
    fn default() -> Self {
        IdGenerator::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_hex_and_start_with_the_time() {
        let ids = IdGenerator::new();
        let all: HashSet<String> = (0..10_000).map(|_| ids.next()).collect();
        assert_eq!(all.len(), 10_000);
        for id in &all {
            assert_eq!(id.len(), 24);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let id = ids.next();
        let seconds = u64::from_str_radix(&id[..8], 16).unwrap_or(0);
        assert!(now.abs_diff(seconds) < 5, "{id}");
    }
}
