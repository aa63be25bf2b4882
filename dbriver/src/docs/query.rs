//! The document query language of SPEC §4, evaluated in Rust: MongoDB's
//! filter syntax (`$eq $ne $gt $gte $lt $lte $in $nin $and $or $exists`),
//! projections, sorts and the `$set`/`$inc`/`$unset` updates, with
//! MongoDB's semantics (an array matches when an element does, comparisons
//! stay within a type, a missing field equals `null`).
//!
//! Everything is parsed and checked before any document is touched, so a
//! bad query fails whole, naming what is wrong and where.

use serde_json::{Map, Value};
use std::cmp::Ordering;

/// Why a query was refused.
pub type QueryError = String;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every one holds.
    And(Vec<Filter>),
    /// One of them holds.
    Or(Vec<Filter>),
    /// A condition on the value(s) at a dotted path.
    Field(String, Condition),
}

/// A condition on a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `$eq` (or a plain value).
    Eq(Value),
    /// `$ne`.
    Ne(Value),
    /// `$gt`, `$gte`, `$lt`, `$lte`: the ordering(s) that satisfy it.
    Compare(Value, &'static [Ordering]),
    /// `$in`.
    In(Vec<Value>),
    /// `$nin`.
    Nin(Vec<Value>),
    /// `$exists`.
    Exists(bool),
    /// Several operators on one field, all to hold.
    All(Vec<Condition>),
}

const OPERATORS: &str = "$eq $ne $gt $gte $lt $lte $in $nin $and $or $exists";

impl Filter {
    /// Parses a filter object (`{}` or null matches everything).
    pub fn parse(value: &Value) -> Result<Filter, QueryError> {
        match value {
            Value::Null => Ok(Filter::And(Vec::new())),
            Value::Object(map) => parse_object(map, ""),
            other => Err(format!(
                "a filter must be a JSON object, not {}",
                kind(other)
            )),
        }
    }

    /// Whether `doc` matches.
    pub fn matches(&self, doc: &Value) -> bool {
        match self {
            Filter::And(all) => all.iter().all(|f| f.matches(doc)),
            Filter::Or(any) => any.iter().any(|f| f.matches(doc)),
            Filter::Field(path, condition) => condition.holds(&lookup(doc, path)),
        }
    }
}

