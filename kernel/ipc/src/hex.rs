//! Hex text of keys and tokens, one way for every service.

/// `bytes` as lowercase hex.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from exactly 64 hex digits, or `None`.
pub fn decode32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips_and_refuses_what_is_not() {
        let key = [0xa5u8; 32];
        assert_eq!(super::decode32(&super::encode(&key)), Some(key));
        assert_eq!(super::decode32("zz"), None);
        assert_eq!(
            super::decode32(&"é".repeat(32)),
            None,
            "not ASCII, no panic"
        );
        assert_eq!(super::decode32(&"g".repeat(64)), None);
    }
}
