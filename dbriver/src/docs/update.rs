//! Updates: `$set`, `$inc` and `$unset` on dotted paths, with mongod's
//! rules. The embedded store applies them here; for MongoDB they are
//! applied here first to check them (so a bad update fails the same way on
//! both, before any document changes), then sent to the server.

use super::path::{Path, array_index};
use super::value::{Object, Value, check_keys};

/// The update operators, for messages.
const OPERATORS: &str = "$set, $inc, $unset";

/// Past this index, `$set` refuses to pad an array with nulls (mongod's
/// limit too).
const MAX_PADDING: usize = 1_500_000;

/// A validated update.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// In the order mongod applies them (see [`Path::update_order`]).
    changes: Vec<(Path, Change)>,
}

/// One change.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// `$set`: the value.
    Set(Value),
    /// `$inc`: the amount (an integer or a float).
    Inc(Value),
    /// `$unset`.
    Unset,
}

impl Change {
    fn operator(&self) -> &'static str {
        match self {
            Change::Set(_) => "$set",
            Change::Inc(_) => "$inc",
            Change::Unset => "$unset",
        }
    }
}

impl Update {
    /// Validates an update document.
    pub fn parse(spec: &Value) -> Result<Update, String> {
        let Value::Object(spec) = spec else {
            return Err(format!(
                "the update must be an object of operators ({OPERATORS}), got {}",
                spec.kind()
            ));
        };
        if spec.is_empty() {
            return Err(format!(
                "the update is empty: give at least one of {OPERATORS}"
            ));
        }
        let mut changes = Vec::new();
        for (op, fields) in spec.iter() {
            if !op.starts_with('$') {
                return Err(format!(
                    "the update names the field `{}` where an operator belongs: write {{\"$set\": {{\"{}\": …}}}} (replacing whole documents is not supported)",
                    op.escape_debug(),
                    op.escape_debug()
                ));
            }
            if !matches!(op, "$set" | "$inc" | "$unset") {
                return Err(format!(
                    "unknown update operator `{}` (supported: {OPERATORS})",
                    op.escape_debug()
                ));
            }
            let Value::Object(fields) = fields else {
                return Err(format!(
                    "`{op}` needs an object of fields, got {}",
                    fields.kind()
                ));
            };
            for (key, value) in fields.iter() {
                let path = Path::parse(key).map_err(|e| format!("{e} in `{op}`"))?;
                if path.parts()[0] == "_id" {
                    return Err(format!("`{op}` may not change `_id` (`{path}`)"));
                }
                let change = match op {
                    "$set" => {
                        check_keys(value, path.as_str())
                            .map_err(|e| format!("`$set` of `{path}`: {e}"))?;
                        Change::Set(value.clone())
                    }
                    "$inc" if value.is_number() => Change::Inc(value.clone()),
                    "$inc" => {
                        return Err(format!(
                            "`$inc` of `{path}` needs a number, got {}",
                            value.kind()
                        ));
                    }
                    _ => Change::Unset,
                };
                changes.push((path, change));
            }
        }
        changes.sort_by(|(a, _), (b, _)| a.update_order(b));
        // Sorted, a path that leads into another is right before it.
        for pair in changes.windows(2) {
            let ((a, x), (b, y)) = (&pair[0], &pair[1]);
            if a.is_prefix_of(b) {
                return Err(format!(
                    "the update changes both `{a}` ({}) and `{b}` ({}), which overlap",
                    x.operator(),
                    y.operator()
                ));
            }
        }
        Ok(Update { changes })
    }

    /// The update document for MongoDB, each operator's fields in the
    /// order mongod applies them (a server that applies them as given then
    /// lands new fields in the same places).
    pub fn to_object(&self) -> Object {
        let mut object = Object::new();
        for op in ["$set", "$inc", "$unset"] {
            let fields: Object = self
                .changes
                .iter()
                .filter(|(_, c)| c.operator() == op)
                .map(|(path, change)| {
                    let value = match change {
                        Change::Set(v) | Change::Inc(v) => v.clone(),
                        Change::Unset => Value::String(String::new()),
                    };
                    (path.as_str().to_string(), value)
                })
                .collect();
            if !fields.is_empty() {
                object.push(op, Value::Object(fields));
            }
        }
        object
    }

