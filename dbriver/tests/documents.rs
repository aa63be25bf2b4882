//! The documents conformance suite: one list of cases, run against the
//! embedded store and against a MongoDB-wire server through the `mongodb`
//! crate, each answer compared byte for byte with the same expected JSON,
//! so both backends are held to the same contract (SPEC §4).
//!
//! The MongoDB run starts SecantusDB (a MongoDB-wire server from PyPI that
//! `tests/run` installs; found through `ISMS_TEST_MONGO_SERVER` or as
//! `secantusd-py` on PATH) on a free loopback port and stops it at the end.
//! With `ISMS_TEST_MONGODB_URL` set, it runs against that MongoDB instead,
//! in databases named after this run. See tests/README.md.
//!
//! Why one file of this size: one conformance suite, every operation run on
//! both backends and the answers compared; a split would make it possible to
//! add a case to one backend's run only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use isms_dbriver::docs::{DocBackend, DocLimits, DocStore};
use isms_ipc::dbriver::DocOp;
use isms_ipc::{Failure, FailureKind, ProjectName};
use isms_test_support::free_port;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use DocOp::{Delete, Find, Insert, Update};
use FailureKind::{Conflict, Invalid, TooLarge};

/// The limits every run uses: small, so the limit cases stay quick.
fn limits() -> DocLimits {
    DocLimits {
        max_document_bytes: 64 << 10,
        max_results: 50,
        max_project_bytes: 1 << 20,
    }
}

// ---- the runs -------------------------------------------------------------

#[test]
fn embedded() {
    let dir = temp_dir("embedded");
    let runtime = runtime();
    let store = runtime
        .block_on(DocStore::open(
            DocBackend::Embedded { dir: dir.clone() },
            limits(),
        ))
        .unwrap();
    assert_eq!(
        store.describe(),
        format!("embedded store in {}", dir.display())
    );
    let server = format!("embedded store in {}", dir.display());
    run_suite(&runtime, store, &server);
}

#[test]
fn mongodb() {
    let runtime = runtime();
    let (server, url, label) = match std::env::var("ISMS_TEST_MONGODB_URL") {
        Ok(url) if !url.is_empty() => (None, url, None),
        _ => {
            let server = WireServer::start();
            let url = format!(
                "mongodb://{}/?serverSelectionTimeoutMS=2000",
                server.address
            );
            let label = server.label.clone();
            (Some(server), url, Some(label))
        }
    };
    let store = runtime
        .block_on(DocStore::open(
            DocBackend::Mongo { url: url.clone() },
            limits(),
        ))
        .unwrap_or_else(|e| panic!("documents: cannot open MongoDB at {url}: {e:#}"));
    let described = store.describe();
    assert!(described.starts_with("MongoDB at "), "{described}");
    // "SecantusDB 0.7.0b3 at 127.0.0.1:PORT (reports MongoDB 8.2.11)", or
    // the real server's own description.
    let name = match label {
        Some(label) => {
            let version = described
                .rsplit_once("(server ")
                .map(|(_, v)| v.trim_end_matches(')'))
                .unwrap_or("?");
            format!("{label} (reports MongoDB {version})")
        }
        None => described,
    };
    let store = run_suite(&runtime, store, &name);
    differential(&runtime, &store, &name);

    // The server gone, a call answers Unavailable instead of hanging.
    if let Some(server) = server {
        drop(server);
        let project = ProjectName::new(format!("{}-gone", run_id())).unwrap();
        let started = Instant::now();
        let failure = runtime
            .block_on(store.run(&project, Find, "c", ""))
            .expect_err("a find with the server gone");
        assert_eq!(
            failure.kind,
            FailureKind::Unavailable,
            "{name}: {failure:?}"
        );
        assert!(
            failure.message.contains("cannot be reached"),
            "{name}: {failure:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name}: took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn embedded_store_survives_a_restart() {
    let dir = temp_dir("reopen");
    let runtime = runtime();
    let project = ProjectName::new("persist").unwrap();
    let open = || {
        runtime
            .block_on(DocStore::open(
                DocBackend::Embedded { dir: dir.clone() },
                limits(),
            ))
            .unwrap()
    };
    let store = open();
    runtime
        .block_on(store.run(
            &project,
            Insert,
            "c",
            r#"{"_id":"a","n":[1,2.5,{"x":null}]}"#,
        ))
        .unwrap();
    runtime
        .block_on(store.run(&project, Insert, "d", r#"{"_id":1}"#))
        .unwrap();
    drop(store);
    assert!(dir.join("persist.db").exists());
    let store = open();
    let found = runtime
        .block_on(store.run(&project, Find, "c", ""))
        .unwrap();
    assert_eq!(found, r#"[{"_id":"a","n":[1,2.5,{"x":null}]}]"#);
    let listed = runtime.block_on(store.collections(&project)).unwrap();
    assert_eq!(listed.len(), 2);
    // A read of a project that never wrote leaves no file behind.
    let quiet = ProjectName::new("quiet").unwrap();
    assert_eq!(
        runtime.block_on(store.run(&quiet, Find, "c", "")).unwrap(),
        "[]"
    );
    assert!(
        runtime
            .block_on(store.collections(&quiet))
            .unwrap()
            .is_empty()
    );
    assert!(!dir.join("quiet.db").exists());
    runtime.block_on(store.drop_project(&project)).unwrap();
    assert!(!dir.join("persist.db").exists());
}

#[test]
fn mongodb_that_cannot_be_reached_fails_at_open() {
    let runtime = runtime();
    let port = free_port();
    let url = format!("mongodb://isms:s3cret@127.0.0.1:{port}/?serverSelectionTimeoutMS=300");
    let started = Instant::now();
    let Err(e) = runtime.block_on(DocStore::open(DocBackend::Mongo { url }, limits())) else {
        panic!("opened a MongoDB that is not there");
    };
    let message = format!("{e:#}");
    assert!(
        message.contains(&format!("cannot reach MongoDB at 127.0.0.1:{port}")),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let Err(e) = runtime.block_on(DocStore::open(
        DocBackend::Mongo {
            url: "mongodb+srv://cluster.example.net/".into(),
        },
        limits(),
    )) else {
        panic!("accepted mongodb+srv");
    };
    assert!(
        format!("{e}").contains("give the hosts in a mongodb:// URL"),
        "{e}"
    );
}

// ---- the suite ------------------------------------------------------------

type Case = fn(Ctx) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|t| Box::pin($name(t))) as Case)),*]
    };
}

fn all_cases() -> Vec<(&'static str, Case)> {
    cases![
        insert_and_find_back,
        generated_ids,
        id_comes_first,
        numbers_keep_their_kind,
        strings_round_trip,
        duplicate_ids_conflict,
        insert_refusals,
        document_size_limit,
        filter_semantics,
        filter_logic,
        filter_paths_into_arrays,
        filter_numbers_across_types,
        filter_errors,
        projections,
        projection_errors,
        sort_across_types,
        sort_nested_and_default,
        sort_errors,
        skip_and_limit,
        result_limit,
        updates,
        update_counts,
        update_places_new_fields_in_order,
        update_errors,
        update_that_fails_changes_nothing,
        update_size_limit,
        deletes,
        collections_listing,
        collection_name_errors,
        argument_errors,
        projects_are_isolated,
        drop_project,
        project_size_limit,
    ]
}

