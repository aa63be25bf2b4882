//! Documents as DBriver holds them: JSON that keeps integers and floats
//! apart and object keys in their order, as BSON does, so both backends
//! answer the same bytes. `serde_json::Value` would sort keys (no
//! `preserve_order` in this workspace) and merge duplicates silently.
//!
//! Why one file of this size: one value type with its parser and printer,
//! which must agree byte for byte; a quarter of it is their tests.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;

/// Deepest nesting of objects and arrays in a document (MongoDB's limit).
pub const MAX_DEPTH: usize = 100;

/// A JSON value as documents hold it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer: BSON Int32 or Int64.
    Int(i64),
    /// A number with a fraction or exponent: BSON Double.
    Float(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object, its keys in order.
    Object(Object),
}

/// An object: keys in insertion order, each once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Object(Vec<(String, Value)>);

/// `null`, to hand out where a missing field counts as one.
pub static NULL: Value = Value::Null;

impl Object {
    /// An empty object.
    pub fn new() -> Object {
        Object(Vec::new())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of `key`, to change it.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key`: in its place if present, else at the end.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.get_mut(&key) {
            Some(slot) => *slot = value,
            None => self.0.push((key, value)),
        }
    }

    /// Sets `key` as the first key (where MongoDB keeps `_id`).
    pub fn insert_first(&mut self, key: &str, value: Value) {
        self.remove(key);
        self.0.insert(0, (key.to_string(), value));
    }

    /// Removes `key`, keeping the order of the rest.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(at).1)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How deeply objects and arrays nest in it: 1 for `{}`.
    pub fn depth(&self) -> usize {
        1 + self.iter().map(|(_, v)| v.depth()).max().unwrap_or(0)
    }

    /// Compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// The length of [`Object::to_json`], without building it.
    pub fn json_len(&self) -> usize {
        let mut counter = Counter(0);
        let _ = serde_json::to_writer(&mut counter, self);
        counter.0
    }

    /// Appends without checking for a duplicate: for builders that know.
    pub(crate) fn push(&mut self, key: impl Into<String>, value: Value) {
        self.0.push((key.into(), value));
    }
}

impl IntoIterator for Object {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<(String, Value)> for Object {
    /// Later duplicates replace earlier ones, in the earlier one's place.
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Object {
        let mut object = Object::new();
        for (k, v) in iter {
            object.insert(k, v);
        }
        object
    }
}

impl Value {
    /// Parses JSON text. Refuses duplicate keys and integers outside i64;
    /// the error names the place (line and column).
    pub fn parse(text: &str) -> Result<Value, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// Compact JSON.
    pub fn to_json(&self) -> String {
        // Serializing our own tree into a String cannot fail: every key is
        // a string and non-finite floats become `null`, as serde_json does.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("null"))
    }

    /// The length of [`Value::to_json`], without building it.
    pub fn json_len(&self) -> usize {
        let mut counter = Counter(0);
        let _ = serde_json::to_writer(&mut counter, self);
        counter.0
    }

    /// How deeply objects and arrays nest: 0 for a scalar.
    pub fn depth(&self) -> usize {
        match self {
            Value::Array(items) => 1 + items.iter().map(Value::depth).max().unwrap_or(0),
            Value::Object(object) => object.depth(),
            _ => 0,
        }
    }

    /// The kind of value, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    /// The object, if this is one.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// Whether this is an integer or a float.
    pub fn is_number(&self) -> bool {
        matches!(self, Value::Int(_) | Value::Float(_))
    }
}

/// Checks the keys of a document that is about to be stored: none empty,
/// none starting with `$`, none containing `.` or NUL (MongoDB's rules: `$`
/// marks operators and `.` separates paths). `at` names where `value` sits.
pub fn check_keys(value: &Value, at: &str) -> Result<(), String> {
    match value {
        Value::Object(object) => check_object_keys(object, at),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let here = if at.is_empty() {
                    i.to_string()
                } else {
                    format!("{at}.{i}")
                };
                check_keys(v, &here)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// [`check_keys`] of an object.
pub fn check_object_keys(object: &Object, at: &str) -> Result<(), String> {
    for (key, v) in object.iter() {
        let here = if at.is_empty() {
            key.to_string()
        } else {
            format!("{at}.{key}")
        };
        let problem = if key.is_empty() {
            Some("is empty")
        } else if key.starts_with('$') {
            Some("starts with `$`")
        } else if key.contains('.') {
            Some("contains `.`")
        } else if key.contains('\0') {
            Some("contains NUL")
        } else {
            None
        };
        if let Some(problem) = problem {
            let place = if at.is_empty() {
                String::new()
            } else {
                format!(" in `{at}`")
            };
            return Err(format!(
                "the key `{}`{place} {problem} (keys may not be empty, start with `$`, or contain `.` or NUL)",
                key.escape_debug()
            ));
        }
        check_keys(v, &here)?;
    }
    Ok(())
}

// ---- BSON's order ------------------------------------------------------

/// MongoDB's type bracket: values of different brackets never compare
/// equal, and sort in this order (null, numbers, strings, objects, arrays,
/// booleans; the BSON types between them cannot come from JSON).
pub fn bracket(value: &Value) -> u8 {
    match value {
        Value::Null => 1,
        Value::Int(_) | Value::Float(_) => 2,
        Value::String(_) => 3,
        Value::Object(_) => 4,
        Value::Array(_) => 5,
        Value::Bool(_) => 6,
    }
}

/// MongoDB's total order of values: by bracket, then within it (numbers by
/// value whatever their type, strings by bytes, objects and arrays element
/// by element).
pub fn compare(a: &Value, b: &Value) -> Ordering {
    let by_bracket = bracket(a).cmp(&bracket(b));
    if by_bracket != Ordering::Equal {
        return by_bracket;
    }
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Array(x), Value::Array(y)) => {
            for (u, v) in x.iter().zip(y) {
                let c = compare(u, v);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            // mongod's woCompare: each pair of fields by bracket of the
            // value, then name, then value.
            for ((ku, u), (kv, v)) in x.iter().zip(y.iter()) {
                let c = bracket(u)
                    .cmp(&bracket(v))
                    .then_with(|| ku.as_bytes().cmp(kv.as_bytes()))
                    .then_with(|| compare(u, v));
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => compare_numbers(a, b),
    }
}

/// Whether two values are equal in MongoDB's sense (`1` equals `1.0`).
pub fn equal(a: &Value, b: &Value) -> bool {
    compare(a, b) == Ordering::Equal
}

fn compare_numbers(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => compare_floats(*x, *y),
        (Value::Int(x), Value::Float(y)) => compare_int_float(*x, *y),
        (Value::Float(x), Value::Int(y)) => compare_int_float(*y, *x).reverse(),
        _ => Ordering::Equal,
    }
}

/// NaN (which JSON cannot carry, but a MongoDB written by others can) sorts
/// below every number and equal to itself, as in mongod.
fn compare_floats(x: f64, y: f64) -> Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// Exact comparison of an integer with a float: converting either to the
/// other's type would round (2^53 + 1 as f64 is 2^53).
fn compare_int_float(i: i64, f: f64) -> Ordering {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f.is_nan() {
        return Ordering::Greater;
    }
    if f >= TWO_63 {
        return Ordering::Less;
    }
    if f < -TWO_63 {
        return Ordering::Greater;
    }
    let whole = f.trunc();
    // In range: -2^63 <= whole < 2^63, so the cast is exact.
    match i.cmp(&(whole as i64)) {
        Ordering::Equal if f > whole => Ordering::Less,
        Ordering::Equal if f < whole => Ordering::Greater,
        other => other,
    }
}

// ---- JSON in and out ---------------------------------------------------

struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Float(f) => serializer.serialize_f64(*f),
            Value::String(s) => serializer.serialize_str(s),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(object) => object.serialize(serializer),
        }
    }
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v).map(Value::Int).map_err(|_| {
            E::custom(format_args!(
                "the integer {v} does not fit in 64 bits (signed); write it as a float or a string"
            ))
        })
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: Vec<(String, Value)> = Vec::new();
        // A scan finds duplicates among few keys; past a few dozen, a set.
        let mut seen: Option<HashSet<String>> = None;
        while let Some(key) = map.next_key::<String>()? {
            let duplicate = match &mut seen {
                Some(set) => !set.insert(key.clone()),
                None => entries.iter().any(|(k, _)| *k == key),
            };
            if duplicate {
                return Err(de::Error::custom(format_args!(
                    "the key `{}` appears twice in one object",
                    key.escape_debug()
                )));
            }
            let value = map.next_value()?;
            entries.push((key, value));
            if seen.is_none() && entries.len() > 32 {
                seen = Some(entries.iter().map(|(k, _)| k.clone()).collect());
            }
        }
        Ok(Value::Object(Object(entries)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    fn v(text: &str) -> Value {
        Value::parse(text).unwrap()
    }

    #[test]
    fn keeps_key_order_and_number_kinds() {
        for text in [
            r#"{"b":1,"a":1.5,"c":[1,2.0,-0.0,1e+300,"x",null,true,{}]}"#,
            r#"{"z":{"y":{"x":[]}},"_id":"a"}"#,
            "-9223372036854775808",
            "9223372036854775807",
        ] {
            assert_eq!(v(text).to_json(), text);
            assert_eq!(v(text).json_len(), text.len());
        }
    }

    #[test]
    fn refuses_duplicates_and_huge_integers() {
        let e = Value::parse(r#"{"a":1,"b":2,"a":3}"#).unwrap_err();
        assert!(e.contains("`a` appears twice"), "{e}");
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":1")).collect();
        let text = format!("{{{},\"k39\":2}}", many.join(","));
        assert!(
            Value::parse(&text)
                .unwrap_err()
                .contains("`k39` appears twice")
        );
        let e = Value::parse("[18446744073709551615]").unwrap_err();
        assert!(e.contains("does not fit in 64 bits"), "{e}");
        assert!(Value::parse("{").unwrap_err().contains("line 1"));
    }

    #[test]
    fn orders_across_brackets_like_mongodb() {
        let ordered = [
            "null",
            "-1e300",
            "-5",
            "1",
            "1.5",
            "2",
            "\"\"",
            "\"a\"",
            "\"b\"",
            "{}",
            // Field by field: the value's bracket, then the name, then the value.
            r#"{"a":1}"#,
            r#"{"b":1}"#,
            r#"{"a":"x"}"#,
            "[]",
            "[1]",
            "[1,2]",
            "[2]",
            "false",
            "true",
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(compare(&v(a), &v(b)), i.cmp(&j), "{a} vs {b}");
            }
        }
        assert!(equal(&v("1"), &v("1.0")));
        assert!(equal(&v("0"), &v("-0.0")));
        assert!(!equal(&v("1"), &v("true")));
        assert!(!equal(&v(r#"{"a":1,"b":2}"#), &v(r#"{"b":2,"a":1}"#)));
    }

    #[test]
    fn compares_big_integers_with_floats_exactly() {
        let two53 = 1i64 << 53;
        assert_eq!(
            compare_int_float(two53 + 1, two53 as f64),
            Ordering::Greater
        );
        assert_eq!(compare_int_float(i64::MAX, i64::MAX as f64), Ordering::Less);
        assert_eq!(
            compare_int_float(i64::MIN, i64::MIN as f64),
            Ordering::Equal
        );
        assert_eq!(compare_int_float(-1, -1.5), Ordering::Greater);
        assert_eq!(compare_int_float(-2, -1.5), Ordering::Less);
        assert_eq!(compare_int_float(3, f64::NAN), Ordering::Greater);
    }

    #[test]
    fn checks_keys() {
        assert!(check_keys(&v(r#"{"a":{"b":[{"c":1}]}}"#), "").is_ok());
        let e = check_keys(&v(r#"{"a":{"b":[{"$c":1}]}}"#), "").unwrap_err();
        assert!(e.contains("`$c` in `a.b.0` starts with `$`"), "{e}");
        assert!(
            check_keys(&v(r#"{"a.b":1}"#), "")
                .unwrap_err()
                .contains("contains `.`")
        );
        assert!(
            check_keys(&v(r#"{"":1}"#), "")
                .unwrap_err()
                .contains("is empty")
        );
        assert!(
            check_keys(&v("{\"a\\u0000\":1}"), "")
                .unwrap_err()
                .contains("NUL")
        );
    }

    pub(crate) fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (-1e6f64..1e6).prop_map(Value::Float),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::Float),
            "[a-z\u{e9}\u{1F600}\"\\\\]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec(("[a-z_]{1,4}", inner), 0..5)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn json_round_trips(value in arb_value()) {
            let text = value.to_json();
            prop_assert_eq!(value.json_len(), text.len());
            prop_assert_eq!(Value::parse(&text).unwrap(), value);
        }

        #[test]
        fn order_is_total_and_consistent(a in arb_value(), b in arb_value(), c in arb_value()) {
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
            prop_assert_eq!(compare(&a, &a), Ordering::Equal);
            if compare(&a, &b) != Ordering::Greater && compare(&b, &c) != Ordering::Greater {
                prop_assert_ne!(compare(&a, &c), Ordering::Greater);
            }
        }
    }
}
