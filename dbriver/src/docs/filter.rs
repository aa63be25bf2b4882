//! Filters: the subset of MongoDB's query language that SPEC §4 promises,
//! validated here for both backends (so a bad filter gets the same error
//! from either) and evaluated here for the embedded store.
//!
//! Semantics are mongod's (8.x): a field that holds an array matches when
//! the array itself or any element matches; range operators compare only
//! within a type bracket; a missing field equals `null`, so `$ne`, `$nin`
//! and `$exists: false` match it.

use super::path::{Path, array_index};
use super::value::{NULL, Object, Value, bracket, compare, equal};
use std::cmp::Ordering;

/// The field operators, for messages.
const FIELD_OPERATORS: &str = "$eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists";

/// A validated filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// Every one matches (an object's keys, `$and`). Empty: everything.
    All(Vec<Filter>),
    /// At least one matches (`$or`).
    Any(Vec<Filter>),
    /// A condition on the values at a path.
    Field(Path, Condition),
}

/// What the values at a path must satisfy.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `$eq` (and `{path: value}`).
    Eq(Value),
    /// `$ne`.
    Ne(Value),
    /// `$gt`, `$gte`, `$lt`, `$lte`.
    Range(Range, Value),
    /// `$in`.
    In(Vec<Value>),
    /// `$nin`.
    Nin(Vec<Value>),
    /// `$exists`.
    Exists(bool),
}

/// A range operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    /// `$gt`
    Gt,
    /// `$gte`
    Gte,
    /// `$lt`
    Lt,
    /// `$lte`
    Lte,
}

impl Range {
    fn holds(self, c: Ordering) -> bool {
        match self {
            Range::Gt => c == Ordering::Greater,
            Range::Gte => c != Ordering::Less,
            Range::Lt => c == Ordering::Less,
            Range::Lte => c != Ordering::Greater,
        }
    }
}

impl Filter {
    /// Validates a filter document.
    pub fn parse(filter: &Object) -> Result<Filter, String> {
        parse_object(filter, "the filter")
    }

    /// Whether `doc` matches.
    pub fn matches(&self, doc: &Object) -> bool {
        match self {
            Filter::All(all) => all.iter().all(|f| f.matches(doc)),
            Filter::Any(any) => any.iter().any(|f| f.matches(doc)),
            Filter::Field(path, condition) => condition.holds(&resolve(doc, path)),
        }
    }

    /// When the filter can only match documents whose `_id` is one of a
    /// few values (`{_id: x}`, `{_id: {$in: […]}}`, also inside a top-level
    /// `$and`): those values, so a store can look them up instead of
    /// scanning. The caller still applies the whole filter.
    pub fn id_candidates(&self) -> Option<Vec<&Value>> {
        match self {
            Filter::Field(path, condition) if path.as_str() == "_id" => match condition {
                Condition::Eq(v) => Some(vec![v]),
                Condition::In(vs) => Some(vs.iter().collect()),
                _ => None,
            },
            Filter::All(all) => all.iter().find_map(Filter::id_candidates),
            _ => None,
        }
    }
}

fn parse_object(filter: &Object, what: &str) -> Result<Filter, String> {
    let mut all = Vec::new();
    for (key, value) in filter.iter() {
        if let Some(op) = key.strip_prefix('$') {
            let parts = match op {
                "and" | "or" => parse_list(key, value)?,
                _ => {
                    return Err(format!(
                        "unknown operator `{}` at the top of {what} (supported there: $and, $or; on a field: {FIELD_OPERATORS})",
                        key.escape_debug()
                    ));
                }
            };
            all.push(if op == "and" {
                Filter::All(parts)
            } else {
                Filter::Any(parts)
            });
        } else {
            let path = Path::parse(key).map_err(|e| format!("{e} in the filter"))?;
            parse_field(path, value, &mut all)?;
        }
    }
    Ok(if all.len() == 1 {
        all.remove(0)
    } else {
        Filter::All(all)
    })
}

