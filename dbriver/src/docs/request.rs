//! The JSON argument of each operation, turned into a checked request at
//! the edge; the backends only ever see these.

use super::DocLimits;
use super::filter::Filter;
use super::id::IdGenerator;
use super::projection::Projection;
use super::sort::Sort;
use super::update::Update;
use super::value::{MAX_DEPTH, Object, Value, check_object_keys};
use isms_ipc::{Failure, FailureKind};

/// A document to insert, `_id` first.
pub struct Insert {
    /// The document.
    pub doc: Object,
    /// Its `_id`.
    pub id: Value,
    /// Its size as compact JSON.
    pub bytes: usize,
}

/// A checked filter, with the object it came from (what MongoDB gets).
pub struct Selection {
    /// For evaluating here.
    pub filter: Filter,
    /// For MongoDB.
    pub object: Object,
}

/// A find.
pub struct Find {
    /// Which documents.
    pub selection: Selection,
    /// Which fields.
    pub projection: Projection,
    /// The projection object for MongoDB (`None`: whole documents).
    pub projection_object: Option<Object>,
    /// In which order (always ending with `_id`).
    pub sort: Sort,
    /// How many to pass over first.
    pub skip: u64,
    /// How many to return at most: the caller's limit, or `max_results`.
    pub limit: u64,
    /// Whether `limit` is `max_results` because the caller gave none: then
    /// more matches are an error, not a silent cut.
    pub limit_is_default: bool,
}

impl Find {
    /// How many documents a backend should return at most: one past a
    /// default limit, to tell "exactly the most" from "more".
    pub fn fetch(&self) -> u64 {
        self.limit + u64::from(self.limit_is_default)
    }
}

/// An update.
pub struct UpdateMany {
    /// Which documents.
    pub selection: Selection,
    /// What to change.
    pub update: Update,
}

/// A delete.
pub struct Delete {
    /// Which documents.
    pub selection: Selection,
}

/// Refuses a collection name outside `[A-Za-z0-9_-]{1,64}`.
pub fn check_collection(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(70).collect();
        Err(Failure::invalid(format!(
            "bad collection name `{}`: use 1 to 64 of A-Z, a-z, 0-9, _ and -",
            shown.escape_debug()
        )))
    }
}

fn invalid(op: &str, message: impl std::fmt::Display) -> Failure {
    Failure::invalid(format!("{op}: {message}"))
}

fn parse_json(op: &str, json: &str) -> Result<Value, Failure> {
    let value = Value::parse(json)
        .map_err(|e| invalid(op, format!("the argument is not valid JSON: {e}")))?;
    // One level for the argument object around the filter or document.
    if value.depth() > MAX_DEPTH + 1 {
        return Err(invalid(
            op,
            format!("the argument nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    Ok(value)
}

/// The argument object of find, update and delete: `""` counts as `{}`.
fn arguments(op: &str, json: &str, allowed: &[&str]) -> Result<Object, Failure> {
    if json.trim().is_empty() {
        return Ok(Object::new());
    }
    let Value::Object(args) = parse_json(op, json)? else {
        return Err(invalid(
            op,
            format!(
                "the argument must be a JSON object with the keys {}",
                allowed.join(", ")
            ),
        ));
    };
    if let Some((key, _)) = args.iter().find(|(k, _)| !allowed.contains(k)) {
        return Err(invalid(
            op,
            format!(
                "unknown key `{}` (expected {})",
                key.escape_debug(),
                allowed.join(", ")
            ),
        ));
    }
    Ok(args)
}

/// An optional object argument; `null` counts as absent.
fn object_arg<'a>(op: &str, args: &'a Object, key: &str) -> Result<Option<&'a Object>, Failure> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err(invalid(
            op,
            format!("`{key}` must be an object, got {}", other.kind()),
        )),
    }
}

fn selection(op: &str, args: &Object) -> Result<Selection, Failure> {
    let object = object_arg(op, args, "filter")?.cloned().unwrap_or_default();
    let filter = Filter::parse(&object).map_err(|e| invalid(op, e))?;
    Ok(Selection { filter, object })
}

fn count_arg(op: &str, args: &Object, key: &str) -> Result<Option<u64>, Failure> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Int(n)) if *n >= 0 => Ok(Some(*n as u64)),
        Some(Value::Float(f)) if *f >= 0.0 && f.fract() == 0.0 && *f < 9.0e15 => {
            Ok(Some(*f as u64))
        }
        Some(other) => Err(invalid(
            op,
            format!(
                "`{key}` must be a whole number of 0 or more, got {}",
                if other.is_number() {
                    other.to_json()
                } else {
                    other.kind().to_string()
                }
            ),
        )),
    }
}

/// `insert`: one document.
pub fn insert(json: &str, limits: &DocLimits, ids: &IdGenerator) -> Result<Insert, Failure> {
    let value = parse_json("insert", json)?;
    let Value::Object(mut doc) = value else {
        return Err(invalid(
            "insert",
            format!("the document must be a JSON object, got {}", value.kind()),
        ));
    };
    check_document("insert", &doc)?;
    let id = match doc.get("_id") {
        None => Value::String(ids.next()),
        Some(id @ (Value::String(_) | Value::Int(_) | Value::Float(_))) => id.clone(),
        Some(other) => {
            return Err(invalid(
                "insert",
                format!("`_id` must be a string or a number, got {}", other.kind()),
            ));
        }
    };
    // MongoDB keeps `_id` first; so does the embedded store.
    doc.insert_first("_id", id.clone());
    let bytes = check_size("insert", &doc, limits)?;
    Ok(Insert { doc, id, bytes })
}