fn parse_object(map: &Map<String, Value>, at: &str) -> Result<Filter, QueryError> {
    let mut all = Vec::new();
    for (key, value) in map {
        match key.as_str() {
            "$and" | "$or" => {
                let Value::Array(items) = value else {
                    return Err(format!("`{key}` takes an array of filters{}", place(at)));
                };
                if items.is_empty() {
                    return Err(format!("`{key}` needs at least one filter{}", place(at)));
                }
                let parsed = items
                    .iter()
                    .map(|item| match item {
                        Value::Object(inner) => parse_object(inner, at),
                        other => Err(format!(
                            "`{key}` takes filter objects, not {}{}",
                            kind(other),
                            place(at)
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                all.push(if key == "$and" {
                    Filter::And(parsed)
                } else {
                    Filter::Or(parsed)
                });
            }
            op if op.starts_with('$') => return Err(unknown_operator(op, at)),
            path => all.push(Filter::Field(
                path.to_string(),
                parse_condition(value, path)?,
            )),
        }
    }
    Ok(match all.len() {
        1 => all.remove(0),
        _ => Filter::And(all),
    })
}

fn parse_condition(value: &Value, path: &str) -> Result<Condition, QueryError> {
    let Value::Object(map) = value else {
        return Ok(Condition::Eq(value.clone()));
    };
    let operators = map.keys().filter(|k| k.starts_with('$')).count();
    if operators == 0 {
        return Ok(Condition::Eq(value.clone()));
    }
    if operators != map.len() {
        return Err(format!(
            "the condition on `{path}` mixes operators with field names"
        ));
    }
    let mut all = Vec::new();
    for (op, argument) in map {
        let list = || match argument {
            Value::Array(items) => Ok(items.clone()),
            other => Err(format!(
                "`{op}` on `{path}` takes an array, not {}",
                kind(other)
            )),
        };
        all.push(match op.as_str() {
            "$eq" => Condition::Eq(argument.clone()),
            "$ne" => Condition::Ne(argument.clone()),
            "$gt" => Condition::Compare(argument.clone(), &[Ordering::Greater]),
            "$gte" => Condition::Compare(argument.clone(), &[Ordering::Greater, Ordering::Equal]),
            "$lt" => Condition::Compare(argument.clone(), &[Ordering::Less]),
            "$lte" => Condition::Compare(argument.clone(), &[Ordering::Less, Ordering::Equal]),
            "$in" => Condition::In(list()?),
            "$nin" => Condition::Nin(list()?),
            "$exists" => match argument {
                Value::Bool(b) => Condition::Exists(*b),
                Value::Number(n) => Condition::Exists(n.as_f64() != Some(0.0)),
                other => {
                    return Err(format!(
                        "`$exists` on `{path}` takes true or false, not {}",
                        kind(other)
                    ));
                }
            },
            other => return Err(unknown_operator(other, path)),
        });
    }
    Ok(match all.len() {
        1 => all.remove(0),
        _ => Condition::All(all),
    })
}

fn unknown_operator(op: &str, at: &str) -> QueryError {
    format!(
        "unknown operator `{op}` in the filter{} (supported: {OPERATORS})",
        place(at)
    )
}

fn place(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!(" at `{at}`")
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The values at a dotted path; through an array, the path continues into
/// each element (or into one by a numeric step), as MongoDB does.
pub fn lookup<'a>(doc: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut current = vec![doc];
    for step in path.split('.') {
        let mut next = Vec::new();
        for value in current {
            match value {
                Value::Object(map) => next.extend(map.get(step)),
                Value::Array(items) => match step.parse::<usize>() {
                    Ok(i) => next.extend(items.get(i)),
                    Err(_) => next.extend(items.iter().filter_map(|item| match item {
                        Value::Object(map) => map.get(step),
                        _ => None,
                    })),
                },
                _ => {}
            }
        }
        current = next;
    }
    current
}

impl Condition {
    fn holds(&self, found: &[&Value]) -> bool {
        match self {
            Condition::Eq(wanted) => equals(found, wanted),
            Condition::Ne(wanted) => !equals(found, wanted),
            Condition::Compare(bound, accepted) => candidates(found).any(|value| {
                same_bracket(value, bound) && accepted.contains(&compare(value, bound))
            }),
            Condition::In(list) => list.iter().any(|wanted| equals(found, wanted)),
            Condition::Nin(list) => !list.iter().any(|wanted| equals(found, wanted)),
            Condition::Exists(wanted) => found.is_empty() != *wanted,
            Condition::All(all) => all.iter().all(|c| c.holds(found)),
        }
    }
}

/// A field's values, with arrays standing also for each of their elements.
fn candidates<'a>(found: &'a [&'a Value]) -> impl Iterator<Item = &'a Value> {
    found.iter().flat_map(|value| {
        let elements: &[Value] = match value {
            Value::Array(items) => items,
            _ => &[],
        };
        std::iter::once(*value).chain(elements.iter())
    })
}

fn equals(found: &[&Value], wanted: &Value) -> bool {
    if found.is_empty() {
        return wanted.is_null();
    }
    candidates(found)
        .any(|value| compare(value, wanted) == Ordering::Equal && same_bracket(value, wanted))
}

/// MongoDB's order of types: null, numbers, strings, objects, arrays, booleans.
fn bracket(value: &Value) -> u8 {
    match value {
        Value::Null => 0,
        Value::Number(_) => 1,
        Value::String(_) => 2,
        Value::Object(_) => 3,
        Value::Array(_) => 4,
        Value::Bool(_) => 5,
    }
}

fn same_bracket(a: &Value, b: &Value) -> bool {
    bracket(a) == bracket(b)
}

/// A total order over JSON values: by type, then by value.
pub fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                x.partial_cmp(&y).unwrap_or(Ordering::Equal)
            }
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .zip(y)
            .map(|(x, y)| compare(x, y))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .zip(y)
            .map(|((kx, vx), (ky, vy))| kx.cmp(ky).then_with(|| compare(vx, vy)))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        _ => bracket(a).cmp(&bracket(b)),
    }
}

/// A parsed sort: fields with their direction.
#[derive(Debug, Clone, Default)]
pub struct Sort(Vec<(String, bool)>);

impl Sort {
    /// Parses `{"a": 1, "b": -1}`.
    pub fn parse(value: &Value) -> Result<Sort, QueryError> {
        let map = match value {
            Value::Null => return Ok(Sort::default()),
            Value::Object(map) => map,
            other => {
                return Err(format!(
                    "`sort` must be an object like {{\"at\": -1}}, not {}",
                    kind(other)
                ));
            }
        };
        map.iter()
            .map(|(path, direction)| match direction.as_i64() {
                Some(1) => Ok((path.clone(), true)),
                Some(-1) => Ok((path.clone(), false)),
                _ => Err(format!("`sort` on `{path}` must be 1 or -1")),
            })
            .collect::<Result<_, _>>()
            .map(Sort)
    }

    /// Orders two documents; a missing field sorts as null, an array by its
    /// smallest element ascending and its largest descending.
    pub fn compare(&self, a: &Value, b: &Value) -> Ordering {
        for (path, ascending) in &self.0 {
            let key = |doc| sort_key(lookup(doc, path), *ascending);
            let order = compare(&key(a), &key(b));
            let order = if *ascending { order } else { order.reverse() };
            if order.is_ne() {
                return order;
            }
        }
        Ordering::Equal
    }
}

fn sort_key(found: Vec<&Value>, ascending: bool) -> Value {
    let mut values: Vec<&Value> = found
        .into_iter()
        .flat_map(|v| match v {
            Value::Array(items) if !items.is_empty() => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        })
        .collect();
    values.sort_by(|a, b| compare(a, b));
    let pick = if ascending {
        values.first()
    } else {
        values.last()
    };
    pick.map_or(Value::Null, |v| (*v).clone())
}

/// A parsed projection.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    fields: Vec<String>,
    include: bool,
    keep_id: bool,
}

impl Projection {
    /// Parses `{"a": 1, "b.c": 1}` (only these, and `_id`) or `{"a": 0}` (all but these).
    pub fn parse(value: &Value) -> Result<Projection, QueryError> {
        let map = match value {
            Value::Null => {
                return Ok(Projection {
                    keep_id: true,
                    ..Projection::default()
                });
            }
            Value::Object(map) => map,
            other => {
                return Err(format!(
                    "`projection` must be an object, not {}",
                    kind(other)
                ));
            }
        };
        let mut projection = Projection {
            keep_id: true,
            ..Projection::default()
        };
        let mut mode = None;
        for (path, flag) in map {
            let on = match flag {
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => return Err(format!("`projection` of `{path}` must be 1 or 0")),
            };
            if path == "_id" {
                projection.keep_id = on;
                continue;
            }
            if *mode.get_or_insert(on) != on {
                return Err(
                    "`projection` cannot both include and exclude fields (except `_id`)".into(),
                );
            }
            projection.fields.push(path.clone());
        }
        projection.include = mode.unwrap_or(false);
        Ok(projection)
    }

    /// The projected document.
    pub fn apply(&self, doc: Value) -> Value {
        let Value::Object(mut map) = doc else {
            return doc;
        };
        let id = map.remove("_id");
        let mut out = if self.include {
            let source = Value::Object(map);
            let mut out = Value::Object(Map::new());
            for path in &self.fields {
                if let Some(value) = lookup(&source, path).first() {
                    set_path(&mut out, path, (*value).clone());
                }
            }
            out
        } else {
            let mut out = Value::Object(map);
            for path in &self.fields {
                unset_path(&mut out, path);
            }
            out
        };
        if let (Some(id), true, Value::Object(map)) = (id, self.keep_id, &mut out) {
            map.insert("_id".into(), id);
        }
        out
    }
}

/// A parsed update: `$set`, `$inc`, `$unset`.
#[derive(Debug, Clone, Default)]
pub struct Update {
    set: Vec<(String, Value)>,
    inc: Vec<(String, serde_json::Number)>,
    unset: Vec<String>,
}

impl Update {
    /// Parses `{"$set": {…}, "$inc": {…}, "$unset": {…}}`.
    pub fn parse(value: &Value) -> Result<Update, QueryError> {
        let Value::Object(map) = value else {
            return Err("`update` must be an object like {\"$set\": {\"a\": 1}}".into());
        };
        if map.is_empty() {
            return Err("`update` is empty: use $set, $inc or $unset".into());
        }
        let mut update = Update::default();
        for (op, fields) in map {
            if !["$set", "$inc", "$unset"].contains(&op.as_str()) {
                return Err(if op.starts_with('$') {
                    format!("unknown update operator `{op}` (supported: $set $inc $unset)")
                } else {
                    format!("`update` takes operators ($set, $inc, $unset), not the field `{op}`")
                });
            }
            let Value::Object(fields) = fields else {
                return Err(format!("`{op}` takes an object of fields"));
            };
            for (path, value) in fields {
                check_path(path)?;
                if path == "_id" || path.starts_with("_id.") {
                    return Err("`_id` cannot be updated".into());
                }
                match op.as_str() {
                    "$set" => update.set.push((path.clone(), value.clone())),
                    "$inc" => match value {
                        Value::Number(n) => update.inc.push((path.clone(), n.clone())),
                        _ => return Err(format!("`$inc` of `{path}` must be a number")),
                    },
                    _ => update.unset.push(path.clone()),
                }
            }
        }
        Ok(update)
    }

    /// Applies the update; `Err` names a field `$inc` cannot add to.
    pub fn apply(&self, doc: &mut Value) -> Result<(), QueryError> {
        for (path, value) in &self.set {
            set_path(doc, path, value.clone());
        }
        for (path, by) in &self.inc {
            let current = lookup(doc, path).first().map(|v| (*v).clone());
            let sum = match current {
                None => Value::Number(by.clone()),
                Some(Value::Number(n)) => add(&n, by),
                Some(other) => {
                    return Err(format!(
                        "`$inc` cannot add to `{path}`, which is {}",
                        kind(&other)
                    ));
                }
            };
            set_path(doc, path, sum);
        }
        for path in &self.unset {
            unset_path(doc, path);
        }
        Ok(())
    }
}

fn add(a: &serde_json::Number, b: &serde_json::Number) -> Value {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64())
        && let Some(sum) = x.checked_add(y)
    {
        return Value::from(sum);
    }
    let sum = a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0);
    serde_json::Number::from_f64(sum).map_or(Value::Null, Value::Number)
}