    /// Whether it changes nothing (`{"$set": {}}`).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether applying can fail or grow a document: anything but `$unset`.
    pub fn can_fail_or_grow(&self) -> bool {
        self.changes
            .iter()
            .any(|(_, c)| !matches!(c, Change::Unset))
    }

    /// Applies the update to `doc`. The error names the document by `_id`.
    pub fn apply(&self, doc: &mut Object) -> Result<(), String> {
        let id = doc
            .get("_id")
            .map(Value::to_json)
            .unwrap_or_else(|| "?".to_string());
        for (path, change) in &self.changes {
            apply_one(doc, path, change)
                .map_err(|e| format!("{e} in the document with `_id` {id}"))?;
        }
        Ok(())
    }
}

fn apply_one(doc: &mut Object, path: &Path, change: &Change) -> Result<(), String> {
    let parts = path.parts();
    let (last, leading) = match parts.split_last() {
        Some(split) => split,
        None => return Ok(()),
    };
    if let Change::Unset = change {
        unset(doc, leading, last);
        return Ok(());
    }
    // Walk to the parent, creating objects where fields are missing.
    let mut here = Slot::Object(doc);
    for (i, part) in leading.iter().enumerate() {
        let prefix = || parts[..i].join(".");
        here = here.child(part, path, &prefix)?;
    }
    let prefix = leading.join(".");
    match change {
        Change::Set(value) => here.put(last, value.clone(), path, &prefix),
        Change::Inc(amount) => {
            let sum = match here.get(last) {
                None => amount.clone(),
                Some(current) => add(current, amount, path)?,
            };
            here.put(last, sum, path, &prefix)
        }
        Change::Unset => Ok(()),
    }
}

/// Where a walk stands: inside an object or an array.
enum Slot<'a> {
    Object(&'a mut Object),
    Array(&'a mut Vec<Value>),
}

impl<'a> Slot<'a> {
    fn get(&self, part: &str) -> Option<&Value> {
        match self {
            Slot::Object(o) => o.get(part),
            Slot::Array(items) => array_index(part).and_then(|i| items.get(i)),
        }
    }

    /// The container at `part`, created as an object when missing.
    fn child(
        self,
        part: &str,
        path: &Path,
        prefix: &dyn Fn() -> String,
    ) -> Result<Slot<'a>, String> {
        let slot = match self {
            Slot::Object(o) => {
                if o.get(part).is_none() {
                    o.push(part, Value::Object(Object::new()));
                }
                o.get_mut(part)
            }
            Slot::Array(items) => {
                let i = index_in(part, path, &prefix())?;
                if i >= items.len() {
                    items.resize(i, Value::Null);
                    items.push(Value::Object(Object::new()));
                }
                items.get_mut(i)
            }
        };
        match slot {
            Some(Value::Object(o)) => Ok(Slot::Object(o)),
            Some(Value::Array(items)) => Ok(Slot::Array(items)),
            Some(other) => {
                let at = if prefix().is_empty() {
                    part.to_string()
                } else {
                    format!("{}.{part}", prefix())
                };
                Err(format!(
                    "cannot change `{path}`: `{at}` holds {}, not an object or array",
                    other.kind()
                ))
            }
            None => Err(format!("cannot change `{path}`")),
        }
    }

    fn put(self, part: &str, value: Value, path: &Path, prefix: &str) -> Result<(), String> {
        match self {
            Slot::Object(o) => o.insert(part, value),
            Slot::Array(items) => {
                let i = index_in(part, path, prefix)?;
                if i >= items.len() {
                    items.resize(i + 1, Value::Null);
                }
                items[i] = value;
            }
        }
        Ok(())
    }
}

fn index_in(part: &str, path: &Path, prefix: &str) -> Result<usize, String> {
    match array_index(part) {
        Some(i) if i <= MAX_PADDING => Ok(i),
        Some(i) => Err(format!(
            "cannot change `{path}`: index {i} is too far past the end of `{prefix}`"
        )),
        None => Err(format!(
            "cannot change `{path}`: `{prefix}` is an array, so `{}` would have to be an index",
            part.escape_debug()
        )),
    }
}