fn parse_list(op: &str, value: &Value) -> Result<Vec<Filter>, String> {
    let items = match value {
        Value::Array(items) if !items.is_empty() => items,
        _ => {
            return Err(format!(
                "`{op}` needs a non-empty array of filters, got {}",
                value.kind()
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(o) => parse_object(o, &format!("`{op}` item {i}")),
            other => Err(format!(
                "`{op}` item {i} must be a filter object, got {}",
                other.kind()
            )),
        })
        .collect()
}

fn parse_field(path: Path, value: &Value, out: &mut Vec<Filter>) -> Result<(), String> {
    let Value::Object(object) = value else {
        out.push(Filter::Field(path, Condition::Eq(value.clone())));
        return Ok(());
    };
    let operators = object.iter().filter(|(k, _)| k.starts_with('$')).count();
    if operators == 0 {
        // An object literal: the field must equal it exactly.
        check_operand(value, &path, "the value")?;
        out.push(Filter::Field(path, Condition::Eq(value.clone())));
        return Ok(());
    }
    if operators != object.len() {
        let field = object
            .iter()
            .find(|(k, _)| !k.starts_with('$'))
            .map(|(k, _)| k)
            .unwrap_or("");
        return Err(format!(
            "the filter at `{path}` mixes operators with the field name `{}`; use either {{\"$op\": value}} or an object to match exactly",
            field.escape_debug()
        ));
    }
    for (op, arg) in object.iter() {
        let condition = match op {
            "$eq" => Condition::Eq(arg.clone()),
            "$ne" => Condition::Ne(arg.clone()),
            "$gt" => Condition::Range(Range::Gt, arg.clone()),
            "$gte" => Condition::Range(Range::Gte, arg.clone()),
            "$lt" => Condition::Range(Range::Lt, arg.clone()),
            "$lte" => Condition::Range(Range::Lte, arg.clone()),
            "$in" | "$nin" => {
                let Value::Array(items) = arg else {
                    return Err(format!(
                        "`{op}` at `{path}` needs an array, got {}",
                        arg.kind()
                    ));
                };
                if op == "$in" {
                    Condition::In(items.clone())
                } else {
                    Condition::Nin(items.clone())
                }
            }
            "$exists" => Condition::Exists(match arg {
                Value::Bool(b) => *b,
                Value::Int(i) => *i != 0,
                Value::Float(f) => *f != 0.0,
                other => {
                    return Err(format!(
                        "`$exists` at `{path}` needs true or false, got {}",
                        other.kind()
                    ));
                }
            }),
            _ => {
                return Err(format!(
                    "unknown operator `{}` in the filter at `{path}` (supported: {FIELD_OPERATORS})",
                    op.escape_debug()
                ));
            }
        };
        check_operand(arg, &path, &format!("`{op}`"))?;
        out.push(Filter::Field(path.clone(), condition));
    }
    Ok(())
}

/// Refuses a value with a key starting with `$` inside: no stored
/// document has one, so it could never match, and MongoDB refuses some
/// (`$in: [{$gt: 1}]`) and takes others literally.
fn check_operand(value: &Value, path: &Path, what: &str) -> Result<(), String> {
    let bad = |key: &str| {
        Err(format!(
            "{what} at `{path}` holds the key `{}`; values in a filter may not have keys starting with `$` (operators go right after the field)",
            key.escape_debug()
        ))
    };
    match value {
        Value::Object(object) => {
            for (key, v) in object.iter() {
                if key.starts_with('$') {
                    return bad(key);
                }
                check_operand(v, path, what)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| check_operand(v, path, what)),
        _ => Ok(()),
    }
}

/// One value a path reaches in a document, or its absence.
#[derive(Clone, Copy, Debug)]
struct Reached<'a> {
    value: Option<&'a Value>,
    /// An array reached by a field name is also matched by its elements;
    /// one reached by an index (`a.0` over `[[1]]`) is not (mongod).
    expand: bool,
}

/// Every value `path` reaches, as mongod's matcher walks it: through
/// objects; through an array both by index (when the part is a number) and
/// into each element that is an object; a scalar or a missing field
/// along the way reaches "missing".
fn resolve<'a>(doc: &'a Object, path: &Path) -> Vec<Reached<'a>> {
    let mut parts = path.parts().iter();
    let Some(first) = parts.next() else {
        return Vec::new();
    };
    let mut current = vec![Reached {
        value: doc.get(first),
        expand: true,
    }];
    for part in parts {
        let mut next = Vec::with_capacity(current.len());
        for reached in current {
            match reached.value {
                Some(Value::Object(o)) => next.push(Reached {
                    value: o.get(part),
                    expand: true,
                }),
                Some(Value::Array(items)) => {
                    if let Some(i) = array_index(part) {
                        next.push(Reached {
                            value: items.get(i),
                            expand: false,
                        });
                    }
                    for item in items {
                        if let Value::Object(o) = item {
                            next.push(Reached {
                                value: o.get(part),
                                expand: true,
                            });
                        }
                    }
                }
                _ => next.push(Reached {
                    value: None,
                    expand: true,
                }),
            }
        }
        current = next;
    }
    current
}