/// Checks a field name or path of a document or update.
pub fn check_path(path: &str) -> Result<(), QueryError> {
    if path.is_empty() || path.split('.').any(|step| step.is_empty()) {
        return Err(format!("`{path}` is not a valid field path"));
    }
    if path.starts_with('$') || path.contains('\0') {
        return Err(format!(
            "the field name `{path}` may not start with $ or contain NUL"
        ));
    }
    Ok(())
}

fn set_path(doc: &mut Value, path: &str, value: Value) {
    let mut current = doc;
    let steps: Vec<&str> = path.split('.').collect();
    for (i, step) in steps.iter().enumerate() {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let Value::Object(map) = current else { return };
        if i == steps.len() - 1 {
            map.insert((*step).to_string(), value);
            return;
        }
        current = map
            .entry((*step).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

fn unset_path(doc: &mut Value, path: &str) {
    let mut current = doc;
    let steps: Vec<&str> = path.split('.').collect();
    for (i, step) in steps.iter().enumerate() {
        let Value::Object(map) = current else { return };
        if i == steps.len() - 1 {
            map.remove(*step);
            return;
        }
        let Some(next) = map.get_mut(*step) else {
            return;
        };
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn matches(filter: Value, doc: Value) -> bool {
        Filter::parse(&filter).unwrap().matches(&doc)
    }

    #[test]
    fn filters_follow_mongodb() {
        let doc = json!({"a": 5, "s": "x", "tags": ["red", "blue"], "n": {"t": 2.5}, "z": null});
        assert!(matches(json!({}), doc.clone()));
        assert!(matches(json!({"a": 5}), doc.clone()));
        assert!(matches(json!({"a": 5.0}), doc.clone()));
        assert!(!matches(json!({"a": "5"}), doc.clone()));
        assert!(
            matches(json!({"tags": "red"}), doc.clone()),
            "an array matches an element"
        );
        assert!(matches(json!({"tags": ["red", "blue"]}), doc.clone()));
        assert!(matches(
            json!({"n.t": {"$gt": 2, "$lte": 2.5}}),
            doc.clone()
        ));
        assert!(
            !matches(json!({"s": {"$gt": 1}}), doc.clone()),
            "no comparison across types"
        );
        assert!(matches(json!({"missing": null}), doc.clone()));
        assert!(matches(json!({"z": null}), doc.clone()));
        assert!(matches(json!({"missing": {"$ne": 1}}), doc.clone()));
        assert!(matches(json!({"missing": {"$nin": [1]}}), doc.clone()));
        assert!(matches(json!({"missing": {"$exists": false}}), doc.clone()));
        assert!(matches(json!({"z": {"$exists": true}}), doc.clone()));
        assert!(matches(json!({"a": {"$in": [1, 5]}}), doc.clone()));
        assert!(!matches(json!({"tags": {"$nin": ["blue"]}}), doc.clone()));
        assert!(matches(json!({"$or": [{"a": 1}, {"s": "x"}]}), doc.clone()));
        assert!(!matches(
            json!({"$and": [{"a": 5}, {"s": "y"}]}),
            doc.clone()
        ));
        assert!(matches(json!({"tags.1": "blue"}), doc));
    }

    #[test]
    fn bad_filters_name_the_problem() {
        for (filter, says) in [
            (json!({"a": {"$regex": "x"}}), "unknown operator `$regex`"),
            (json!({"$where": "1"}), "unknown operator `$where`"),
            (json!({"a": {"$in": 3}}), "`$in` on `a` takes an array"),
            (json!({"a": {"$gt": 1, "b": 2}}), "mixes operators"),
            (json!({"$or": []}), "at least one"),
            (json!([1]), "must be a JSON object"),
        ] {
            let err = Filter::parse(&filter).unwrap_err();
            assert!(err.contains(says), "{filter}: {err}");
        }
    }

    #[test]
    fn sorts_by_type_then_value() {
        let sort = Sort::parse(&json!({"v": 1})).unwrap();
        let mut docs = vec![
            json!({"v": "b"}),
            json!({"v": 2}),
            json!({}),
            json!({"v": true}),
            json!({"v": 1.5}),
        ];
        docs.sort_by(|a, b| sort.compare(a, b));
        assert_eq!(
            docs,
            vec![
                json!({}),
                json!({"v": 1.5}),
                json!({"v": 2}),
                json!({"v": "b"}),
                json!({"v": true})
            ]
        );
    }

    #[test]
    fn projections_and_updates() {
        let doc = json!({"_id": "1", "a": 1, "b": {"c": 2, "d": 3}});
        let p = Projection::parse(&json!({"b.c": 1})).unwrap();
        assert_eq!(p.apply(doc.clone()), json!({"_id": "1", "b": {"c": 2}}));
        let p = Projection::parse(&json!({"b": 0, "_id": 0})).unwrap();
        assert_eq!(p.apply(doc.clone()), json!({"a": 1}));
        assert!(Projection::parse(&json!({"a": 1, "b": 0})).is_err());

        let mut d = doc.clone();
        let u = Update::parse(
            &json!({"$set": {"b.e": "x"}, "$inc": {"a": 2, "n": 1.5}, "$unset": {"b.d": ""}}),
        )
        .unwrap();
        u.apply(&mut d).unwrap();
        assert_eq!(
            d,
            json!({"_id": "1", "a": 3, "n": 1.5, "b": {"c": 2, "e": "x"}})
        );
        let u = Update::parse(&json!({"$inc": {"b": 1}})).unwrap();
        assert!(
            u.apply(&mut d.clone())
                .unwrap_err()
                .contains("cannot add to `b`")
        );
        for (update, says) in [
            (
                json!({"$push": {"a": 1}}),
                "unknown update operator `$push`",
            ),
            (json!({"a": 1}), "takes operators"),
            (json!({"$set": {"_id": 2}}), "`_id` cannot be updated"),
            (json!({"$inc": {"a": "x"}}), "must be a number"),
            (json!({}), "is empty"),
        ] {
            let err = Update::parse(&update).unwrap_err();
            assert!(err.contains(says), "{update}: {err}");
        }
    }
}
