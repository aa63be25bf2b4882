//! Projections: `{"a": 1, "b.c": 1}` keeps only those fields (and `_id`
//! unless `"_id": 0`), `{"a": 0}` drops them. Fields come back in the
//! document's order, as from MongoDB.

use super::path::Path;
use super::value::{Object, Value};

/// A validated projection.
#[derive(Clone, Debug, PartialEq)]
pub enum Projection {
    /// Whole documents.
    All,
    /// Only these fields, plus `_id` when `id`.
    Include {
        /// The fields.
        fields: Tree,
        /// Whether `_id` comes too.
        id: bool,
    },
    /// Everything but these fields.
    Exclude(Tree),
}

/// The fields of a projection, as a tree of path parts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tree(Vec<(String, Node)>);

#[derive(Clone, Debug, PartialEq)]
enum Node {
    /// The whole field.
    Whole,
    /// Some fields inside it.
    Inside(Tree),
}

impl Tree {
    fn get(&self, key: &str) -> Option<&Node> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, n)| n)
    }

    /// Adds a path; refuses one that overlaps another (`a` and `a.b`), as
    /// mongod does ("path collision").
    fn add(&mut self, path: &Path, parts: &[String]) -> Result<(), String> {
        let overlap = || {
            Err(format!(
                "the projection names `{path}` and a path inside or around it; name each field once"
            ))
        };
        let Some((first, rest)) = parts.split_first() else {
            return overlap();
        };
        match self.0.iter_mut().find(|(k, _)| k == first) {
            None if rest.is_empty() => self.0.push((first.clone(), Node::Whole)),
            None => {
                let mut inside = Tree::default();
                inside.add(path, rest)?;
                self.0.push((first.clone(), Node::Inside(inside)));
            }
            Some((_, Node::Inside(inside))) if !rest.is_empty() => inside.add(path, rest)?,
            Some(_) => return overlap(),
        }
        Ok(())
    }
}

impl Projection {
    /// Validates a projection object (`None` or `{}`: whole documents).
    pub fn parse(spec: Option<&Object>) -> Result<Projection, String> {
        let Some(spec) = spec else {
            return Ok(Projection::All);
        };
        let mut id = None;
        let mut tree = Tree::default();
        let mut mode: Option<(bool, &str)> = None;
        for (key, value) in spec.iter() {
            let include = match value {
                Value::Bool(b) => *b,
                Value::Int(i) => *i != 0,
                Value::Float(f) => *f != 0.0,
                other => {
                    return Err(format!(
                        "the projection of `{}` must be 1 or 0 (or true or false), got {}",
                        key.escape_debug(),
                        other.kind()
                    ));
                }
            };
            if key == "_id" {
                id = Some(include);
                continue;
            }
            let path = Path::parse(key).map_err(|e| format!("{e} in the projection"))?;
            match mode {
                None => mode = Some((include, key)),
                Some((first, first_key)) if first != include => {
                    let (kept, dropped) = if first {
                        (first_key, key)
                    } else {
                        (key, first_key)
                    };
                    return Err(format!(
                        "the projection both keeps `{kept}` and drops `{dropped}`: use only 1s or only 0s (`_id` alone may be 0 among 1s)"
                    ));
                }
                Some(_) => {}
            }
            tree.add(&path, path.parts())?;
        }
        Ok(match (mode, id) {
            (Some((true, _)), id) => Projection::Include {
                fields: tree,
                id: id.unwrap_or(true),
            },
            (Some((false, _)), id) | (None, id @ Some(false)) => {
                if id == Some(false) {
                    tree.0.push(("_id".to_string(), Node::Whole));
                }
                Projection::Exclude(tree)
            }
            (None, Some(true)) => Projection::Include {
                fields: tree,
                id: true,
            },
            (None, None) => Projection::All,
        })
    }

    /// Applies the projection.
    pub fn apply(&self, doc: Object) -> Object {
        match self {
            Projection::All => doc,
            Projection::Include { fields, id } => {
                let mut out = Object::new();
                for (key, value) in doc {
                    if key == "_id" {
                        if *id {
                            out.push(key, value);
                        }
                    } else if let Some(node) = fields.get(&key)
                        && let Some(kept) = keep(node, value)
                    {
                        out.push(key, kept);
                    }
                }
                out
            }
            Projection::Exclude(fields) => drop_fields(fields, doc),
        }
    }
}