impl Condition {
    fn holds(&self, reached: &[Reached]) -> bool {
        match self {
            Condition::Eq(v) => any_equal(reached, v),
            Condition::Ne(v) => !any_equal(reached, v),
            Condition::In(vs) => vs.iter().any(|v| any_equal(reached, v)),
            Condition::Nin(vs) => !vs.iter().any(|v| any_equal(reached, v)),
            Condition::Exists(wanted) => reached.iter().any(|r| r.value.is_some()) == *wanted,
            Condition::Range(range, bound) => reached.iter().any(|r| {
                // A missing field compares as null: `$gte: null` matches it.
                let value = r.value.unwrap_or(&NULL);
                let fits =
                    |v: &Value| bracket(v) == bracket(bound) && range.holds(compare(v, bound));
                fits(value) || (r.expand && elements(value).iter().any(fits))
            }),
        }
    }
}

fn any_equal(reached: &[Reached], wanted: &Value) -> bool {
    reached.iter().any(|r| match r.value {
        None => matches!(wanted, Value::Null),
        Some(value) => {
            equal(value, wanted) || (r.expand && elements(value).iter().any(|e| equal(e, wanted)))
        }
    })
}

fn elements(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    // The ids each filter should select come from a probe of SecantusDB,
    // which records mongod 8.2's answers.
    use crate::docs::SHAPES as DOCS;

    fn select(filter: &str) -> String {
        let filter = Value::parse(filter).unwrap();
        let filter = Filter::parse(filter.as_object().unwrap()).unwrap();
        DOCS.iter()
            .map(|d| Value::parse(d).unwrap())
            .filter(|d| filter.matches(d.as_object().unwrap()))
            .map(|d| match d.as_object().unwrap().get("_id") {
                Some(Value::String(s)) => s.clone(),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn matches_like_mongod() {
        for (filter, ids) in [
            (r#"{}"#, "abcdefghijklmopqr"),
            (r#"{"n":1}"#, "afq"),
            (r#"{"n":{"$gt":0}}"#, "abfpqr"),
            (r#"{"n":{"$gt":"0"}}"#, "c"),
            (r#"{"n":null}"#, "dejklmr"),
            (r#"{"n":{"$ne":1}}"#, "bcdeghijklmopr"),
            (r#"{"n":{"$exists":false}}"#, "ejklm"),
            (r#"{"n":{"$exists":true}}"#, "abcdfghiopqr"),
            (r#"{"n":{"$in":[1,"1"]}}"#, "acfq"),
            (r#"{"n":{"$nin":[1]}}"#, "bcdeghijklmopr"),
            (r#"{"a.b":1}"#, "km"),
            (r#"{"a.b.c":2}"#, "j"),
            (r#"{"a.b":null}"#, "abcdefghimopqr"),
            (r#"{"a.b":{"$exists":false}}"#, "abcdefghilopqr"),
            (r#"{"a.1":2}"#, "l"),
            (r#"{"a.0.b":1}"#, "km"),
            (r#"{"n":[1]}"#, "o"),
            (r#"{"n":[1,5]}"#, "f"),
            (r#"{"n":[]}"#, "i"),
            (r#"{"n":{"x":1}}"#, "g"),
            (r#"{"n":{"$lt":true}}"#, ""),
            (r#"{"n":{"$gte":null}}"#, "dejklmr"),
            (r#"{"n":{"$lte":null}}"#, "dejklmr"),
            (r#"{"n":{"$gt":null}}"#, ""),
            (r#"{"n":{"$gt":{}}}"#, "g"),
            (r#"{"n":{"$gt":[]}}"#, "for"),
            (r#"{"n":{"$gt":1,"$lt":2}}"#, "bf"),
            (r#"{"$or":[{"n":1},{"n":"1"}]}"#, "acfq"),
            (r#"{"$and":[{"n":{"$gt":0}},{"n":{"$lt":2}}]}"#, "abfq"),
            (r#"{"n":{"$eq":[1,5]}}"#, "f"),
            (r#"{"n":{"$in":[null]}}"#, "dejklmr"),
            (r#"{"n":{"$nin":[null]}}"#, "abcfghiopq"),
            (r#"{"n":{"$ne":null}}"#, "abcfghiopq"),
            (r#"{"n":{"$gt":1099511627775.5}}"#, "p"),
        ] {
            assert_eq!(select(filter), ids, "{filter}");
        }
    }

    #[test]
    fn positional_arrays_are_not_expanded() {
        let doc = Value::parse(r#"{"v":[[1,2]]}"#).unwrap();
        let doc = doc.as_object().unwrap();
        let f = |text: &str| {
            Filter::parse(Value::parse(text).unwrap().as_object().unwrap())
                .unwrap()
                .matches(doc)
        };
        assert!(!f(r#"{"v.0":1}"#));
        assert!(f(r#"{"v.0":[1,2]}"#));
        assert!(f(r#"{"v":[1,2]}"#));
        assert!(!f(r#"{"v":1}"#));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for (filter, message) in [
            (
                r#"{"a":{"$regex":"x"}}"#,
                "unknown operator `$regex` in the filter at `a` (supported: $eq",
            ),
            (
                r#"{"a.b":{"$gt":1,"$where":1}}"#,
                "unknown operator `$where` in the filter at `a.b`",
            ),
            (
                r#"{"$nor":[{"a":1}]}"#,
                "unknown operator `$nor` at the top of the filter",
            ),
            (
                r#"{"$or":[{"a":{"$size":1}}]}"#,
                "unknown operator `$size` in the filter at `a`",
            ),
            (
                r#"{"$or":[]}"#,
                "`$or` needs a non-empty array of filters, got an array",
            ),
            (
                r#"{"$and":{"a":1}}"#,
                "`$and` needs a non-empty array of filters, got an object",
            ),
            (
                r#"{"$or":[1]}"#,
                "`$or` item 0 must be a filter object, got a number",
            ),
            (
                r#"{"$and":[{"$not":1}]}"#,
                "unknown operator `$not` at the top of `$and` item 0",
            ),
            (
                r#"{"a":{"$in":1}}"#,
                "`$in` at `a` needs an array, got a number",
            ),
            (
                r#"{"a":{"$exists":"yes"}}"#,
                "`$exists` at `a` needs true or false, got a string",
            ),
            (
                r#"{"a":{"$eq":1,"b":2}}"#,
                "mixes operators with the field name `b`",
            ),
            (r#"{"a..b":1}"#, "bad field path `a..b`"),
            (
                r#"{"a":{"$in":[{"$gt":1}]}}"#,
                "`$in` at `a` holds the key `$gt`; values in a filter may not have keys",
            ),
            (
                r#"{"a":{"$eq":{"b":{"$x":1}}}}"#,
                "`$eq` at `a` holds the key `$x`",
            ),
            (
                r#"{"a":{"b":[{"$y":1}]}}"#,
                "the value at `a` holds the key `$y`",
            ),
        ] {
            let value = Value::parse(filter).unwrap();
            let e = Filter::parse(value.as_object().unwrap()).unwrap_err();
            assert!(e.contains(message), "{filter}: {e}");
        }
    }

    #[test]
    fn finds_id_candidates() {
        let ids = |text: &str| {
            let f = Filter::parse(Value::parse(text).unwrap().as_object().unwrap()).unwrap();
            f.id_candidates()
                .map(|v| v.iter().map(|v| v.to_json()).collect::<Vec<_>>())
        };
        assert_eq!(ids(r#"{"_id":"x"}"#), Some(vec!["\"x\"".to_string()]));
        assert_eq!(
            ids(r#"{"_id":{"$in":[1,2]},"a":1}"#),
            Some(vec!["1".into(), "2".into()])
        );
        assert_eq!(
            ids(r#"{"$and":[{"a":1},{"_id":{"$eq":3}}]}"#),
            Some(vec!["3".into()])
        );
        assert_eq!(ids(r#"{"$or":[{"_id":1}]}"#), None);
        assert_eq!(ids(r#"{"_id":{"$gt":1}}"#), None);
    }
}
