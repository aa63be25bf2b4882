//! Dotted paths into documents: `a.b.c`, and `a.0` for an array element.

use std::cmp::Ordering;
use std::fmt;

/// A field path, parsed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    text: String,
    parts: Vec<String>,
}

impl Path {
    /// Parses `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Path, String> {
        let bad = |why: &str| Err(format!("bad field path `{}`: {why}", text.escape_debug()));
        if text.is_empty() {
            return bad("it is empty");
        }
        if text.contains('\0') {
            return bad("it contains NUL");
        }
        let parts: Vec<String> = text.split('.').map(str::to_string).collect();
        for part in &parts {
            if part.is_empty() {
                return bad("an empty part (two dots, or a dot at an end)");
            }
            if part.starts_with('$') {
                return bad(
                    "a part starts with `$` (positional and other operators in paths are not supported)",
                );
            }
        }
        Ok(Path {
            text: text.to_string(),
            parts,
        })
    }

    /// `_id`.
    pub fn id() -> Path {
        Path {
            text: "_id".to_string(),
            parts: vec!["_id".to_string()],
        }
    }

    /// The parts between the dots.
    pub fn parts(&self) -> &[String] {
        &self.parts
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `self` is `other` or leads into it (`a` and `a.b`).
    pub fn is_prefix_of(&self, other: &Path) -> bool {
        self.parts.len() <= other.parts.len()
            && self.parts.iter().zip(&other.parts).all(|(a, b)| a == b)
    }

    /// The order in which MongoDB (5.0 on) applies the fields of an update:
    /// part by part, numeric names by number, others by bytes. It decides
    /// where new fields land, so both backends must follow it.
    pub fn update_order(&self, other: &Path) -> Ordering {
        for (a, b) in self.parts.iter().zip(&other.parts) {
            let c = match (array_index(a), array_index(b)) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => a.as_bytes().cmp(b.as_bytes()),
            };
            if c != Ordering::Equal {
                return c;
            }
        }
        self.parts.len().cmp(&other.parts.len())
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The array index a path part names: canonical decimal digits only, so
/// `0` and `12` are indexes and `00` or `+1` are field names (as mongod).
pub fn array_index(part: &str) -> Option<usize> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if part.len() > 1 && part.starts_with('0') {
        return None;
    }
    part.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(Path::parse("a.b.0").unwrap().parts(), ["a", "b", "0"]);
        for (bad, why) in [
            ("", "empty"),
            ("a..b", "empty part"),
            (".a", "empty part"),
            ("a.", "empty part"),
            ("a.$", "starts with `$`"),
            ("$where", "starts with `$`"),
            ("a\0b", "NUL"),
        ] {
            let e = Path::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn indexes_and_order() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("12"), Some(12));
        assert_eq!(array_index("01"), None);
        assert_eq!(array_index("-1"), None);
        assert_eq!(array_index("a"), None);
        let p = |s| Path::parse(s).unwrap();
        assert_eq!(p("a.9").update_order(&p("a.10")), Ordering::Less);
        assert_eq!(p("a.b").update_order(&p("a-c")), Ordering::Less);
        assert_eq!(p("b").update_order(&p("a")), Ordering::Greater);
        assert!(p("a").is_prefix_of(&p("a.b")));
        assert!(!p("a").is_prefix_of(&p("ab")));
    }
}