/// What of `value` an inclusion keeps: inside objects, the named fields;
/// inside arrays, each object or array element projected (scalars go).
fn keep(node: &Node, value: Value) -> Option<Value> {
    let Node::Inside(tree) = node else {
        return Some(value);
    };
    match value {
        Value::Object(object) => {
            let mut out = Object::new();
            for (key, value) in object {
                if let Some(node) = tree.get(&key)
                    && let Some(kept) = keep(node, value)
                {
                    out.push(key, kept);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => Some(Value::Array(
            items
                .into_iter()
                .filter_map(|item| match item {
                    Value::Object(_) | Value::Array(_) => keep(node, item),
                    _ => None,
                })
                .collect(),
        )),
        _ => None,
    }
}

fn drop_fields(tree: &Tree, object: Object) -> Object {
    let mut out = Object::new();
    for (key, value) in object {
        match tree.get(&key) {
            None => out.push(key, value),
            Some(Node::Whole) => {}
            Some(Node::Inside(inner)) => out.push(key, drop_inside(inner, value)),
        }
    }
    out
}

fn drop_inside(tree: &Tree, value: Value) -> Value {
    match value {
        Value::Object(object) => Value::Object(drop_fields(tree, object)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| drop_inside(tree, item))
                .collect(),
        ),
        scalar => scalar,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn project(spec: &str, doc: &str) -> String {
        let spec = Value::parse(spec).unwrap();
        let projection = Projection::parse(spec.as_object()).unwrap();
        let doc = Value::parse(doc).unwrap().as_object().unwrap().clone();
        Value::Object(projection.apply(doc)).to_json()
    }

    const DOC: &str = r#"{"_id":2,"a":{"c":1},"b":[{"b":1,"c":2},5,[{"b":3}]],"s":5}"#;

    #[test]
    fn projects_like_mongod() {
        // As SecantusDB answered (mongod 8.2's behaviour).
        assert_eq!(
            project(r#"{"a.b":1,"b.b":1,"s.t":1}"#, DOC),
            r#"{"_id":2,"a":{},"b":[{"b":1},[{"b":3}]]}"#
        );
        assert_eq!(
            project(r#"{"a.c":0,"b.b":0,"s.t":0}"#, DOC),
            r#"{"_id":2,"a":{},"b":[{"c":2},5,[{}]],"s":5}"#
        );
        assert_eq!(project(r#"{"_id":1}"#, DOC), r#"{"_id":2}"#);
        assert_eq!(
            project(r#"{"_id":0}"#, DOC),
            r#"{"a":{"c":1},"b":[{"b":1,"c":2},5,[{"b":3}]],"s":5}"#
        );
        assert_eq!(
            project(r#"{"s":1,"a":true,"_id":0}"#, DOC),
            r#"{"a":{"c":1},"s":5}"#
        );
        assert_eq!(
            project(r#"{"s":0,"_id":1}"#, DOC),
            r#"{"_id":2,"a":{"c":1},"b":[{"b":1,"c":2},5,[{"b":3}]]}"#
        );
        assert_eq!(project(r#"{}"#, DOC), DOC);
    }

    #[test]
    fn refuses_bad_projections() {
        for (spec, message) in [
            (r#"{"a":1,"b":0}"#, "keeps `a` and drops `b`"),
            (r#"{"a":0,"b":1}"#, "keeps `b` and drops `a`"),
            (
                r#"{"a":1,"a.b":1}"#,
                "names `a.b` and a path inside or around it",
            ),
            (
                r#"{"a.b":1,"a":1}"#,
                "names `a` and a path inside or around it",
            ),
            (r#"{"a":"yes"}"#, "the projection of `a` must be 1 or 0"),
            (
                r#"{"a":{"$slice":1}}"#,
                "must be 1 or 0 (or true or false), got an object",
            ),
            (r#"{"a..b":1}"#, "bad field path"),
        ] {
            let spec = Value::parse(spec).unwrap();
            let e = Projection::parse(spec.as_object()).unwrap_err();
            assert!(e.contains(message), "{spec:?}: {e}");
        }
    }
}