/// The rules every stored document meets: keys, depth.
fn check_document(op: &str, doc: &Object) -> Result<(), Failure> {
    if doc.depth() > MAX_DEPTH {
        return Err(invalid(
            op,
            format!("the document nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    check_object_keys(doc, "").map_err(|e| invalid(op, e))
}

/// Refuses a document over `max_document_bytes` (as compact JSON); returns
/// its size.
pub fn check_size(op: &str, doc: &Object, limits: &DocLimits) -> Result<usize, Failure> {
    let bytes = doc.json_len();
    if bytes > limits.max_document_bytes {
        return Err(Failure::new(
            FailureKind::TooLarge,
            format!(
                "{op}: the document is {bytes} bytes as JSON, over the limit of {} bytes",
                limits.max_document_bytes
            ),
        ));
    }
    Ok(bytes)
}

/// Checks a document an update produced: depth and size.
pub fn check_updated(doc: &Object, limits: &DocLimits) -> Result<usize, Failure> {
    if doc.depth() > MAX_DEPTH {
        return Err(invalid(
            "update",
            format!("the updated document would nest deeper than {MAX_DEPTH} levels"),
        ));
    }
    check_size("update", doc, limits)
}

/// `doc` as `update` leaves it, checked against the limits, with the bytes
/// it grew; `None` when the update changes nothing. Both backends check an
/// update's documents with it before writing any, so they refuse alike.
pub fn updated(
    doc: &Object,
    update: &Update,
    limits: &DocLimits,
) -> Result<Option<(Object, u64)>, Failure> {
    let mut after = doc.clone();
    update.apply(&mut after).map_err(|e| invalid("update", e))?;
    if after == *doc {
        return Ok(None);
    }
    let bytes = check_updated(&after, limits)?;
    let growth = (bytes as u64).saturating_sub(doc.json_len() as u64);
    Ok(Some((after, growth)))
}

/// `find`.
pub fn find(json: &str, limits: &DocLimits) -> Result<Find, Failure> {
    const OP: &str = "find";
    let args = arguments(OP, json, &["filter", "projection", "sort", "limit", "skip"])?;
    let selection = selection(OP, &args)?;
    let projection_object = object_arg(OP, &args, "projection")?
        .filter(|p| !p.is_empty())
        .cloned();
    let projection = Projection::parse(projection_object.as_ref()).map_err(|e| invalid(OP, e))?;
    let sort = Sort::parse(object_arg(OP, &args, "sort")?).map_err(|e| invalid(OP, e))?;
    let skip = count_arg(OP, &args, "skip")?.unwrap_or(0);
    let max = limits.max_results as u64;
    // A limit of 0 means none, as in MongoDB.
    let (limit, limit_is_default) = match count_arg(OP, &args, "limit")? {
        None | Some(0) => (max, true),
        Some(n) if n > max => {
            return Err(Failure::new(
                FailureKind::TooLarge,
                format!(
                    "find: the limit {n} is over the most one find returns, {max}; page with skip"
                ),
            ));
        }
        Some(n) => (n, false),
    };
    Ok(Find {
        selection,
        projection,
        projection_object,
        sort,
        skip,
        limit,
        limit_is_default,
    })
}

/// The error for a find without a limit that matches more than the most.
pub fn too_many_results(limits: &DocLimits) -> Failure {
    Failure::new(
        FailureKind::TooLarge,
        format!(
            "find: more than {} documents match; give a limit (at most {}) and page with skip, or narrow the filter",
            limits.max_results, limits.max_results
        ),
    )
}

/// `update`.
pub fn update(json: &str) -> Result<UpdateMany, Failure> {
    const OP: &str = "update";
    let args = arguments(OP, json, &["filter", "update"])?;
    let selection = selection(OP, &args)?;
    let spec = args.get("update").ok_or_else(|| {
        invalid(
            OP,
            "the argument needs `update`, e.g. {\"filter\": {…}, \"update\": {\"$set\": {…}}}",
        )
    })?;
    let update = Update::parse(spec).map_err(|e| invalid(OP, e))?;
    Ok(UpdateMany { selection, update })
}

/// `delete`.
pub fn delete(json: &str) -> Result<Delete, Failure> {
    let args = arguments("delete", json, &["filter"])?;
    Ok(Delete {
        selection: selection("delete", &args)?,
    })
}

/// The key under which a store keeps an `_id`, equal for ids MongoDB
/// counts as equal (`1` and `1.0`): `s:` and the string, or `n:` and the
/// number written canonically.
pub fn id_key(id: &Value) -> Option<String> {
    match id {
        Value::String(s) => Some(format!("s:{s}")),
        Value::Int(i) => Some(format!("n:{i}")),
        Value::Float(f) => {
            // Whole floats within i64 are the integer; -0.0 is 0.
            if f.fract() == 0.0 && *f >= i64::MIN as f64 && *f < -(i64::MIN as f64) {
                Some(format!("n:{}", *f as i64))
            } else {
                Some(format!("n:{f:?}"))
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn id_keys_merge_equal_numbers() {
        let key = |s: &str| id_key(&Value::parse(s).unwrap());
        assert_eq!(key("1"), key("1.0"));
        assert_eq!(key("0"), key("-0.0"));
        assert_ne!(key("1"), key("\"1\""));
        assert_ne!(key("1.5"), key("1"));
        assert_eq!(key("1e300"), Some("n:1e300".to_string()));
        assert_eq!(key("null"), None);
    }

    #[test]
    fn collection_names() {
        for good in ["a", "A_b-9", &"x".repeat(64)] {
            assert!(check_collection(good).is_ok(), "{good}");
        }
        for bad in ["", "a.b", "a b", "$x", "é", &"x".repeat(65)] {
            let e = check_collection(bad).unwrap_err();
            assert!(e.message.contains("bad collection name"), "{bad}");
        }
    }
}