/// Runs every case against `store`, each on its own project, and fails
/// once at the end with the list of failed cases.
fn run_suite(runtime: &tokio::runtime::Runtime, store: DocStore, server: &str) -> Arc<DocStore> {
    let store = Arc::new(store);
    let run = run_id();
    let cases = all_cases();
    let started = Instant::now();
    let mut failed = Vec::new();
    for (name, case) in &cases {
        let ctx = Ctx {
            store: store.clone(),
            server: server.into(),
            project: ProjectName::new(format!("{run}-{}", name.replace('_', "-"))).unwrap(),
            run: run.clone().into(),
        };
        let outcome = runtime.block_on(async {
            let project = ctx.project.clone();
            let store = ctx.store.clone();
            let outcome = tokio::spawn(case(ctx)).await;
            // Leave nothing behind on a shared MongoDB.
            let _ = store.drop_project(&project).await;
            outcome
        });
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    println!(
        "documents: conformance against {server}: {} of {} cases passed in {:.1?}",
        cases.len() - failed.len(),
        cases.len(),
        started.elapsed()
    );
    assert!(
        failed.is_empty(),
        "{server}: {} cases failed: {}",
        failed.len(),
        failed.join(", ")
    );
    store
}

/// What each case gets: the store, its own project, the server's name for
/// messages.
#[derive(Clone)]
struct Ctx {
    store: Arc<DocStore>,
    server: Arc<str>,
    project: ProjectName,
    run: Arc<str>,
}

impl Ctx {
    fn another_project(&self, suffix: &str) -> ProjectName {
        ProjectName::new(format!("{}-{suffix}", self.run)).unwrap()
    }

    async fn call_in(
        &self,
        project: &ProjectName,
        op: DocOp,
        coll: &str,
        json: &str,
    ) -> Result<String, Failure> {
        self.store.run(project, op, coll, json).await
    }

    async fn ok_in(&self, project: &ProjectName, op: DocOp, coll: &str, json: &str) -> String {
        match self.call_in(project, op, coll, json).await {
            Ok(answer) => answer,
            Err(f) => panic!(
                "{}: {op} {coll} {json}: {:?}: {}",
                self.server, f.kind, f.message
            ),
        }
    }

    async fn ok(&self, op: DocOp, coll: &str, json: &str) -> String {
        self.ok_in(&self.project, op, coll, json).await
    }

    async fn insert(&self, coll: &str, docs: &[&str]) {
        for doc in docs {
            self.ok(Insert, coll, doc).await;
        }
    }

    async fn find(&self, coll: &str, json: &str) -> String {
        self.ok(Find, coll, json).await
    }

    /// Asserts `op` fails with `kind` and a message containing `needle`.
    async fn fails(&self, op: DocOp, coll: &str, json: &str, kind: FailureKind, needle: &str) {
        match self.call_in(&self.project, op, coll, json).await {
            Ok(answer) => panic!(
                "{}: {op} {coll} {json}: answered {answer}, expected {kind:?} `{needle}`",
                self.server
            ),
            Err(f) => {
                assert_eq!(
                    f.kind, kind,
                    "{}: {op} {coll} {json}: {}",
                    self.server, f.message
                );
                assert!(
                    f.message.contains(needle),
                    "{}: {op} {coll} {json}: the message `{}` does not say `{needle}`",
                    self.server,
                    f.message
                );
            }
        }
    }

    /// The `_id`s (one-letter strings) a filter selects, in `_id` order.
    async fn ids(&self, coll: &str, filter: &str) -> String {
        let json = format!(r#"{{"filter":{filter},"projection":{{"_id":1}}}}"#);
        self.ids_of(&self.find(coll, &json).await)
    }

    fn ids_of(&self, found: &str) -> String {
        let docs: serde_json::Value = serde_json::from_str(found).unwrap();
        docs.as_array()
            .unwrap()
            .iter()
            .map(|d| match &d["_id"] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("")
    }

    fn same(&self, got: &str, want: &str, what: &str) {
        assert_eq!(got, want, "{}: {what}", self.server);
    }
}

// ---- inserting ---------------------------------------------------------

async fn insert_and_find_back(t: Ctx) {
    let doc = r#"{"_id":"a","n":1,"f":1.5,"s":"x","b":true,"z":null,"arr":[1,2.0,"y",[]],"o":{"k":"v","e":{}}}"#;
    t.same(
        &t.ok(Insert, "c", doc).await,
        r#"{"id":"a"}"#,
        "insert answer",
    );
    t.same(
        &t.find("c", r#"{"filter":{"_id":"a"}}"#).await,
        &format!("[{doc}]"),
        "found",
    );
    t.same(
        &t.find("c", "").await,
        &format!("[{doc}]"),
        "empty argument",
    );
    t.same(&t.find("c", "  {}  ").await, &format!("[{doc}]"), "{}");
    t.same(
        &t.find("c", r#"{"filter":{},"projection":{},"sort":{}}"#)
            .await,
        &format!("[{doc}]"),
        "empty parts",
    );
    t.same(
        &t.find("c", r#"{"filter":null,"limit":null}"#).await,
        &format!("[{doc}]"),
        "nulls",
    );
    t.same(&t.find("other", "").await, "[]", "another collection");
}

async fn generated_ids(t: Ctx) {
    let a = t.ok(Insert, "c", r#"{"n":1}"#).await;
    let b = t.ok(Insert, "c", r#"{"n":2}"#).await;
    let id = |answer: &str| {
        let v: serde_json::Value = serde_json::from_str(answer).unwrap();
        v["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no string id in {answer}", t.server))
            .to_string()
    };
    let (a, b) = (id(&a), id(&b));
    for id in [&a, &b] {
        assert_eq!(id.len(), 24, "{}: {id}", t.server);
        assert!(
            id.bytes().all(|c| c.is_ascii_hexdigit()),
            "{}: {id}",
            t.server
        );
    }
    assert_ne!(a, b, "{}", t.server);
    let found = t
        .find("c", &format!(r#"{{"filter":{{"_id":"{a}"}}}}"#))
        .await;
    t.same(
        &found,
        &format!(r#"[{{"_id":"{a}","n":1}}]"#),
        "generated id, first",
    );
}

async fn id_comes_first(t: Ctx) {
    t.insert("c", &[r#"{"a":1,"b":{"y":1,"x":2},"_id":"x"}"#])
        .await;
    t.same(
        &t.find("c", "").await,
        r#"[{"_id":"x","a":1,"b":{"y":1,"x":2}}]"#,
        "_id moved first, other keys in order",
    );
}

async fn numbers_keep_their_kind(t: Ctx) {
    let doc = r#"{"_id":1,"ints":[0,-1,2147483647,2147483648,-2147483648,-2147483649,9223372036854775807,-9223372036854775808],"floats":[1.0,-0.0,0.1,1.5,1e+300,2.5e-308,1.7976931348623157e+308,-2.0,123456789.125]}"#;
    t.insert("c", &[doc]).await;
    t.same(&t.find("c", "").await, &format!("[{doc}]"), "numbers");
    // Written differently, read back canonically: the same on both backends.
    t.insert("c", &[r#"{"_id":2,"x":1E2,"y":10.50,"z":-0}"#])
        .await;
    t.same(
        &t.find("c", r#"{"filter":{"_id":2}}"#).await,
        r#"[{"_id":2,"x":100.0,"y":10.5,"z":-0.0}]"#,
        "canonical numbers",
    );
    t.insert("c", &[r#"{"_id":2.5}"#, r#"{"_id":-7}"#]).await;
    t.same(&t.ids("c", "{}").await, "-7122.5", "numeric ids in order");
}

async fn strings_round_trip(t: Ctx) {
    let doc =
        r#"{"_id":"é\u0000✓","s":"line\nbreak \"quoted\" \\ tab\t \u0001 😀 日本","empty":""}"#;
    t.insert("c", &[doc]).await;
    let found = t.find("c", "").await;
    t.same(
        &found,
        r#"[{"_id":"é\u0000✓","s":"line\nbreak \"quoted\" \\ tab\t \u0001 😀 日本","empty":""}]"#,
        "strings",
    );
    t.same(
        &t.ids("c", r#"{"s":{"$gt":"line"}}"#).await,
        "é\u{0}✓",
        "string range",
    );
    let long = "x".repeat(20_000);
    t.insert("c", &[&format!(r#"{{"_id":"long","s":"{long}"}}"#)])
        .await;
    t.same(
        &t.find("c", r#"{"filter":{"_id":"long"}}"#).await,
        &format!(r#"[{{"_id":"long","s":"{long}"}}]"#),
        "a long string",
    );
}

async fn duplicate_ids_conflict(t: Ctx) {
    t.insert("c", &[r#"{"_id":"a","v":1}"#, r#"{"_id":1}"#])
        .await;
    t.fails(
        Insert,
        "c",
        r#"{"_id":"a","v":2}"#,
        Conflict,
        "insert: a document with `_id` \"a\" already exists in `c`",
    )
    .await;
    // 1 and 1.0 are the same key in MongoDB's unique index.
    t.fails(
        Insert,
        "c",
        r#"{"_id":1.0}"#,
        Conflict,
        "`_id` 1.0 already exists",
    )
    .await;
    t.same(
        &t.find("c", r#"{"filter":{"_id":"a"}}"#).await,
        r#"[{"_id":"a","v":1}]"#,
        "unchanged",
    );
    // The same id in another collection is another document.
    t.insert("d", &[r#"{"_id":"a"}"#]).await;
}

async fn insert_refusals(t: Ctx) {
    for (doc, needle) in [
        (
            r#"[{"a":1}]"#,
            "insert: the document must be a JSON object, got an array",
        ),
        (r#""text""#, "must be a JSON object, got a string"),
        ("", "the argument is not valid JSON"),
        (
            r#"{"a":1,}"#,
            "the argument is not valid JSON: trailing comma at line 1 column 8",
        ),
        (
            r#"{"a":1,"a":2}"#,
            "the key `a` appears twice in one object",
        ),
        (r#"{"$set":1}"#, "the key `$set` starts with `$`"),
        (
            r#"{"a":{"b":[{"$x":1}]}}"#,
            "the key `$x` in `a.b.0` starts with `$`",
        ),
        (r#"{"a.b":1}"#, "the key `a.b` contains `.`"),
        (r#"{"a\u0000":1}"#, "contains NUL"),
        (r#"{"":1}"#, "the key `` is empty"),
        (
            r#"{"_id":{"a":1}}"#,
            "`_id` must be a string or a number, got an object",
        ),
        (
            r#"{"_id":[1]}"#,
            "`_id` must be a string or a number, got an array",
        ),
        (r#"{"_id":null}"#, "got null"),
        (r#"{"_id":true}"#, "got a boolean"),
        (r#"{"n":18446744073709551615}"#, "does not fit in 64 bits"),
    ] {
        t.fails(Insert, "c", doc, Invalid, needle).await;
    }
    let deep = format!("{}1{}", r#"{"a":"#.repeat(101), "}".repeat(101));
    t.fails(Insert, "c", &deep, Invalid, "nests deeper than 100 levels")
        .await;
    let ok = format!("{}1{}", r#"{"a":"#.repeat(99), "}".repeat(99));
    t.ok(Insert, "c", &ok).await;
    t.same(
        &t.ids("c", "{}").await.len().to_string(),
        "24",
        "only the valid document",
    );
}

async fn document_size_limit(t: Ctx) {
    // Exactly the limit as compact JSON: {"_id":"max","s":"…"} is 20 bytes
    // around the string.
    let at_limit = format!(r#"{{"_id":"max","s":"{}"}}"#, "x".repeat((64 << 10) - 20));
    assert_eq!(at_limit.len(), 64 << 10);
    t.ok(Insert, "c", &at_limit).await;
    let over = format!(r#"{{"_id":"over","s":"{}"}}"#, "x".repeat((64 << 10) - 20));
    t.fails(
        Insert,
        "c",
        &over,
        TooLarge,
        "insert: the document is 65537 bytes as JSON, over the limit of 65536 bytes",
    )
    .await;
    // Spaces in the argument do not count; the document does.
    let spaced = format!(
        "  {{ \"_id\" : \"sp\" , \"s\" : \"{}\" }}  ",
        "x".repeat((64 << 10) - 19)
    );
    t.ok(Insert, "c", &spaced).await;
    t.same(&t.ids("c", "{}").await, "maxsp", "stored");
}

// ---- filters -----------------------------------------------------------

/// Documents with every shape the filter cases need, `_id`s a to r.
const SHAPES: &[&str] = &[
    r#"{"_id":"a","n":1}"#,
    r#"{"_id":"b","n":1.5}"#,
    r#"{"_id":"c","n":"1"}"#,
    r#"{"_id":"d","n":null}"#,
    r#"{"_id":"e"}"#,
    r#"{"_id":"f","n":[1,5]}"#,
    r#"{"_id":"g","n":{"x":1}}"#,
    r#"{"_id":"h","n":true}"#,
    r#"{"_id":"i","n":[]}"#,
    r#"{"_id":"j","a":{"b":{"c":2}}}"#,
    r#"{"_id":"k","a":[{"b":1},{"b":2}]}"#,
    r#"{"_id":"l","a":[1,2]}"#,
    r#"{"_id":"m","a":[{"b":1},{"c":1}]}"#,
    r#"{"_id":"o","n":[[1]]}"#,
    r#"{"_id":"p","n":1099511627776}"#,
    r#"{"_id":"q","n":1.0}"#,
    r#"{"_id":"r","n":[null,3]}"#,
];

async fn filter_semantics(t: Ctx) {
    t.insert("c", SHAPES).await;
    for (filter, ids) in [
        (r#"{}"#, "abcdefghijklmopqr"),
        (r#"{"n":1}"#, "afq"),
        (r#"{"n":{"$eq":1}}"#, "afq"),
        (r#"{"n":{"$gt":0}}"#, "abfpqr"),
        (r#"{"n":{"$gt":"0"}}"#, "c"),
        (r#"{"n":null}"#, "dejklmr"),
        (r#"{"n":{"$eq":null}}"#, "dejklmr"),
        (r#"{"n":{"$ne":1}}"#, "bcdeghijklmopr"),
        (r#"{"n":{"$ne":null}}"#, "abcfghiopq"),
        (r#"{"n":{"$exists":false}}"#, "ejklm"),
        (r#"{"n":{"$exists":true}}"#, "abcdfghiopqr"),
        (r#"{"n":{"$exists":1}}"#, "abcdfghiopqr"),
        (r#"{"n":{"$in":[1,"1"]}}"#, "acfq"),
        (r#"{"n":{"$in":[null]}}"#, "dejklmr"),
        (r#"{"n":{"$in":[]}}"#, ""),
        (r#"{"n":{"$nin":[1]}}"#, "bcdeghijklmopr"),
        (r#"{"n":{"$nin":[null]}}"#, "abcfghiopq"),
        (r#"{"n":[1]}"#, "o"),
        (r#"{"n":[1,5]}"#, "f"),
        (r#"{"n":[5,1]}"#, ""),
        (r#"{"n":[]}"#, "i"),
        (r#"{"n":{"x":1}}"#, "g"),
        (r#"{"n":{"$eq":[1,5]}}"#, "f"),
        (r#"{"n":{"$lt":true}}"#, ""),
        (r#"{"n":{"$gte":true}}"#, "h"),
        (r#"{"n":{"$gte":null}}"#, "dejklmr"),
        (r#"{"n":{"$lte":null}}"#, "dejklmr"),
        (r#"{"n":{"$gt":null}}"#, ""),
        (r#"{"n":{"$gt":{}}}"#, "g"),
        (r#"{"n":{"$gt":[]}}"#, "for"),
        (r#"{"n":{"$gt":1,"$lt":2}}"#, "bf"),
        (r#"{"n":3}"#, "r"),
        (r#"{"_id":"k"}"#, "k"),
        (r#"{"_id":{"$in":["k","a","zz"]}}"#, "ak"),
        (r#"{"_id":{"$gt":"n"}}"#, "opqr"),
        (r#"{"_id":{"$in":["a","b"]},"n":{"$gt":1}}"#, "b"),
    ] {
        t.same(&t.ids("c", filter).await, ids, filter);
    }
}

async fn filter_logic(t: Ctx) {
    t.insert("c", SHAPES).await;
    for (filter, ids) in [
        (r#"{"$or":[{"n":1},{"n":"1"}]}"#, "acfq"),
        (r#"{"$and":[{"n":{"$gt":0}},{"n":{"$lt":2}}]}"#, "abfq"),
        (
            r#"{"$or":[{"a.b":2},{"$and":[{"n":{"$gte":1}},{"n":{"$lte":1}}]}]}"#,
            "afkq",
        ),
        (r#"{"n":1,"_id":{"$ne":"a"}}"#, "fq"),
        (
            r#"{"$and":[{"n":1}],"$or":[{"_id":"q"},{"_id":"f"}]}"#,
            "fq",
        ),
        (r#"{"$or":[{"n":{"$exists":false}},{"n":null}]}"#, "dejklmr"),
        (
            r#"{"$and":[{"$or":[{"_id":"a"}]},{"$or":[{"_id":"b"}]}]}"#,
            "",
        ),
    ] {
        t.same(&t.ids("c", filter).await, ids, filter);
    }
}

async fn filter_paths_into_arrays(t: Ctx) {
    t.insert("c", SHAPES).await;
    t.insert(
        "c",
        &[
            r#"{"_id":"s","a":[{"b":[5,6]},{"b":{"c":7}}]}"#,
            r#"{"_id":"t","a":{"0":{"b":1}}}"#,
            r#"{"_id":"u","v":[[1,2]]}"#,
        ],
    )
    .await;
    for (filter, ids) in [
        (r#"{"a.b":1}"#, "km"),
        (r#"{"a.b.c":2}"#, "j"),
        (r#"{"a.b.c":7}"#, "s"),
        (r#"{"a.b":6}"#, "s"),
        (r#"{"a.b":null}"#, "abcdefghimopqrtu"),
        (r#"{"a.b":{"$exists":false}}"#, "abcdefghilopqrtu"),
        (r#"{"a.b":{"$exists":true}}"#, "jkms"),
        (r#"{"a.1":2}"#, "l"),
        (r#"{"a.0.b":1}"#, "kmt"),
        (r#"{"a.0":{"b":1}}"#, "kmt"),
        (r#"{"a.5":{"$exists":true}}"#, ""),
        (r#"{"v.0":1}"#, ""),
        (r#"{"v.0":[1,2]}"#, "u"),
        (r#"{"v.0.1":2}"#, "u"),
        (r#"{"v":[1,2]}"#, "u"),
        (r#"{"a.b":{"$gt":5}}"#, "s"),
        (r#"{"a.b":{"$in":[2,7]}}"#, "k"),
        (r#"{"a.b":{"$nin":[1,2]}}"#, "abcdefghijlopqrstu"),
    ] {
        t.same(&t.ids("c", filter).await, ids, filter);
    }
}

async fn filter_numbers_across_types(t: Ctx) {
    t.insert(
        "c",
        &[
            r#"{"_id":"a","n":9007199254740993}"#,
            r#"{"_id":"b","n":9007199254740992.0}"#,
            r#"{"_id":"c","n":-0.0}"#,
            r#"{"_id":"d","n":0}"#,
            r#"{"_id":"e","n":2147483648}"#,
            r#"{"_id":"f","n":-1.5}"#,
            r#"{"_id":"g","n":"9"}"#,
        ],
    )
    .await;
    for (filter, ids) in [
        (r#"{"n":9007199254740992}"#, "b"),
        (r#"{"n":{"$gt":9007199254740992}}"#, "a"),
        (r#"{"n":{"$gt":9007199254740992.0}}"#, "a"),
        (r#"{"n":0}"#, "cd"),
        (r#"{"n":-0.0}"#, "cd"),
        (r#"{"n":2147483648.0}"#, "e"),
        (r#"{"n":{"$lt":-1}}"#, "f"),
        (r#"{"n":{"$gte":-1.5,"$lt":0.5}}"#, "cdf"),
        (r#"{"n":{"$lt":10}}"#, "cdf"),
        (r#"{"n":{"$in":[0,9]}}"#, "cd"),
    ] {
        t.same(&t.ids("c", filter).await, ids, filter);
    }
}

async fn filter_errors(t: Ctx) {
    t.insert("c", &[r#"{"_id":"a","n":1}"#]).await;
    for (filter, needle) in [
        (
            r#"{"n":{"$regex":"x"}}"#,
            "unknown operator `$regex` in the filter at `n` (supported: $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists)",
        ),
        (
            r#"{"a.b":{"$elemMatch":{"c":1}}}"#,
            "unknown operator `$elemMatch` in the filter at `a.b`",
        ),
        (
            r#"{"n":{"$not":{"$eq":1}}}"#,
            "unknown operator `$not` in the filter at `n`",
        ),
        (r#"{"n":{"$size":1}}"#, "unknown operator `$size`"),
        (r#"{"n":{"$type":"int"}}"#, "unknown operator `$type`"),
        (
            r#"{"$where":"1"}"#,
            "unknown operator `$where` at the top of the filter (supported there: $and, $or",
        ),
        (
            r#"{"$nor":[{"n":1}]}"#,
            "unknown operator `$nor` at the top of the filter",
        ),
        (
            r#"{"$or":[{"n":{"$mod":[2,0]}}]}"#,
            "unknown operator `$mod` in the filter at `n`",
        ),
        (
            r#"{"$and":[{"$text":{}}]}"#,
            "unknown operator `$text` at the top of `$and` item 0",
        ),
        (
            r#"{"$or":[]}"#,
            "`$or` needs a non-empty array of filters, got an array",
        ),
        (
            r#"{"$and":{"n":1}}"#,
            "`$and` needs a non-empty array of filters, got an object",
        ),
        (
            r#"{"$or":["n"]}"#,
            "`$or` item 0 must be a filter object, got a string",
        ),
        (
            r#"{"n":{"$in":1}}"#,
            "`$in` at `n` needs an array, got a number",
        ),
        (
            r#"{"n":{"$nin":{}}}"#,
            "`$nin` at `n` needs an array, got an object",
        ),
        (
            r#"{"n":{"$exists":"yes"}}"#,
            "`$exists` at `n` needs true or false, got a string",
        ),
        (
            r#"{"n":{"$gt":1,"x":2}}"#,
            "the filter at `n` mixes operators with the field name `x`",
        ),
        (r#"{"a..b":1}"#, "bad field path `a..b`: an empty part"),
        (r#"{"a.$.b":1}"#, "bad field path `a.$.b`"),
        (
            r#"{"n":{"$in":[{"$gt":1}]}}"#,
            "`$in` at `n` holds the key `$gt`; values in a filter may not have keys starting with `$`",
        ),
        (
            r#"{"n":{"o":{"$exists":true}}}"#,
            "the value at `n` holds the key `$exists`",
        ),
    ] {
        // The same message on every call that takes a filter.
        let find = format!(r#"{{"filter":{filter}}}"#);
        t.fails(Find, "c", &find, Invalid, &format!("find: {needle}"))
            .await;
        let update = format!(r#"{{"filter":{filter},"update":{{"$set":{{"x":1}}}}}}"#);
        t.fails(Update, "c", &update, Invalid, &format!("update: {needle}"))
            .await;
        t.fails(Delete, "c", &find, Invalid, &format!("delete: {needle}"))
            .await;
    }
    t.fails(
        Find,
        "c",
        r#"{"filter":[]}"#,
        Invalid,
        "find: `filter` must be an object, got an array",
    )
    .await;
    t.fails(
        Find,
        "c",
        r#"{"filter":"n"}"#,
        Invalid,
        "`filter` must be an object, got a string",
    )
    .await;
    t.same(&t.ids("c", "{}").await, "a", "nothing changed");
}

// ---- projections and sorts --------------------------------------------

async fn projections(t: Ctx) {
    t.insert(
        "c",
        &[r#"{"_id":2,"a":{"c":1,"d":{"e":1,"f":2}},"b":[{"b":1,"c":2},5,[{"b":3}]],"s":5}"#],
    )
    .await;
    for (projection, want) in [
        (r#"{"s":1}"#, r#"{"_id":2,"s":5}"#),
        (
            r#"{"s":1,"a":1}"#,
            r#"{"_id":2,"a":{"c":1,"d":{"e":1,"f":2}},"s":5}"#,
        ),
        (r#"{"s":true,"_id":0}"#, r#"{"s":5}"#),
        (r#"{"a.d.f":1}"#, r#"{"_id":2,"a":{"d":{"f":2}}}"#),
        (
            r#"{"a.x":1,"b.b":1,"s.t":1}"#,
            r#"{"_id":2,"a":{},"b":[{"b":1},[{"b":3}]]}"#,
        ),
        (
            r#"{"a.c":0,"b.b":0,"s.t":0}"#,
            r#"{"_id":2,"a":{"d":{"e":1,"f":2}},"b":[{"c":2},5,[{}]],"s":5}"#,
        ),
        (r#"{"a":0,"b":0}"#, r#"{"_id":2,"s":5}"#),
        (r#"{"_id":1}"#, r#"{"_id":2}"#),
        (
            r#"{"_id":0}"#,
            r#"{"a":{"c":1,"d":{"e":1,"f":2}},"b":[{"b":1,"c":2},5,[{"b":3}]],"s":5}"#,
        ),
        (
            r#"{"s":0,"_id":1}"#,
            r#"{"_id":2,"a":{"c":1,"d":{"e":1,"f":2}},"b":[{"b":1,"c":2},5,[{"b":3}]]}"#,
        ),
        (r#"{"missing":1}"#, r#"{"_id":2}"#),
        (r#"{"missing":1,"_id":0}"#, r#"{}"#),
    ] {
        let found = t
            .find("c", &format!(r#"{{"projection":{projection}}}"#))
            .await;
        t.same(&found, &format!("[{want}]"), projection);
    }
}

async fn projection_errors(t: Ctx) {
    for (projection, needle) in [
        (
            r#"{"a":1,"b":0}"#,
            "find: the projection both keeps `a` and drops `b`",
        ),
        (r#"{"a":0,"b":1}"#, "keeps `b` and drops `a`"),
        (
            r#"{"a":1,"a.b":1}"#,
            "the projection names `a.b` and a path inside or around it",
        ),
        (
            r#"{"a":"yes"}"#,
            "the projection of `a` must be 1 or 0 (or true or false), got a string",
        ),
        (
            r#"{"a":{"$slice":2}}"#,
            "the projection of `a` must be 1 or 0",
        ),
        (r#"{"a.":1}"#, "bad field path `a.`"),
        (r#"[]"#, "`projection` must be an object, got an array"),
    ] {
        t.fails(
            Find,
            "c",
            &format!(r#"{{"projection":{projection}}}"#),
            Invalid,
            needle,
        )
        .await;
    }
}

async fn sort_across_types(t: Ctx) {
    t.insert("c", SHAPES).await;
    let order = |sort: &str| format!(r#"{{"sort":{sort},"projection":{{"_id":1}}}}"#);
    t.same(
        &t.ids_of(&t.find("c", &order(r#"{"n":1}"#)).await),
        "idejklmrafqbpcgoh",
        "ascending",
    );
    t.same(
        &t.ids_of(&t.find("c", &order(r#"{"n":-1}"#)).await),
        "hogcpfrbaqdejklmi",
        "descending",
    );
    t.same(
        &t.ids_of(&t.find("c", &order(r#"{"a.b":1}"#)).await),
        "abcdefghilopqrkmj",
        "a.b ascending",
    );
    t.same(
        &t.ids_of(&t.find("c", &order(r#"{"a.b":-1}"#)).await),
        "jkmabcdefghilopqr",
        "a.b descending",
    );
    t.same(
        &t.ids_of(&t.find("c", &order(r#"{"_id":-1}"#)).await),
        "rqpomlkjihgfedcba",
        "_id descending",
    );
}

async fn sort_nested_and_default(t: Ctx) {
    t.insert(
        "c",
        &[
            r#"{"_id":"b","g":1,"t":{"v":2}}"#,
            r#"{"_id":3,"g":2,"t":{"v":1}}"#,
            r#"{"_id":"a","g":1,"t":{"v":3}}"#,
            r#"{"_id":1.5,"g":2,"t":{"v":3}}"#,
            r#"{"_id":"c","g":1.0,"t":{"v":2.5}}"#,
        ],
    )
    .await;
    // With no sort, by `_id`: numbers before strings.
    t.same(&t.ids("c", "{}").await, "1.53abc", "default order");
    let order = |sort: &str| format!(r#"{{"sort":{sort},"projection":{{"_id":1}}}}"#);
    t.same(
        &t.ids_of(&t.find("c", &order(r#"{"g":1}"#)).await),
        "abc1.53",
        "ties by _id",
    );
    t.same(
        &t.ids_of(&t.find("c", &order(r#"{"g":-1,"t.v":1}"#)).await),
        "31.5bca",
        "two keys",
    );
    t.same(
        &t.ids_of(&t.find("c", &order(r#"{"t.v":-1.0}"#)).await),
        "1.5acb3",
        "nested, descending",
    );
}

async fn sort_errors(t: Ctx) {
    for (sort, needle) in [
        (
            r#"{"a":2}"#,
            "find: the sort direction of `a` must be 1 or -1, got 2",
        ),
        (
            r#"{"a":"asc"}"#,
            "the sort direction of `a` must be 1 or -1, got a string",
        ),
        (r#"{"a":0}"#, "must be 1 or -1, got 0"),
        (r#"{"a..b":1}"#, "bad field path `a..b`"),
        (r#"[["a",1]]"#, "`sort` must be an object, got an array"),
    ] {
        t.fails(Find, "c", &format!(r#"{{"sort":{sort}}}"#), Invalid, needle)
            .await;
    }
}

async fn skip_and_limit(t: Ctx) {
    let docs: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"_id":"{}","i":{i}}}"#, (b'a' + i) as char))
        .collect();
    let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
    t.insert("c", &docs).await;
    for (args, ids) in [
        (r#""limit":3"#, "abc"),
        (r#""skip":8"#, "ij"),
        (r#""skip":3,"limit":2"#, "de"),
        (r#""skip":3,"limit":2,"sort":{"i":-1}"#, "gf"),
        (r#""skip":10"#, ""),
        (r#""skip":100,"limit":5"#, ""),
        (r#""limit":0"#, "abcdefghij"),
        (r#""limit":50"#, "abcdefghij"),
        (r#""limit":2.0,"skip":1.0"#, "bc"),
        (r#""filter":{"i":{"$gte":5}},"limit":2"#, "fg"),
    ] {
        let found = t
            .find("c", &format!(r#"{{{args},"projection":{{"_id":1}}}}"#))
            .await;
        t.same(&t.ids_of(&found), ids, args);
    }
    for (args, needle) in [
        (
            r#""limit":-1"#,
            "find: `limit` must be a whole number of 0 or more, got -1",
        ),
        (
            r#""skip":-5"#,
            "`skip` must be a whole number of 0 or more, got -5",
        ),
        (
            r#""limit":1.5"#,
            "`limit` must be a whole number of 0 or more, got 1.5",
        ),
        (r#""limit":"10""#, "got a string"),
    ] {
        t.fails(Find, "c", &format!("{{{args}}}"), Invalid, needle)
            .await;
    }
}

async fn result_limit(t: Ctx) {
    // max_results is 50 in this suite.
    let docs: Vec<String> = (0..51).map(|i| format!(r#"{{"_id":{i}}}"#)).collect();
    let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
    t.insert("c", &docs[..50]).await;
    let all = t.find("c", "").await;
    assert_eq!(
        all.matches("_id").count(),
        50,
        "{}: exactly the most",
        t.server
    );
    t.insert("c", &docs[50..]).await;
    let needle = "find: more than 50 documents match; give a limit (at most 50) and page with skip";
    t.fails(Find, "c", "", TooLarge, needle).await;
    t.fails(
        Find,
        "c",
        r#"{"limit":51}"#,
        TooLarge,
        "find: the limit 51 is over the most one find returns, 50",
    )
    .await;
    let page = t.find("c", r#"{"limit":50,"skip":50}"#).await;
    t.same(&page, r#"[{"_id":50}]"#, "the last page");
    t.same(
        &t.find("c", r#"{"skip":1}"#)
            .await
            .matches("_id")
            .count()
            .to_string(),
        "50",
        "skip brings it under",
    );
    t.same(
        &t.find("c", r#"{"filter":{"_id":{"$lt":3}}}"#).await,
        r#"[{"_id":0},{"_id":1},{"_id":2}]"#,
        "filtered",
    );
}

// ---- updates -----------------------------------------------------------

async fn updates(t: Ctx) {
    t.insert(
        "c",
        &[
            r#"{"_id":"a","n":1,"f":1.5,"s":"x","o":{"k":1},"arr":[1,2]}"#,
            r#"{"_id":"b","n":10}"#,
        ],
    )
    .await;
    let cases = [
        (
            r#"{"filter":{"_id":"a"},"update":{"$set":{"s":"y","o.k":2,"o.new":[1]}}}"#,
            r#"{"_id":"a","n":1,"f":1.5,"s":"y","o":{"k":2,"new":[1]},"arr":[1,2]}"#,
        ),
        (
            r#"{"filter":{"_id":"a"},"update":{"$inc":{"n":2,"f":1}}}"#,
            r#"{"_id":"a","n":3,"f":2.5,"s":"y","o":{"k":2,"new":[1]},"arr":[1,2]}"#,
        ),
        (
            r#"{"filter":{"_id":"a"},"update":{"$inc":{"n":0.5}}}"#,
            r#"{"_id":"a","n":3.5,"f":2.5,"s":"y","o":{"k":2,"new":[1]},"arr":[1,2]}"#,
        ),
        (
            r#"{"filter":{"_id":"a"},"update":{"$unset":{"o.k":"","f":1,"nothing":""}}}"#,
            r#"{"_id":"a","n":3.5,"s":"y","o":{"new":[1]},"arr":[1,2]}"#,
        ),
        (
            r#"{"filter":{"_id":"a"},"update":{"$set":{"arr.1":9,"arr.3":7}}}"#,
            r#"{"_id":"a","n":3.5,"s":"y","o":{"new":[1]},"arr":[1,9,null,7]}"#,
        ),
        (
            r#"{"filter":{"_id":"a"},"update":{"$unset":{"arr.0":""}}}"#,
            r#"{"_id":"a","n":3.5,"s":"y","o":{"new":[1]},"arr":[null,9,null,7]}"#,
        ),
        (
            r#"{"filter":{"_id":"a"},"update":{"$set":{"deep.x.y":{"z":[true]}},"$inc":{"tally.n":1}}}"#,
            r#"{"_id":"a","n":3.5,"s":"y","o":{"new":[1]},"arr":[null,9,null,7],"deep":{"x":{"y":{"z":[true]}}},"tally":{"n":1}}"#,
        ),
        (
            r#"{"filter":{"_id":"a"},"update":{"$set":{"n":9223372036854775807,"s":null}}}"#,
            r#"{"_id":"a","n":9223372036854775807,"s":null,"o":{"new":[1]},"arr":[null,9,null,7],"deep":{"x":{"y":{"z":[true]}}},"tally":{"n":1}}"#,
        ),
    ];
    for (update, after) in cases {
        t.same(
            &t.ok(Update, "c", update).await,
            r#"{"matched":1,"modified":1}"#,
            update,
        );
        t.same(
            &t.find("c", r#"{"filter":{"_id":"a"}}"#).await,
            &format!("[{after}]"),
            update,
        );
    }
    t.same(
        &t.find("c", r#"{"filter":{"_id":"b"}}"#).await,
        r#"[{"_id":"b","n":10}]"#,
        "b untouched",
    );
    // Integers stay integers past 32 bits.
    t.ok(
        Update,
        "c",
        r#"{"filter":{"_id":"b"},"update":{"$inc":{"n":2147483647}}}"#,
    )
    .await;
    t.same(
        &t.find("c", r#"{"filter":{"_id":"b"}}"#).await,
        r#"[{"_id":"b","n":2147483657}]"#,
        "int64",
    );
}

async fn update_counts(t: Ctx) {
    t.insert(
        "c",
        &[
            r#"{"_id":1,"g":"x","v":1}"#,
            r#"{"_id":2,"g":"x","v":2}"#,
            r#"{"_id":3,"g":"y","v":1}"#,
        ],
    )
    .await;
    for (update, answer) in [
        (
            r#"{"filter":{"g":"x"},"update":{"$set":{"v":1}}}"#,
            r#"{"matched":2,"modified":1}"#,
        ),
        (
            r#"{"filter":{"g":"x"},"update":{"$set":{"v":1}}}"#,
            r#"{"matched":2,"modified":0}"#,
        ),
        // 1.0 is not 1 stored: the type changes.
        (
            r#"{"filter":{"_id":1},"update":{"$set":{"v":1.0}}}"#,
            r#"{"matched":1,"modified":1}"#,
        ),
        (
            r#"{"filter":{},"update":{"$inc":{"v":1}}}"#,
            r#"{"matched":3,"modified":3}"#,
        ),
        (
            r#"{"filter":{"g":"z"},"update":{"$set":{"v":0}}}"#,
            r#"{"matched":0,"modified":0}"#,
        ),
        (
            r#"{"filter":{"g":"x"},"update":{"$unset":{"absent":""}}}"#,
            r#"{"matched":2,"modified":0}"#,
        ),
        (
            r#"{"filter":{"_id":3},"update":{"$set":{}}}"#,
            r#"{"matched":1,"modified":0}"#,
        ),
        (
            r#"{"update":{"$set":{"w":true}}}"#,
            r#"{"matched":3,"modified":3}"#,
        ),
    ] {
        t.same(&t.ok(Update, "c", update).await, answer, update);
    }
    t.same(
        &t.find("c", "").await,
        r#"[{"_id":1,"g":"x","v":2.0,"w":true},{"_id":2,"g":"x","v":2,"w":true},{"_id":3,"g":"y","v":2,"w":true}]"#,
        "after",
    );
    t.same(
        &t.ok(Update, "nothing-here", r#"{"update":{"$set":{"a":1}}}"#)
            .await,
        r#"{"matched":0,"modified":0}"#,
        "no collection",
    );
    t.same(
        &t.find(
            "c",
            r#"{"filter":{"_id":{"$in":[1,3]}},"projection":{"_id":1}}"#,
        )
        .await,
        r#"[{"_id":1},{"_id":3}]"#,
        "by id",
    );
}

async fn update_places_new_fields_in_order(t: Ctx) {
    // MongoDB 5+ applies an update's fields in order of name (numbers by
    // number), whatever order the request gives them in.
    t.insert("c", &[r#"{"_id":1,"m":0}"#]).await;
    t.ok(Update, "c", r#"{"filter":{"_id":1},"update":{"$set":{"b":1,"a":2,"a-c":0,"x.z":1,"x.y":2,"n.10":1,"n.9":1}}}"#)
        .await;
    t.same(
        &t.find("c", "").await,
        r#"[{"_id":1,"m":0,"a":2,"a-c":0,"b":1,"n":{"9":1,"10":1},"x":{"y":2,"z":1}}]"#,
        "new fields in name order",
    );
}

async fn update_errors(t: Ctx) {
    t.insert(
        "c",
        &[r#"{"_id":"a","n":1,"s":"x","big":9223372036854775807,"arr":[1]}"#],
    )
    .await;
    for (args, needle) in [
        (r#"{"filter":{}}"#, "update: the argument needs `update`"),
        (
            r#"{"update":{}}"#,
            "update: the update is empty: give at least one of $set, $inc, $unset",
        ),
        (
            r#"{"update":[]}"#,
            "the update must be an object of operators ($set, $inc, $unset), got an array",
        ),
        (
            r#"{"update":{"n":2}}"#,
            "the update names the field `n` where an operator belongs",
        ),
        (
            r#"{"update":{"$push":{"arr":2}}}"#,
            "unknown update operator `$push` (supported: $set, $inc, $unset)",
        ),
        (
            r#"{"update":{"$rename":{"n":"m"}}}"#,
            "unknown update operator `$rename`",
        ),
        (
            r#"{"update":{"$set":{"_id":"b"}}}"#,
            "`$set` may not change `_id`",
        ),
        (
            r#"{"update":{"$unset":{"_id":""}}}"#,
            "`$unset` may not change `_id`",
        ),
        (
            r#"{"update":{"$inc":{"n":"1"}}}"#,
            "`$inc` of `n` needs a number, got a string",
        ),
        (
            r#"{"update":{"$set":1}}"#,
            "`$set` needs an object of fields, got a number",
        ),
        (
            r#"{"update":{"$set":{"n":1,"n.x":1}}}"#,
            "the update changes both `n` ($set) and `n.x` ($set), which overlap",
        ),
        (
            r#"{"update":{"$set":{"n":1},"$inc":{"n":1}}}"#,
            "changes both `n` ($set) and `n` ($inc)",
        ),
        (
            r#"{"update":{"$set":{"o":{"$bad":1}}}}"#,
            "`$set` of `o`: the key `$bad` in `o` starts with `$`",
        ),
        (
            r#"{"update":{"$set":{"o":{"a.b":1}}}}"#,
            "the key `a.b` in `o` contains `.`",
        ),
        (
            r#"{"update":{"$set":{"a.$.b":1}}}"#,
            "bad field path `a.$.b`",
        ),
        (
            r#"{"update":{"$inc":{"s":1}}}"#,
            "update: `$inc` of `s` needs a number there, but it holds a string in the document with `_id` \"a\"",
        ),
        (
            r#"{"update":{"$inc":{"big":1}}}"#,
            "`$inc` of `big` overflows a 64-bit integer (9223372036854775807 + 1)",
        ),
        (
            r#"{"update":{"$set":{"n.x":1}}}"#,
            "cannot change `n.x`: `n` holds a number, not an object or array in the document with `_id` \"a\"",
        ),
        (
            r#"{"update":{"$set":{"arr.x":1}}}"#,
            "cannot change `arr.x`: `arr` is an array, so `x` would have to be an index",
        ),
        (r#"{"update":{"$set":{"s.0.x":1}}}"#, "`s` holds a string"),
        (
            r#"{"filter":{},"update":{"$set":{"a":1}},"upsert":true}"#,
            "update: unknown key `upsert` (expected filter, update)",
        ),
    ] {
        t.fails(Update, "c", args, Invalid, needle).await;
    }
    t.same(
        &t.find("c", "").await,
        r#"[{"_id":"a","n":1,"s":"x","big":9223372036854775807,"arr":[1]}]"#,
        "unchanged",
    );
}

async fn update_that_fails_changes_nothing(t: Ctx) {
    // The bad document sorts last: a server applying the update one
    // document at a time would have changed the others first.
    t.insert(
        "c",
        &[
            r#"{"_id":1,"v":1}"#,
            r#"{"_id":2,"v":2}"#,
            r#"{"_id":3,"v":"three"}"#,
        ],
    )
    .await;
    t.fails(
        Update,
        "c",
        r#"{"update":{"$inc":{"v":1}}}"#,
        Invalid,
        "holds a string in the document with `_id` 3",
    )
    .await;
    t.same(
        &t.find("c", "").await,
        r#"[{"_id":1,"v":1},{"_id":2,"v":2},{"_id":3,"v":"three"}]"#,
        "nothing changed",
    );
}

async fn update_size_limit(t: Ctx) {
    t.insert("c", &[r#"{"_id":"a","s":""}"#, r#"{"_id":"b"}"#])
        .await;
    let big = "x".repeat(64 << 10);
    let update = format!(r#"{{"filter":{{"_id":"a"}},"update":{{"$set":{{"s":"{big}"}}}}}}"#);
    t.fails(
        Update,
        "c",
        &update,
        TooLarge,
        "update: the document is 65554 bytes as JSON, over the limit of 65536 bytes",
    )
    .await;
    let fits = "x".repeat((64 << 10) - 100);
    let update = format!(r#"{{"update":{{"$set":{{"s":"{fits}"}}}}}}"#);
    t.same(
        &t.ok(Update, "c", &update).await,
        r#"{"matched":2,"modified":2}"#,
        "under the limit",
    );
    let update = r#"{"filter":{"_id":"a"},"update":{"$set":{"more":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}"#;
    t.fails(
        Update,
        "c",
        update,
        TooLarge,
        "over the limit of 65536 bytes",
    )
    .await;
    t.same(
        &t.find("c", r#"{"filter":{"more":{"$exists":true}}}"#).await,
        "[]",
        "unchanged",
    );
}

// ---- deletes, collections, projects -------------------------------------

async fn deletes(t: Ctx) {
    t.insert("c", SHAPES).await;
    t.same(
        &t.ok(Delete, "c", r#"{"filter":{"n":{"$exists":false}}}"#)
            .await,
        r#"{"deleted":5}"#,
        "by filter",
    );
    t.same(&t.ids("c", "{}").await, "abcdfghiopqr", "left");
    t.same(
        &t.ok(Delete, "c", r#"{"filter":{"_id":"zz"}}"#).await,
        r#"{"deleted":0}"#,
        "nothing",
    );
    t.same(
        &t.ok(Delete, "c", r#"{"filter":{"_id":{"$in":["a","b"]}}}"#)
            .await,
        r#"{"deleted":2}"#,
        "by id",
    );
    t.same(
        &t.ok(Delete, "c", r#"{"filter":{}}"#).await,
        r#"{"deleted":10}"#,
        "all",
    );
    t.same(&t.find("c", "").await, "[]", "empty");
    t.insert("c", &[r#"{"_id":1}"#, r#"{"_id":2}"#]).await;
    t.same(
        &t.ok(Delete, "c", "").await,
        r#"{"deleted":2}"#,
        "all, empty argument",
    );
    t.same(
        &t.ok(Delete, "none", "").await,
        r#"{"deleted":0}"#,
        "no collection",
    );
    t.fails(
        Delete,
        "c",
        r#"{"filter":{},"limit":1}"#,
        Invalid,
        "delete: unknown key `limit` (expected filter)",
    )
    .await;
    // An emptied collection stays, with no documents.
    let listed = t.store.collections(&t.project).await.unwrap();
    assert_eq!(
        format!("{listed:?}"),
        r#"[CollectionInfo { name: "c", count: 0 }]"#,
        "{}",
        t.server
    );
}

async fn collections_listing(t: Ctx) {
    assert!(
        t.store.collections(&t.project).await.unwrap().is_empty(),
        "{}",
        t.server
    );
    t.insert("b", &[r#"{"_id":1}"#, r#"{"_id":2}"#]).await;
    t.insert("a_x", &[r#"{"_id":1}"#]).await;
    t.insert("Z-9", &[r#"{"_id":1}"#, r#"{"_id":2}"#, r#"{"_id":3}"#])
        .await;
    t.insert("_", &[r#"{"_id":1}"#]).await;
    // Reads, updates and deletes do not create collections.
    t.find("ghost", "").await;
    t.ok(Update, "ghost", r#"{"update":{"$set":{"a":1}}}"#)
        .await;
    t.ok(Delete, "ghost", "").await;
    let listed: Vec<String> = t
        .store
        .collections(&t.project)
        .await
        .unwrap()
        .into_iter()
        .map(|c| format!("{}={}", c.name, c.count))
        .collect();
    t.same(
        &listed.join(" "),
        "Z-9=3 _=1 a_x=1 b=2",
        "collections by name, with counts",
    );
}

async fn collection_name_errors(t: Ctx) {
    let long = "x".repeat(65);
    for name in ["", "a.b", "a b", "système", "$cmd", "a/b", long.as_str()] {
        for op in [Insert, Find, Update, Delete] {
            t.fails(op, name, r#"{"_id":1}"#, Invalid, "bad collection name")
                .await;
        }
    }
    t.fails(
        Find,
        "a.b",
        "",
        Invalid,
        "bad collection name `a.b`: use 1 to 64 of A-Z, a-z, 0-9, _ and -",
    )
    .await;
    t.ok(Insert, &"x".repeat(64), "{}").await;
}

async fn argument_errors(t: Ctx) {
    for (op, args, needle) in [
        (
            Find,
            r#"{"filter":{},"extra":1}"#,
            "find: unknown key `extra` (expected filter, projection, sort, limit, skip)",
        ),
        (
            Find,
            "[]",
            "find: the argument must be a JSON object with the keys filter, projection, sort, limit, skip",
        ),
        (
            Find,
            "{",
            "find: the argument is not valid JSON: EOF while parsing an object at line 1 column 1",
        ),
        (
            Find,
            "nope",
            "find: the argument is not valid JSON: expected ident at line 1 column 2",
        ),
        (
            Update,
            "1",
            "update: the argument must be a JSON object with the keys filter, update",
        ),
        (
            Delete,
            r#"{"filter":1}"#,
            "delete: `filter` must be an object, got a number",
        ),
        (
            Find,
            r#"{"projection":1}"#,
            "find: `projection` must be an object, got a number",
        ),
    ] {
        t.fails(op, "c", args, Invalid, needle).await;
    }
    let deep = format!(
        r#"{{"filter":{}1{}}}"#,
        r#"{"a":"#.repeat(101),
        "}".repeat(101)
    );
    t.fails(
        Find,
        "c",
        &deep,
        Invalid,
        "find: the argument nests deeper than 100 levels",
    )
    .await;
}

async fn projects_are_isolated(t: Ctx) {
    let other = t.another_project("other");
    t.insert("shared", &[r#"{"_id":"a","owner":"first"}"#])
        .await;
    t.same(
        &t.ok_in(&other, Find, "shared", "").await,
        "[]",
        "the other project sees nothing",
    );
    assert!(
        t.store.collections(&other).await.unwrap().is_empty(),
        "{}",
        t.server
    );
    // Same collection and `_id` in the other project: no conflict.
    t.ok_in(&other, Insert, "shared", r#"{"_id":"a","owner":"second"}"#)
        .await;
    t.same(
        &t.ok_in(
            &other,
            Update,
            "shared",
            r#"{"update":{"$set":{"touched":true}}}"#,
        )
        .await,
        r#"{"matched":1,"modified":1}"#,
        "update there",
    );
    t.same(
        &t.find("shared", "").await,
        r#"[{"_id":"a","owner":"first"}]"#,
        "this project's document untouched",
    );
    t.same(
        &t.ok_in(&other, Delete, "shared", "").await,
        r#"{"deleted":1}"#,
        "delete there",
    );
    t.same(
        &t.find("shared", "").await,
        r#"[{"_id":"a","owner":"first"}]"#,
        "still here",
    );
    t.store.drop_project(&other).await.unwrap();
    t.same(
        &t.find("shared", "").await,
        r#"[{"_id":"a","owner":"first"}]"#,
        "dropping the other leaves this one",
    );
}

async fn drop_project(t: Ctx) {
    t.insert("a", &[r#"{"_id":1}"#]).await;
    t.insert("b", &[r#"{"_id":1}"#]).await;
    t.store.drop_project(&t.project).await.unwrap();
    assert!(
        t.store.collections(&t.project).await.unwrap().is_empty(),
        "{}",
        t.server
    );
    t.same(&t.find("a", "").await, "[]", "gone");
    // The same ids again, from scratch.
    t.insert("a", &[r#"{"_id":1,"again":true}"#]).await;
    t.same(
        &t.find("a", "").await,
        r#"[{"_id":1,"again":true}]"#,
        "a fresh store",
    );
    // Dropping a project without a store is fine.
    t.store
        .drop_project(&t.another_project("never"))
        .await
        .unwrap();
}

async fn project_size_limit(t: Ctx) {
    // 1 MiB per project in this suite; 56 KiB documents.
    let body = "x".repeat(56 << 10);
    let mut stored = 0;
    let failure = loop {
        let doc = format!(r#"{{"_id":{stored},"s":"{body}"}}"#);
        match t.call_in(&t.project, Insert, "c", &doc).await {
            Ok(_) => stored += 1,
            Err(f) => break f,
        }
        assert!(
            stored < 40,
            "{}: 40 documents of 56 KiB and still under 1 MiB",
            t.server
        );
    };
    assert_eq!(failure.kind, TooLarge, "{}: {failure:?}", t.server);
    t.same(
        &failure.message,
        "the project's document store is at its size limit of 1 MiB; delete documents to make room",
        "message",
    );
    assert!(
        stored >= 10,
        "{}: only {stored} documents of 56 KiB fit in 1 MiB",
        t.server
    );
    // An update that would grow the store past it is refused too (6 KiB
    // more in each document: more than one document's room); deletes make
    // room.
    let grow = format!(
        r#"{{"update":{{"$set":{{"more":"{}"}}}}}}"#,
        "y".repeat(6 << 10)
    );
    t.fails(Update, "c", &grow, TooLarge, "at its size limit of 1 MiB")
        .await;
    t.same(
        &t.find("c", r#"{"filter":{"more":{"$exists":true}}}"#).await,
        "[]",
        "not grown",
    );
    t.ok(Update, "c", r#"{"update":{"$unset":{"nothing":1}}}"#)
        .await;
    t.ok(Delete, "c", "").await;
    t.ok(Insert, "c", r#"{"_id":"after"}"#).await;
}

// ---- differential -------------------------------------------------------

/// Random documents, filters, sorts and updates, the same on the embedded
/// store and the server, every answer and the documents after each update
/// compared: what the hand-written cases did not think of. A fixed seed, so
/// a failure repeats; `ISMS_TEST_DOCS_SEED` tries another.
fn differential(runtime: &tokio::runtime::Runtime, server: &DocStore, name: &str) {
    let seed = std::env::var("ISMS_TEST_DOCS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x2545_f491_4f6c_dd1d_u64);
    let dir = temp_dir("differential");
    let embedded = runtime
        .block_on(DocStore::open(
            DocBackend::Embedded { dir: dir.clone() },
            limits(),
        ))
        .unwrap();
    let project = ProjectName::new(format!("{}-differential", run_id())).unwrap();
    let mut random = Random(seed | 1);
    let mut differences = Vec::new();
    let both = |op: DocOp, json: &str, differences: &mut Vec<String>| {
        let a = runtime.block_on(embedded.run(&project, op, "c", json));
        let b = runtime.block_on(server.run(&project, op, "c", json));
        if a != b {
            differences.push(format!("{op} {json}\n  embedded: {a:?}\n  {name}: {b:?}"));
        }
    };
    for i in 0..30u32 {
        let doc = if i.is_multiple_of(7) {
            format!(r#"{{"_id":{i}}}"#)
        } else {
            format!(
                r#"{{"_id":{i},"a":{},"b":{}}}"#,
                random.value(0),
                random.value(0)
            )
        };
        both(Insert, &doc, &mut differences);
    }
    let (finds, updates) = (400, 150);
    for round in 0..finds + updates {
        if round < finds {
            let sort = random.pick(&[
                "{}",
                r#"{"a":1}"#,
                r#"{"a":-1}"#,
                r#"{"b":1,"a":-1}"#,
                r#"{"a.x":-1}"#,
                r#"{"a.0":1}"#,
            ]);
            let find = format!(
                r#"{{"filter":{},"sort":{sort},"projection":{{"_id":1}}}}"#,
                random.filter(0)
            );
            both(Find, &find, &mut differences);
        } else {
            let op = random.pick(&["$set", "$inc", "$unset"]);
            let path = random.pick(&[
                "a", "b", "a.x", "a.0", "b.y", "a.x.y", "c", "a.1", "d.e", "a.2.x",
            ]);
            let value = match op {
                "$inc" => random.pick(&["1", "-2", "0.5"]).to_string(),
                _ => random.value(1),
            };
            let update = format!(
                r#"{{"filter":{},"update":{{"{op}":{{"{path}":{value}}}}}}}"#,
                random.filter(1)
            );
            both(Update, &update, &mut differences);
            both(Find, "", &mut differences);
        }
        if differences.len() >= 5 {
            break;
        }
    }
    let _ = runtime.block_on(server.drop_project(&project));
    println!(
        "documents: differential against {name}, seed {seed}: {finds} random finds and {updates} updates, {} differences",
        differences.len()
    );
    assert!(
        differences.is_empty(),
        "{name}: the backends differ (seed {seed}):\n{}",
        differences.join("\n")
    );
}

/// xorshift64: enough randomness, no dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    /// Scalars of every bracket, arrays and objects (with a numeric key).
    fn value(&mut self, depth: u32) -> String {
        const SCALARS: &[&str] = &[
            "-2", "0", "1", "1.0", "2.5", r#""a""#, r#""b""#, r#""""#, "null", "true", "false",
        ];
        match self.next() % 10 {
            6 | 7 if depth < 2 => {
                let items: Vec<String> = (0..self.next() % 4)
                    .map(|_| self.value(depth + 1))
                    .collect();
                format!("[{}]", items.join(","))
            }
            8 | 9 if depth < 2 => {
                let fields: Vec<String> = ["x", "y", "0"][..(self.next() % 3) as usize]
                    .iter()
                    .map(|k| format!(r#""{k}":{}"#, self.value(depth + 1)))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }
            _ => self.pick(SCALARS).to_string(),
        }
    }

    fn filter(&mut self, depth: u32) -> String {
        match self.next() % 12 {
            0 | 1 if depth < 2 => {
                let op = if self.next().is_multiple_of(2) {
                    "$or"
                } else {
                    "$and"
                };
                format!(
                    r#"{{"{op}":[{},{}]}}"#,
                    self.filter(depth + 1),
                    self.filter(depth + 1)
                )
            }
            _ => {
                let path = self.pick(&["a", "b", "a.x", "a.0", "b.y", "a.x.y", "c", "a.1"]);
                let op = self.pick(&[
                    "", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists",
                ]);
                let value = match op {
                    "$in" | "$nin" => format!("[{},{}]", self.value(1), self.value(1)),
                    "$exists" => self.pick(&["true", "false"]).to_string(),
                    _ => self.value(0),
                };
                if op.is_empty() {
                    format!(r#"{{"{path}":{value}}}"#)
                } else {
                    format!(r#"{{"{path}":{{"{op}":{value}}}}}"#)
                }
            }
        }
    }
}

// ---- helpers ----------------------------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    // DBriver's own kind of runtime.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A name for this run, so runs against a shared MongoDB never meet.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("t{:x}{:x}", std::process::id() % 0xffff, nanos % 0xfffff)
}

fn temp_dir(label: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("isms-docs-{label}-{}", run_id()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A directory removed on drop, also when a test fails.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A MongoDB-wire test server on a free loopback port, stopped on drop.
struct WireServer {
    child: Child,
    address: String,
    label: String,
    dir: TempDir,
}

const INSTALL_HINT: &str = "documents: the MongoDB-wire test server `secantusd-py` (SecantusDB, from PyPI) \
     is not installed. Run tests/run, or install it yourself:\n  \
     python3 -m venv ~/.cache/isms-ci/venv && ~/.cache/isms-ci/venv/bin/pip install SecantusDB==0.7.0b3\n  \
     export ISMS_TEST_MONGO_SERVER=~/.cache/isms-ci/venv/bin/secantusd-py\n\
     (or set ISMS_TEST_MONGODB_URL=mongodb://… to test against a real MongoDB)";

impl WireServer {
    fn start() -> WireServer {
        let exe = match std::env::var_os("ISMS_TEST_MONGO_SERVER") {
            Some(exe) if !exe.is_empty() => PathBuf::from(exe),
            _ => find_on_path("secantusd-py").unwrap_or_else(|| panic!("{INSTALL_HINT}")),
        };
        assert!(
            exe.is_file(),
            "ISMS_TEST_MONGO_SERVER={} is not a file.\n{INSTALL_HINT}",
            exe.display()
        );
        let dir = temp_dir("wire");
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let port = free_port();
        let child = Command::new(&exe)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--storage-path",
                ":memory:",
            ])
            .args(["--log-level", "WARNING"])
            // Its configuration is looked for in the working directory, and
            // `:memory:` is a temporary directory, which a killed server
            // leaves behind: both in ours, removed on drop.
            .current_dir(&dir)
            .env("TMPDIR", dir.as_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("documents: cannot start {}: {e}", exe.display()));
        let address = format!("127.0.0.1:{port}");
        let mut server = WireServer {
            child,
            address,
            label: format!("SecantusDB {} at 127.0.0.1:{port}", package_version(&exe)),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&server.address).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "documents: {} exited ({status}) before listening:\n{}",
                    exe.display(),
                    server.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "documents: {} did not listen within 60 s:\n{}",
                exe.display(),
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for WireServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// SecantusDB's version, asked of the Python beside its launcher.
fn package_version(exe: &Path) -> String {
    let python = exe.with_file_name("python3");
    Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('SecantusDB'))",
        ])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "(version unknown)".to_string())
}
