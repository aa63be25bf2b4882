//! Checks real requests and answers against the Control Gate's OpenAPI
//! description (`control-gate/src/openapi.json`), so the document cannot
//! drift from what the API does.
//!
//! Only the part of OpenAPI 3.0 that the document uses is understood; any
//! other keyword makes [`Document::new`] fail, so the document cannot start
//! using something this checker would silently ignore. Schemas: `type`,
//! `properties`, `required`, `additionalProperties`, `items`, `enum`,
//! `nullable`, `minimum`, `maximum`, `minLength`, `pattern`, `format`
//! (`binary` only, which says nothing about JSON), `$ref` to
//! `#/components/schemas/…`, and the annotations `description`, `default`
//! and `example` (both checked against their schema when loaded).
//!
//! One rule is stricter than OpenAPI on purpose: an object may hold only
//! the properties its schema lists, unless it says `additionalProperties`.
//! OpenAPI allows any extra property by default, which would let a field
//! be added to an answer and never documented. Where an object's members
//! really are open (a user's SQL rows and documents, a free-form map), the
//! document says `additionalProperties: true`; an object schema that lists
//! no properties and says nothing is refused as ambiguous. The rule is not
//! too strict for request bodies either: the Control Gate refuses unknown
//! fields in every JSON body it reads (`deny_unknown_fields`). Where one
//! schema serves a request and an answer (`Member`, `Quotas`), `required`
//! names what the request must hold, so a field the answer always carries
//! (`Quotas.cpu_weight`) stays optional there: the cost of sharing.
//!
//! Each `$ref` followed while checking a real message is counted, so a
//! test can ask which component schemas no real message ever reached
//! ([`Document::unused_schemas`]).
//!
//! Why one file of this size: one checker, the document's loading and the
//! validation of answers against it share the same keyword rules; a quarter
//! of it is its own tests.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde_json::{Map, Value};

use crate::http::Response;

const SCHEMA_REF: &str = "#/components/schemas/";
const RESPONSE_REF: &str = "#/components/responses/";

/// The keywords a schema may hold; anything else fails loudly.
const SCHEMA_KEYWORDS: &[&str] = &[
    "$ref",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "nullable",
    "minimum",
    "maximum",
    "minLength",
    "pattern",
    "format",
    "description",
    "default",
    "example",
];

/// The keys an operation may hold.
const OPERATION_KEYWORDS: &[&str] = &[
    "summary",
    "description",
    "tags",
    "security",
    "parameters",
    "requestBody",
    "responses",
];

/// A parsed, checked OpenAPI description.
pub struct Document {
    doc: Value,
    used: Mutex<BTreeSet<String>>,
    called: Mutex<BTreeSet<(String, String)>>,
}

