//! Sort orders: MongoDB's, across types, with `_id` as the last key so that
//! ties come back in the same order from both backends (MongoDB leaves
//! them unspecified).

use super::path::{Path, array_index};
use super::value::{NULL, Object, Value, compare};
use std::cmp::Ordering;

/// A validated sort order.
#[derive(Clone, Debug, PartialEq)]
pub struct Sort {
    keys: Vec<(Path, Direction)>,
}

/// Ascending or descending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `1`
    Ascending,
    /// `-1`
    Descending,
}

impl Sort {
    /// Validates `{"a": 1, "b": -1}` (`None`: by `_id`).
    pub fn parse(spec: Option<&Object>) -> Result<Sort, String> {
        let mut keys = Vec::new();
        for (key, value) in spec.into_iter().flat_map(Object::iter) {
            let path = Path::parse(key).map_err(|e| format!("{e} in the sort"))?;
            let direction = match value {
                Value::Int(1) => Direction::Ascending,
                Value::Int(-1) => Direction::Descending,
                Value::Float(f) if *f == 1.0 => Direction::Ascending,
                Value::Float(f) if *f == -1.0 => Direction::Descending,
                other => {
                    return Err(format!(
                        "the sort direction of `{path}` must be 1 or -1, got {}",
                        if other.is_number() {
                            other.to_json()
                        } else {
                            other.kind().to_string()
                        }
                    ));
                }
            };
            keys.push((path, direction));
        }
        if !keys.iter().any(|(p, _)| p.as_str() == "_id") {
            keys.push((Path::id(), Direction::Ascending));
        }
        Ok(Sort { keys })
    }

    /// By `_id`, ascending.
    pub fn by_id() -> Sort {
        Sort {
            keys: vec![(Path::id(), Direction::Ascending)],
        }
    }

    /// The sort document to send to MongoDB (with the `_id` tiebreaker).
    pub fn to_object(&self) -> Object {
        let mut object = Object::new();
        for (path, direction) in &self.keys {
            let n = match direction {
                Direction::Ascending => 1,
                Direction::Descending => -1,
            };
            object.push(path.as_str(), Value::Int(n));
        }
        object
    }

    /// The order of two documents.
    pub fn compare(&self, a: &Object, b: &Object) -> Ordering {
        for (path, direction) in &self.keys {
            let c = key_of(a, path, *direction).cmp(&key_of(b, path, *direction));
            let c = match direction {
                Direction::Ascending => c,
                Direction::Descending => c.reverse(),
            };
            if c != Ordering::Equal {
                return c;
            }
        }
        Ordering::Equal
    }

    /// Sorts `docs` in place.
    pub fn sort(&self, docs: &mut [Object]) {
        docs.sort_by(|a, b| self.compare(a, b));
    }
}

/// What a document sorts by for one key.
#[derive(Clone, Copy, Debug)]
enum Key<'a> {
    /// An empty array has no element to stand for it: mongod sorts it
    /// below null.
    EmptyArray,
    Value(&'a Value),
}

impl PartialEq for Key<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Key<'_> {}

impl PartialOrd for Key<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Key::EmptyArray, Key::EmptyArray) => Ordering::Equal,
            (Key::EmptyArray, _) => Ordering::Less,
            (_, Key::EmptyArray) => Ordering::Greater,
            (Key::Value(a), Key::Value(b)) => compare(a, b),
        }
    }
}

/// mongod's sort key: the values the path reaches (through objects, and
/// through an array by index and into elements that have the field); an
/// array reached by name stands for its smallest element ascending, its
/// largest descending; several values likewise; none at all is null.
fn key_of<'a>(doc: &'a Object, path: &Path, direction: Direction) -> Key<'a> {
    let mut parts = path.parts().iter();
    let Some(first) = parts.next() else {
        return Key::Value(&NULL);
    };
    let mut current: Vec<(&Value, bool)> = doc.get(first).map(|v| (v, false)).into_iter().collect();
    for part in parts {
        let mut next = Vec::new();
        for (value, _) in current {
            match value {
                Value::Object(o) => next.extend(o.get(part).map(|v| (v, false))),
                Value::Array(items) => {
                    if let Some(v) = array_index(part).and_then(|i| items.get(i)) {
                        next.push((v, true));
                    }
                    for item in items {
                        if let Value::Object(o) = item {
                            next.extend(o.get(part).map(|v| (v, false)));
                        }
                    }
                }
                _ => {}
            }
        }
        current = next;
    }
    let pick = |keys: &mut dyn Iterator<Item = Key<'a>>| match direction {
        Direction::Ascending => keys.min(),
        Direction::Descending => keys.max(),
    };
    let mut keys = current
        .into_iter()
        .filter_map(|(value, by_index)| match value {
            Value::Array(items) if !by_index => {
                if items.is_empty() {
                    Some(Key::EmptyArray)
                } else {
                    pick(&mut items.iter().map(Key::Value))
                }
            }
            _ => Some(Key::Value(value)),
        });
    pick(&mut keys).unwrap_or(Key::Value(&NULL))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn order(sort: &str, docs: &[&str]) -> String {
        let sort = Value::parse(sort).unwrap();
        let sort = Sort::parse(sort.as_object()).unwrap();
        let mut docs: Vec<Object> = docs
            .iter()
            .map(|d| Value::parse(d).unwrap().as_object().unwrap().clone())
            .collect();
        sort.sort(&mut docs);
        docs.iter()
            .map(|d| match d.get("_id") {
                Some(Value::String(s)) => s.clone(),
                _ => unreachable!(),
            })
            .collect()
    }

    use crate::docs::SHAPES as DOCS;

    #[test]
    fn sorts_like_mongod() {
        // As SecantusDB answered, which records mongod 8.2's order.
        assert_eq!(order(r#"{"n":1}"#, DOCS), "idejklmrafqbpcgoh");
        assert_eq!(order(r#"{"n":-1}"#, DOCS), "hogcpfrbaqdejklmi");
        assert_eq!(order(r#"{"a.b":1}"#, DOCS), "abcdefghilopqrkmj");
        assert_eq!(
            order(r#"{}"#, &["{\"_id\":\"b\"}", "{\"_id\":\"a\"}"]),
            "ab"
        );
    }

    #[test]
    fn index_parts_do_not_descend() {
        let docs = [
            r#"{"_id":"a","x":[[5]]}"#,
            r#"{"_id":"b","x":[7]}"#,
            r#"{"_id":"c","x":[{"k":1}]}"#,
        ];
        // `x.0` of a is the array [5] (arrays sort after objects), of b
        // the number 7, of c an object.
        assert_eq!(order(r#"{"x.0":1}"#, &docs), "bca");
    }

    #[test]
    fn refuses_bad_directions() {
        for (spec, message) in [
            (
                r#"{"a":2}"#,
                "the sort direction of `a` must be 1 or -1, got 2",
            ),
            (r#"{"a":"asc"}"#, "must be 1 or -1, got a string"),
            (r#"{"a.":1}"#, "bad field path `a.`"),
        ] {
            let spec = Value::parse(spec).unwrap();
            let e = Sort::parse(spec.as_object()).unwrap_err();
            assert!(e.contains(message), "{e}");
        }
        let spec = Value::parse(r#"{"b":-1,"_id":-1}"#).unwrap();
        assert_eq!(Sort::parse(spec.as_object()).unwrap().to_object().len(), 2);
    }
}