fn unset(doc: &mut Object, leading: &[String], last: &str) {
    let mut here = Slot::Object(doc);
    for part in leading {
        let next = match here {
            Slot::Object(o) => o.get_mut(part),
            Slot::Array(items) => array_index(part).and_then(|i| items.get_mut(i)),
        };
        here = match next {
            Some(Value::Object(o)) => Slot::Object(o),
            Some(Value::Array(items)) => Slot::Array(items),
            _ => return,
        };
    }
    match here {
        Slot::Object(o) => {
            o.remove(last);
        }
        // mongod leaves a null where an array element was unset.
        Slot::Array(items) => {
            if let Some(item) = array_index(last).and_then(|i| items.get_mut(i)) {
                *item = Value::Null;
            }
        }
    }
}

fn add(current: &Value, amount: &Value, path: &Path) -> Result<Value, String> {
    let sum = match (current, amount) {
        (Value::Int(a), Value::Int(b)) => {
            return a.checked_add(*b).map(Value::Int).ok_or_else(|| {
                format!("`$inc` of `{path}` overflows a 64-bit integer ({a} + {b})")
            });
        }
        (Value::Int(a), Value::Float(b)) => *a as f64 + b,
        (Value::Float(a), Value::Int(b)) => a + *b as f64,
        (Value::Float(a), Value::Float(b)) => a + b,
        (other, _) => {
            return Err(format!(
                "`$inc` of `{path}` needs a number there, but it holds {}",
                other.kind()
            ));
        }
    };
    if sum.is_finite() {
        Ok(Value::Float(sum))
    } else {
        Err(format!(
            "`$inc` of `{path}` gives a number too large for a float"
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run(update: &str, doc: &str) -> Result<String, String> {
        let update = Update::parse(&Value::parse(update).unwrap())?;
        let mut doc = Value::parse(doc).unwrap().as_object().unwrap().clone();
        update.apply(&mut doc)?;
        Ok(Value::Object(doc).to_json())
    }

    #[test]
    fn applies_like_mongod() {
        for (update, doc, after) in [
            (
                r#"{"$set":{"b":1,"a":2,"a-c":0,"x.z":1,"x.y":2}}"#,
                r#"{"_id":1}"#,
                r#"{"_id":1,"a":2,"a-c":0,"b":1,"x":{"y":2,"z":1}}"#,
            ),
            (
                r#"{"$set":{"n":5}}"#,
                r#"{"_id":1,"n":1,"m":2}"#,
                r#"{"_id":1,"n":5,"m":2}"#,
            ),
            (
                r#"{"$set":{"a.1":9,"a.4":7}}"#,
                r#"{"_id":1,"a":[1,2]}"#,
                r#"{"_id":1,"a":[1,9,null,null,7]}"#,
            ),
            (
                r#"{"$set":{"a.3.b":1}}"#,
                r#"{"_id":1,"a":[0]}"#,
                r#"{"_id":1,"a":[0,null,null,{"b":1}]}"#,
            ),
            (
                r#"{"$set":{"a.10":1,"a.9":1}}"#,
                r#"{"_id":1,"a":{}}"#,
                r#"{"_id":1,"a":{"9":1,"10":1}}"#,
            ),
            (
                r#"{"$inc":{"n":2,"f":1.5,"new":3}}"#,
                r#"{"_id":1,"n":1,"f":1}"#,
                r#"{"_id":1,"n":3,"f":2.5,"new":3}"#,
            ),
            (
                r#"{"$inc":{"x.y":-1}}"#,
                r#"{"_id":1}"#,
                r#"{"_id":1,"x":{"y":-1}}"#,
            ),
            (
                r#"{"$unset":{"a.b":"","c":1,"zz":"","s.t":""}}"#,
                r#"{"_id":1,"a":{"b":1,"k":2},"c":3,"s":5}"#,
                r#"{"_id":1,"a":{"k":2},"s":5}"#,
            ),
            (
                r#"{"$unset":{"b.0":""}}"#,
                r#"{"_id":1,"b":[1,2]}"#,
                r#"{"_id":1,"b":[null,2]}"#,
            ),
            (r#"{"$set":{}}"#, r#"{"_id":1}"#, r#"{"_id":1}"#),
        ] {
            assert_eq!(run(update, doc).unwrap(), after, "{update} on {doc}");
        }
    }

    #[test]
    fn refuses_bad_updates() {
        for (update, message) in [
            (r#"{}"#, "the update is empty"),
            (r#"[]"#, "must be an object of operators"),
            (
                r#"{"n":1}"#,
                "names the field `n` where an operator belongs",
            ),
            (
                r#"{"$push":{"a":1}}"#,
                "unknown update operator `$push` (supported: $set, $inc, $unset)",
            ),
            (
                r#"{"$set":1}"#,
                "`$set` needs an object of fields, got a number",
            ),
            (r#"{"$set":{"_id":2}}"#, "`$set` may not change `_id`"),
            (r#"{"$unset":{"_id.x":1}}"#, "`$unset` may not change `_id`"),
            (
                r#"{"$inc":{"n":"1"}}"#,
                "`$inc` of `n` needs a number, got a string",
            ),
            (
                r#"{"$set":{"a":1,"a.b":2}}"#,
                "changes both `a` ($set) and `a.b` ($set), which overlap",
            ),
            (
                r#"{"$set":{"a":1},"$inc":{"a":2}}"#,
                "changes both `a` ($set) and `a` ($inc)",
            ),
            (r#"{"$set":{"a.$.b":1}}"#, "starts with `$`"),
            (
                r#"{"$set":{"a":{"$x":1}}}"#,
                "`$set` of `a`: the key `$x` in `a` starts with `$`",
            ),
        ] {
            let e = Update::parse(&Value::parse(update).unwrap()).unwrap_err();
            assert!(e.contains(message), "{update}: {e}");
        }
    }

    #[test]
    fn refuses_impossible_changes() {
        for (update, doc, message) in [
            (
                r#"{"$inc":{"n":1}}"#,
                r#"{"_id":"c","n":"1"}"#,
                "`$inc` of `n` needs a number there, but it holds a string in the document with `_id` \"c\"",
            ),
            (
                r#"{"$inc":{"n":1}}"#,
                r#"{"_id":1,"n":9223372036854775807}"#,
                "overflows a 64-bit integer",
            ),
            (
                r#"{"$inc":{"n":1e308}}"#,
                r#"{"_id":1,"n":1.7e308}"#,
                "too large for a float",
            ),
            (
                r#"{"$set":{"n.q":1}}"#,
                r#"{"_id":1,"n":3}"#,
                "cannot change `n.q`: `n` holds a number, not an object or array",
            ),
            (
                r#"{"$set":{"a.b.c":1}}"#,
                r#"{"_id":1,"a":{"b":null}}"#,
                "`a.b` holds null",
            ),
            (
                r#"{"$set":{"a.b":1}}"#,
                r#"{"_id":1,"a":[1]}"#,
                "`a` is an array, so `b` would have to be an index",
            ),
            (
                r#"{"$set":{"a.2000000":1}}"#,
                r#"{"_id":1,"a":[]}"#,
                "index 2000000 is too far past the end of `a`",
            ),
        ] {
            let e = run(update, doc).unwrap_err();
            assert!(e.contains(message), "{update} on {doc}: {e}");
        }
    }

    #[test]
    fn sends_mongodb_the_fields_in_applying_order() {
        let update = Update::parse(
            &Value::parse(r#"{"$unset":{"u":1},"$set":{"b":1,"a":[1]},"$inc":{"n":1}}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(
            Value::Object(update.to_object()).to_json(),
            r#"{"$set":{"a":[1],"b":1},"$inc":{"n":1},"$unset":{"u":""}}"#
        );
        assert!(update.can_fail_or_grow());
        let unset = Update::parse(&Value::parse(r#"{"$unset":{"u":1}}"#).unwrap()).unwrap();
        assert!(!unset.can_fail_or_grow());
    }
}
