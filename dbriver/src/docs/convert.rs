//! JSON ↔ BSON for the MongoDB backend.
//!
//! Integers go as Int32 when they fit and Int64 otherwise (what drivers
//! and the shell write), floats as Double; both integer types come back as
//! integers and Double as a float, so `1` returns `1` and `1.0` returns
//! `1.0` whatever the server did in between. Types JSON cannot express,
//! met in data other tools wrote, come back as strings: an ObjectId as its
//! 24 hex digits (like the ids the platform generates), a date in RFC 3339,
//! anything else in MongoDB's shell notation.

use super::value::{Object, Value};
use mongodb::bson::{Bson, Document, RawArray, RawBsonRef, RawDocument};

/// A JSON object as a BSON document.
pub fn to_document(object: &Object) -> Document {
    let mut doc = Document::new();
    for (key, value) in object.iter() {
        doc.insert(key, to_bson(value));
    }
    doc
}

/// A JSON value as BSON.
pub fn to_bson(value: &Value) -> Bson {
    match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Int(i) => match i32::try_from(*i) {
            Ok(small) => Bson::Int32(small),
            Err(_) => Bson::Int64(*i),
        },
        Value::Float(f) => Bson::Double(*f),
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(to_bson).collect()),
        Value::Object(object) => Bson::Document(to_document(object)),
    }
}

/// A BSON document as it arrives from the server, as a JSON object.
pub fn from_raw_document(doc: &RawDocument) -> Result<Object, String> {
    let mut object = Object::new();
    for entry in doc.iter() {
        let (key, value) = entry.map_err(|e| e.to_string())?;
        object.push(key.as_str(), from_raw(value)?);
    }
    Ok(object)
}

fn from_raw_array(array: &RawArray) -> Result<Vec<Value>, String> {
    array
        .into_iter()
        .map(|item| item.map_err(|e| e.to_string()).and_then(from_raw))
        .collect()
}

fn from_raw(value: RawBsonRef<'_>) -> Result<Value, String> {
    Ok(match value {
        RawBsonRef::Null => Value::Null,
        RawBsonRef::Boolean(b) => Value::Bool(b),
        RawBsonRef::Int32(i) => Value::Int(i64::from(i)),
        RawBsonRef::Int64(i) => Value::Int(i),
        RawBsonRef::Double(f) => Value::Float(f),
        RawBsonRef::String(s) => Value::String(s.to_string()),
        RawBsonRef::Array(items) => Value::Array(from_raw_array(items)?),
        RawBsonRef::Document(doc) => Value::Object(from_raw_document(doc)?),
        RawBsonRef::ObjectId(id) => Value::String(id.to_hex()),
        RawBsonRef::DateTime(t) => {
            Value::String(t.try_to_rfc3339_string().unwrap_or_else(|_| t.to_string()))
        }
        other => match Bson::try_from(other) {
            Ok(bson) => Value::String(bson.to_string()),
            Err(e) => return Err(e.to_string()),
        },
    })
}

/// A BSON value as JSON (for command replies).
pub fn from_bson(value: &Bson) -> Value {
    match value {
        Bson::Null => Value::Null,
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Int32(i) => Value::Int(i64::from(*i)),
        Bson::Int64(i) => Value::Int(*i),
        Bson::Double(f) => Value::Float(*f),
        Bson::String(s) => Value::String(s.clone()),
        Bson::Array(items) => Value::Array(items.iter().map(from_bson).collect()),
        Bson::Document(doc) => {
            Value::Object(doc.iter().map(|(k, v)| (k.clone(), from_bson(v))).collect())
        }
        Bson::ObjectId(id) => Value::String(id.to_hex()),
        other => Value::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::value::tests::arb_value;
    use super::*;
    use mongodb::bson::{RawDocumentBuf, doc, oid::ObjectId};
    use proptest::prelude::*;

    fn round_trip(object: &Object) -> Object {
        let raw = RawDocumentBuf::try_from(&to_document(object)).unwrap();
        // Through bytes, as the server sends them.
        let raw = RawDocument::from_bytes(raw.as_bytes()).unwrap();
        from_raw_document(raw).unwrap()
    }

    #[test]
    fn numbers_keep_their_kind() {
        let text = r#"{"_id":"x","small":1,"negative":-2147483649,"big":9223372036854775807,"float":1.0,"half":1.5,"zero":-0.0,"nested":[{"a":[1,2.5,null,true,"s"]}]}"#;
        let object = Value::parse(text).unwrap().as_object().unwrap().clone();
        let doc = to_document(&object);
        assert_eq!(doc.get("small"), Some(&Bson::Int32(1)));
        assert_eq!(doc.get("negative"), Some(&Bson::Int64(-2_147_483_649)));
        assert_eq!(doc.get("float"), Some(&Bson::Double(1.0)));
        assert_eq!(Value::Object(round_trip(&object)).to_json(), text);
    }

    #[test]
    fn foreign_types_become_strings() {
        let id = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let doc = doc! { "_id": id, "when": mongodb::bson::DateTime::from_millis(0), "n": Bson::Int64(5) };
        let raw = RawDocumentBuf::try_from(&doc).unwrap();
        let object = from_raw_document(&raw).unwrap();
        assert_eq!(
            Value::Object(object).to_json(),
            r#"{"_id":"65a1b2c3d4e5f60718293a4b","when":"1970-01-01T00:00:00Z","n":5}"#
        );
        assert_eq!(
            from_bson(&Bson::Document(doc! {"ok": 1.0, "v": "8.2"})).to_json(),
            r#"{"ok":1.0,"v":"8.2"}"#
        );
    }

    proptest! {
        #[test]
        fn json_bson_json_is_identity(value in arb_value()) {
            let mut object = Object::new();
            object.push("v", value);
            prop_assert_eq!(round_trip(&object), object);
        }
    }
}