impl Document {
    /// Parses the document and checks that every schema in it keeps to the
    /// understood subset.
    pub fn new(text: &str) -> Result<Document, String> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| format!("openapi.json is not JSON: {e}"))?;
        let document = Document {
            doc,
            used: Mutex::new(BTreeSet::new()),
            called: Mutex::new(BTreeSet::new()),
        };
        let mut errors = Vec::new();
        document.check_document(&mut errors);
        if errors.is_empty() {
            // Loading checked defaults and examples: that is no real use.
            document.used.lock().unwrap().clear();
            Ok(document)
        } else {
            Err(format!(
                "openapi.json uses what the checker does not understand:\n{}",
                errors.join("\n")
            ))
        }
    }

    /// The names of `components/schemas`.
    pub fn schema_names(&self) -> Vec<String> {
        self.doc["components"]["schemas"]
            .as_object()
            .map(|schemas| schemas.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The component schemas no checked message has reached yet.
    pub fn unused_schemas(&self) -> Vec<String> {
        let used = self.used.lock().unwrap();
        self.schema_names()
            .into_iter()
            .filter(|name| !used.contains(name))
            .collect()
    }

    /// The operations (`METHOD /template`) no checked answer came from.
    pub fn uncalled_operations(&self) -> Vec<String> {
        let called = self.called.lock().unwrap();
        self.operations()
            .into_iter()
            .filter(|operation| !called.contains(operation))
            .map(|(template, method)| format!("{} {template}", method.to_ascii_uppercase()))
            .collect()
    }

    /// The document's `paths` as (template, lower-case method) pairs.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(paths) = self.doc["paths"].as_object() {
            for (template, item) in paths {
                for method in item.as_object().into_iter().flat_map(|m| m.keys()) {
                    out.push((template.clone(), method.clone()));
                }
            }
        }
        out
    }

    /// Checks a request body (JSON, or empty) against the operation's
    /// `requestBody`.
    pub fn check_request(&self, method: &str, path: &str, body: &[u8]) -> Result<(), String> {
        let (template, operation) = self.operation(method, path)?;
        let what = format!("the request body of {method} {template}");
        let Some(request) = operation.get("requestBody") else {
            return if body.is_empty() {
                Ok(())
            } else {
                Err(format!("{what}: the document declares none"))
            };
        };
        if body.is_empty() {
            return if request["required"] == true {
                Err(format!("{what}: required, and empty"))
            } else {
                Ok(())
            };
        }
        let Some(media) = request["content"].get("application/json") else {
            return Ok(()); // Bytes (an archive, a Doee's input): nothing to check.
        };
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("{what}: not JSON: {e}"))?;
        self.validate_all(&media["schema"], &value, &what)
    }

    /// Checks an answer against what the document declares for this path,
    /// method and status: the status must be declared, the content type
    /// must be one of the declared ones (no body where none is declared),
    /// and a JSON body must match the declared schema.
    pub fn check_response(
        &self,
        method: &str,
        path: &str,
        response: &Response,
    ) -> Result<(), String> {
        let (template, operation) = self.operation(method, path)?;
        self.called
            .lock()
            .unwrap()
            .insert((template.clone(), method.to_ascii_lowercase()));
        let status = response.status.to_string();
        let what = format!("{method} {template} answering {status}");
        let declared = operation["responses"]
            .get(&status)
            .ok_or_else(|| format!("{what}: the document declares no {status}"))?;
        let declared = self.resolve_response(declared)?;
        let Some(content) = declared.get("content").and_then(Value::as_object) else {
            return if response.body.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{what}: the document declares no body, the answer has {} bytes: {}",
                    response.body.len(),
                    response.text()
                ))
            };
        };
        let media = match response.header("content-type") {
            Some(value) => value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase(),
            // Bytes without a type are application/octet-stream (RFC 9110).
            None => "application/octet-stream".to_string(),
        };
        let Some(declared_media) = content.get(&media) else {
            return Err(format!(
                "{what}: content type {media}, the document declares {:?}",
                content.keys().collect::<Vec<_>>()
            ));
        };
        if media != "application/json" {
            return Ok(());
        }
        let value: Value = serde_json::from_slice(&response.body)
            .map_err(|e| format!("{what}: not JSON ({e}): {}", response.text()))?;
        self.validate_all(&declared_media["schema"], &value, &what)
    }

    /// Checks a value against the component schema `name`: for what the
    /// document describes only in words, such as the events of a followed
    /// log.
    pub fn check_value(&self, name: &str, value: &Value) -> Result<(), String> {
        if self.doc["components"]["schemas"].get(name).is_none() {
            return Err(format!("openapi.json has no schema {name}"));
        }
        let reference = serde_json::json!({ "$ref": format!("{SCHEMA_REF}{name}") });
        self.validate_all(&reference, value, &format!("a {name}"))
    }

    /// The template and operation object matching a concrete path (the
    /// query ignored); literal segments win over `{parameters}`.
    fn operation(&self, method: &str, path: &str) -> Result<(String, &Value), String> {
        let path = path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.split('/').collect();
        let paths = self.doc["paths"]
            .as_object()
            .ok_or("openapi.json has no paths")?;
        let best = paths
            .iter()
            .filter_map(|(template, item)| {
                let parts: Vec<&str> = template.split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut literal = 0;
                for (part, segment) in parts.iter().zip(&segments) {
                    if part.starts_with('{') && part.ends_with('}') {
                        if segment.is_empty() {
                            return None;
                        }
                    } else if part == segment {
                        literal += 1;
                    } else {
                        return None;
                    }
                }
                Some((literal, template, item))
            })
            .max_by_key(|(literal, _, _)| *literal)
            .ok_or_else(|| format!("openapi.json has no path matching {path}"))?;
        let (_, template, item) = best;
        let operation = item
            .get(method.to_ascii_lowercase())
            .ok_or_else(|| format!("openapi.json has no {method} {template}"))?;
        Ok((template.clone(), operation))
    }

    fn resolve_response<'a>(&'a self, response: &'a Value) -> Result<&'a Value, String> {
        match response.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference
                    .strip_prefix(RESPONSE_REF)
                    .ok_or_else(|| format!("unsupported response $ref {reference}"))?;
                self.doc["components"]["responses"]
                    .get(name)
                    .ok_or_else(|| format!("no response {reference}"))
            }
            None => Ok(response),
        }
    }

    fn validate_all(&self, schema: &Value, value: &Value, what: &str) -> Result<(), String> {
        let mut errors = Vec::new();
        self.validate(schema, value, "$", &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{what} disagrees with openapi.json:\n  {}\nthe value: {value}",
                errors.join("\n  ")
            ))
        }
    }

    /// Checks `value` against `schema` (already checked by
    /// [`Document::check_schema`]), adding what is wrong to `errors`.
    fn validate(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.strip_prefix(SCHEMA_REF).unwrap_or(reference);
            self.used.lock().unwrap().insert(name.to_string());
            let target = &self.doc["components"]["schemas"][name];
            return self.validate(target, value, at, errors);
        }
        if value.is_null() {
            if schema.get("type").is_some() && schema["nullable"] != true {
                errors.push(format!("{at}: null, and the schema is not nullable"));
            }
            return;
        }
        if let Some(kind) = schema.get("type").and_then(Value::as_str) {
            let fits = match kind {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                _ => false,
            };
            if !fits {
                errors.push(format!("{at}: {value} is not of type {kind}"));
                return;
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                errors.push(format!("{at}: {n} is below the minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                errors.push(format!("{at}: {n} is above the maximum {max}"));
            }
        }
        if let Some(text) = value.as_str() {
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && (text.chars().count() as u64) < min
            {
                errors.push(format!("{at}: {text:?} is shorter than {min}"));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
                && !regex::Regex::new(pattern).is_ok_and(|re| re.is_match(text))
            {
                errors.push(format!("{at}: {text:?} does not match {pattern}"));
            }
        }
        if let (Some(items), Some(item_schema)) = (value.as_array(), schema.get("items")) {
            for (i, item) in items.iter().enumerate() {
                self.validate(item_schema, item, &format!("{at}[{i}]"), errors);
            }
        }
        if let Some(object) = value.as_object() {
            self.validate_object(schema, object, at, errors);
        }
    }

    fn validate_object(
        &self,
        schema: &Value,
        object: &Map<String, Value>,
        at: &str,
        errors: &mut Vec<String>,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                errors.push(format!("{at}: the required property `{name}` is missing"));
            }
        }
        for (name, member) in object {
            let place = format!("{at}.{name}");
            match (
                properties.and_then(|p| p.get(name)),
                schema.get("additionalProperties"),
            ) {
                (Some(property), _) => self.validate(property, member, &place, errors),
                (None, Some(Value::Bool(true))) => {}
                (None, Some(extra @ Value::Object(_))) => {
                    self.validate(extra, member, &place, errors)
                }
                (None, _) => errors.push(format!(
                    "{place}: the answer has it, the schema does not list it"
                )),
            }
        }
    }

    /// Checks every schema in the document: components, request bodies,
    /// responses and parameters.
    fn check_document(&self, errors: &mut Vec<String>) {
        let components = &self.doc["components"];
        for (name, schema) in components["schemas"].as_object().into_iter().flatten() {
            self.check_schema(schema, &format!("components.schemas.{name}"), errors);
        }
        for (name, response) in components["responses"].as_object().into_iter().flatten() {
            self.check_response_object(response, &format!("components.responses.{name}"), errors);
        }
        // Path-level parameters, `patch`, callbacks and the like would go
        // unchecked: refuse them until the checker understands them.
        for (template, item) in self.doc["paths"].as_object().into_iter().flatten() {
            allowed_keys(item, &["get", "put", "post", "delete"], template, errors);
        }
        for (template, method) in self.operations() {
            let operation = &self.doc["paths"][&template][&method];
            let at = format!("{method} {template}");
            allowed_keys(operation, OPERATION_KEYWORDS, &at, errors);
            for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                self.check_response_object(response, &format!("{at} {status}"), errors);
            }
            if let Some(request) = operation.get("requestBody") {
                allowed_keys(
                    request,
                    &["required", "content", "description"],
                    &at,
                    errors,
                );
                self.check_content(&request["content"], &format!("{at} requestBody"), errors);
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let place = format!("{at} parameter {}", parameter["name"]);
                allowed_keys(
                    parameter,
                    &["name", "in", "required", "schema", "description"],
                    &place,
                    errors,
                );
                self.check_schema(&parameter["schema"], &place, errors);
            }
        }
    }

    fn check_response_object(&self, response: &Value, at: &str, errors: &mut Vec<String>) {
        if let Some(reference) = response.get("$ref") {
            allowed_keys(response, &["$ref"], at, errors);
            if let Err(e) = self.resolve_response(response) {
                errors.push(format!("{at}: {e} ({reference})"));
            }
            return;
        }
        allowed_keys(response, &["description", "content"], at, errors);
        if let Some(content) = response.get("content") {
            self.check_content(content, at, errors);
        }
    }

    fn check_content(&self, content: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(content) = content.as_object() else {
            return errors.push(format!("{at}: `content` must be an object"));
        };
        for (media, object) in content {
            let place = format!("{at} {media}");
            allowed_keys(object, &["schema"], &place, errors);
            match object.get("schema") {
                Some(schema) => self.check_schema(schema, &place, errors),
                None => errors.push(format!("{place}: no schema")),
            }
        }
    }

    /// Checks that a schema keeps to the understood subset, and that its
    /// `default` and `example` fit it.
    fn check_schema(&self, schema: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(object) = schema.as_object() else {
            return errors.push(format!("{at}: a schema must be an object"));
        };
        allowed_keys(schema, SCHEMA_KEYWORDS, at, errors);
        if let Some(reference) = object.get("$ref") {
            // OpenAPI 3.0 ignores a $ref's siblings: refuse them rather than
            // let them look meaningful.
            allowed_keys(schema, &["$ref"], at, errors);
            match reference.as_str().and_then(|r| r.strip_prefix(SCHEMA_REF)) {
                Some(name) if self.doc["components"]["schemas"].get(name).is_some() => {}
                _ => errors.push(format!("{at}: $ref {reference} names no component schema")),
            }
            return;
        }
        let kind = object.get("type").and_then(Value::as_str);
        if object.contains_key("type") {
            match kind {
                Some("object" | "array" | "string" | "integer" | "number" | "boolean") => {}
                _ => errors.push(format!("{at}: unknown type {}", object["type"])),
            }
        }
        let only_for = |keys: &[&str], kinds: &[&str], errors: &mut Vec<String>| {
            for key in keys {
                if object.contains_key(*key) && !kind.is_some_and(|k| kinds.contains(&k)) {
                    errors.push(format!("{at}: `{key}` needs type {}", kinds.join(" or ")));
                }
            }
        };
        only_for(
            &["properties", "required", "additionalProperties"],
            &["object"],
            errors,
        );
        only_for(&["items"], &["array"], errors);
        only_for(&["minLength", "pattern", "format"], &["string"], errors);
        only_for(&["minimum", "maximum"], &["integer", "number"], errors);
        for key in ["minimum", "maximum"] {
            if object.get(key).is_some_and(|n| !n.is_number()) {
                errors.push(format!("{at}: `{key}` must be a number"));
            }
        }
        if object.get("minLength").is_some_and(|n| !n.is_u64()) {
            errors.push(format!("{at}: `minLength` must be a whole number"));
        }
        if object.get("required").is_some_and(|r| !r.is_array()) {
            errors.push(format!("{at}: `required` must be an array"));
        }
        if let Some(nullable) = object.get("nullable")
            && !nullable.is_boolean()
        {
            errors.push(format!("{at}: `nullable` must be true or false"));
        }
        if kind == Some("object") {
            let properties = object.get("properties");
            match object.get("additionalProperties") {
                None | Some(Value::Bool(_)) => {}
                Some(extra) => {
                    self.check_schema(extra, &format!("{at}.additionalProperties"), errors)
                }
            }
            if properties.is_none() && !object.contains_key("additionalProperties") {
                errors.push(format!(
                    "{at}: an object must list its `properties` or say `additionalProperties`"
                ));
            }
            let listed = properties.and_then(Value::as_object);
            if properties.is_some() && listed.is_none() {
                errors.push(format!("{at}: `properties` must be an object"));
            }
            for (name, property) in listed.into_iter().flatten() {
                self.check_schema(property, &format!("{at}.{name}"), errors);
            }
            if let Some(required) = object.get("required") {
                for name in required.as_array().into_iter().flatten() {
                    if !name
                        .as_str()
                        .is_some_and(|n| listed.is_some_and(|l| l.contains_key(n)))
                    {
                        errors.push(format!("{at}: required {name} is not a listed property"));
                    }
                }
            }
        }
        if kind == Some("array") {
            match object.get("items") {
                Some(items) => self.check_schema(items, &format!("{at}[]"), errors),
                None => errors.push(format!("{at}: an array must say its `items`")),
            }
        }
        if let Some(pattern) = object.get("pattern")
            && let Err(e) = pattern
                .as_str()
                .ok_or_else(|| "not a string".to_string())
                .and_then(|p| regex::Regex::new(p).map_err(|e| e.to_string()))
        {
            errors.push(format!("{at}: bad pattern {pattern}: {e}"));
        }
        if let Some(format) = object.get("format")
            && format != "binary"
        {
            errors.push(format!("{at}: format {format} is not understood"));
        }
        if let Some(allowed) = object.get("enum")
            && allowed.as_array().is_none_or(|a| a.is_empty())
        {
            errors.push(format!("{at}: `enum` must be a non-empty array"));
        }
        if !errors.is_empty() {
            return; // Checking examples against a broken schema helps nobody.
        }
        for key in ["default", "example"] {
            if let Some(value) = object.get(key) {
                self.validate(schema, value, &format!("{at} {key}"), errors);
            }
        }
    }
}

/// Adds an error for each key of `object` not in `allowed`.
fn allowed_keys(object: &Value, allowed: &[&str], at: &str, errors: &mut Vec<String>) {
    for key in object.as_object().into_iter().flat_map(|o| o.keys()) {
        if !allowed.contains(&key.as_str()) {
            errors.push(format!("{at}: `{key}` is not understood by the checker"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(schemas: Value) -> Result<Document, String> {
        let doc = serde_json::json!({
            "paths": {
                "/things/{id}": { "get": { "responses": {
                    "200": { "description": "", "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Thing" } } } },
                    "204": { "description": "" }
                } } },
                "/things/all": { "get": { "responses": {
                    "200": { "description": "", "content": { "text/plain": {
                        "schema": { "type": "string" } } } }
                } } }
            },
            "components": { "schemas": schemas }
        });
        Document::new(&doc.to_string())
    }

    fn thing() -> Document {
        document(serde_json::json!({
            "Thing": {
                "type": "object",
                "required": ["id"],
                "properties": {
                    "id": { "type": "integer", "minimum": 1 },
                    "name": { "type": "string", "nullable": true, "pattern": "^[a-z]+$" },
                    "kind": { "type": "string", "enum": ["a", "b"] },
                    "tags": { "type": "array", "items": { "type": "string" } },
                    "extra": { "type": "object", "additionalProperties": true }
                }
            },
            "Unused": { "type": "string" }
        }))
        .unwrap()
    }

    fn answer(status: u16, content_type: Option<&str>, body: &str) -> Response {
        Response {
            status,
            headers: content_type
                .map(|t| vec![("content-type".to_string(), t.to_string())])
                .unwrap_or_default(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn check(body: &str) -> Result<(), String> {
        thing().check_response(
            "GET",
            "/things/7",
            &answer(200, Some("application/json"), body),
        )
    }

    #[test]
    fn accepts_what_the_schema_describes() {
        check(r#"{"id":1,"name":null,"kind":"a","tags":["x"],"extra":{"any":[1]}}"#).unwrap();
        check(r#"{"id":1,"name":"abc"}"#).unwrap();
    }

    #[test]
    fn refuses_each_kind_of_difference() {
        for (body, words) in [
            (r#"{"name":"abc"}"#, "`id` is missing"),
            (r#"{"id":1,"colour":"red"}"#, "$.colour"),
            (r#"{"id":"1"}"#, "not of type integer"),
            (r#"{"id":1.5}"#, "not of type integer"),
            (r#"{"id":0}"#, "below the minimum"),
            (r#"{"id":1,"kind":"c"}"#, "not one of"),
            (r#"{"id":1,"name":"ABC"}"#, "does not match"),
            (r#"{"id":1,"tags":[1]}"#, "$.tags[0]"),
            (r#"{"id":null}"#, "not nullable"),
            (r#"[]"#, "not of type object"),
        ] {
            let error = check(body).unwrap_err();
            assert!(error.contains(words), "{body}: {error}");
        }
    }

    #[test]
    fn checks_status_content_type_and_body_presence() {
        let doc = thing();
        let get = |path, response| doc.check_response("GET", path, &response);
        let error = get("/things/7", answer(404, Some("application/json"), "{}")).unwrap_err();
        assert!(error.contains("declares no 404"), "{error}");
        let error = get("/things/7", answer(200, Some("text/html"), "{}")).unwrap_err();
        assert!(error.contains("content type text/html"), "{error}");
        let error = get("/things/7", answer(204, None, "x")).unwrap_err();
        assert!(error.contains("declares no body"), "{error}");
        get("/things/7", answer(204, None, "")).unwrap();
        // The literal path wins over the template.
        get(
            "/things/all",
            answer(200, Some("text/plain; charset=utf-8"), "hi"),
        )
        .unwrap();
        let error = get("/nothing", answer(200, None, "")).unwrap_err();
        assert!(error.contains("no path matching"), "{error}");
    }

    #[test]
    fn counts_the_schemas_real_messages_reach() {
        let doc = thing();
        assert_eq!(doc.unused_schemas(), ["Thing", "Unused"]);
        assert_eq!(doc.uncalled_operations().len(), 2);
        let answer = answer(200, Some("application/json"), r#"{"id":1}"#);
        doc.check_response("GET", "/things/1", &answer).unwrap();
        assert_eq!(doc.unused_schemas(), ["Unused"]);
        assert_eq!(doc.uncalled_operations(), ["GET /things/all"]);
    }

    #[test]
    fn refuses_operations_and_paths_it_does_not_understand() {
        let doc = serde_json::json!({
            "paths": { "/x": {
                "parameters": [],
                "get": { "deprecated": true, "responses": {
                    "200": { "description": "", "headers": {} },
                    "201": { "$ref": "#/components/responses/Nope" }
                } }
            } },
            "components": { "schemas": {} }
        });
        let error = Document::new(&doc.to_string()).err().unwrap();
        for words in [
            "/x: `parameters`",
            "get /x: `deprecated`",
            "get /x 200: `headers`",
            "no response #/components/responses/Nope",
        ] {
            assert!(error.contains(words), "{words}: {error}");
        }
    }

    /// Without a platform: the real document keeps to the subset.
    #[test]
    fn the_control_gate_description_is_understood() {
        let text = include_str!("../../../control-gate/src/openapi.json");
        let doc = Document::new(text).unwrap_or_else(|e| panic!("{e}"));
        assert!(doc.schema_names().len() > 20);
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for (schema, words) in [
            (
                serde_json::json!({ "oneOf": [] }),
                "`oneOf` is not understood",
            ),
            (
                serde_json::json!({ "type": "object" }),
                "must list its `properties`",
            ),
            (
                serde_json::json!({ "type": "array" }),
                "must say its `items`",
            ),
            (serde_json::json!({ "type": "date" }), "unknown type"),
            (
                serde_json::json!({ "type": "string", "format": "uuid" }),
                "not understood",
            ),
            (
                serde_json::json!({ "type": "string", "minimum": 1 }),
                "needs type",
            ),
            (
                serde_json::json!({ "$ref": "#/components/schemas/Nope" }),
                "names no component",
            ),
            (
                serde_json::json!({ "$ref": "#/components/schemas/Thing", "nullable": true }),
                "`nullable` is not understood",
            ),
            (
                serde_json::json!({ "type": "object", "required": ["x"], "properties": {} }),
                "not a listed property",
            ),
            (
                serde_json::json!({ "type": "integer", "minimum": 1, "default": 0 }),
                "below the minimum",
            ),
        ] {
            let error = document(serde_json::json!({ "Thing": schema.clone() }))
                .err()
                .unwrap_or_else(|| panic!("{schema} was accepted"));
            assert!(error.contains(words), "{schema}: {error}");
        }
    }
}
