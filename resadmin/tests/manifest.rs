//! `doee.toml` parsing as property tests: generated manifests round-trip to
//! the values they describe; one broken field gives an error naming that
//! field; arbitrary and mutated text never panics and every error says
//! where or what is wrong.
//!
//! Why one file of this size: one list of malformed manifests with the error
//! each gets, plus the property tests over the same parser.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests may unwrap.

use isms_ipc::resadmin::Resources;
use isms_ipc::{DoeeName, Priority};
use isms_resadmin::manifest::{self, HttpTrigger, Language, METHODS, Manifest, MqttTrigger};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// A manifest as a user might write it.
#[derive(Debug, Clone)]
struct Model {
    name: String,
    language: String,
    sources: Option<Vec<String>>,
    priority: Option<String>,
    params: BTreeMap<String, Param>,
    timeout_ms: Option<i64>,
    memory_mb: Option<i64>,
    concurrency: Option<i64>,
    min_warm: Option<i64>,
    http: Vec<(String, Option<Vec<String>>)>,
    mqtt: Vec<(String, Option<String>)>,
    /// `[resources]` as an inline table, and comments between lines.
    inline: bool,
    /// Keys added at the top level.
    extra: Vec<String>,
}

#[derive(Debug, Clone)]
enum Param {
    Text(String),
    Integer(i64),
    Boolean(bool),
}

/// A TOML basic string (also a quoted key).
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

impl Model {
    fn render(&self) -> String {
        let mut t = String::new();
        let comment = |t: &mut String| {
            if self.inline {
                t.push_str("# a comment, \"quoted\" = [\n");
            }
        };
        writeln!(t, "name = {}", quote(&self.name)).unwrap();
        comment(&mut t);
        writeln!(t, "language = {}", quote(&self.language)).unwrap();
        if let Some(sources) = &self.sources {
            let list: Vec<String> = sources.iter().map(|s| quote(s)).collect();
            writeln!(t, "sources = [{}]", list.join(", ")).unwrap();
        }
        if let Some(priority) = &self.priority {
            writeln!(t, "priority = {}", quote(priority)).unwrap();
        }
        for line in &self.extra {
            writeln!(t, "{line}").unwrap();
        }
        let resources: Vec<String> = [
            ("timeout_ms", self.timeout_ms),
            ("memory_mb", self.memory_mb),
            ("concurrency", self.concurrency),
            ("min_warm", self.min_warm),
        ]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k} = {v}")))
        .collect();
        if self.inline {
            writeln!(t, "resources = {{ {} }}", resources.join(", ")).unwrap();
        }
        if !self.params.is_empty() {
            t.push_str("\n[params]\n");
            for (key, value) in &self.params {
                let value = match value {
                    Param::Text(s) => quote(s),
                    Param::Integer(i) => i.to_string(),
                    Param::Boolean(b) => b.to_string(),
                };
                writeln!(t, "{} = {value}", quote(key)).unwrap();
                comment(&mut t);
            }
        }
        if !self.inline && !resources.is_empty() {
            t.push_str("\n[resources]\n");
            for line in resources {
                writeln!(t, "{line}").unwrap();
            }
        }
        for (route, methods) in &self.http {
            writeln!(t, "\n[[triggers.http]]\nroute = {}", quote(route)).unwrap();
            if let Some(methods) = methods {
                let list: Vec<String> = methods.iter().map(|m| quote(m)).collect();
                writeln!(t, "methods = [{}]", list.join(", ")).unwrap();
            }
        }
        for (topic, reply) in &self.mqtt {
            writeln!(t, "\n[[triggers.mqtt]]\ntopic = {}", quote(topic)).unwrap();
            if let Some(reply) = reply {
                writeln!(t, "reply_topic = {}", quote(reply)).unwrap();
            }
        }
        t
    }

    /// What parsing the rendered text must give.
    fn expected(&self) -> Manifest {
        let defaults = Resources::default();
        let value = |v: Option<i64>, default: u32| v.map_or(default, |v| v as u32);
        Manifest {
            name: DoeeName::new(self.name.clone()).unwrap(),
            language: match self.language.as_str() {
                "rust" => Language::Rust,
                "c" => Language::C,
                _ => Language::Cpp,
            },
            sources: self.sources.clone().unwrap_or_default(),
            priority: self
                .priority
                .as_ref()
                .map_or(Priority::Normal, |p| p.parse().unwrap()),
            params: self
                .params
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Param::Text(s) => s.clone(),
                        Param::Integer(i) => i.to_string(),
                        Param::Boolean(b) => b.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect(),
            resources: Resources {
                timeout_ms: value(self.timeout_ms, defaults.timeout_ms),
                memory_mb: value(self.memory_mb, defaults.memory_mb),
                concurrency: value(self.concurrency, defaults.concurrency),
                min_warm: value(self.min_warm, defaults.min_warm),
            },
            http: self
                .http
                .iter()
                .map(|(route, methods)| HttpTrigger {
                    route: route.clone(),
                    methods: match methods {
                        None => vec!["GET".into(), "POST".into()],
                        Some(methods) => {
                            let mut upper: Vec<String> = Vec::new();
                            for m in methods {
                                let m = m.to_ascii_uppercase();
                                if !upper.contains(&m) {
                                    upper.push(m);
                                }
                            }
                            upper
                        }
                    },
                    pipeline: Vec::new(),
                })
                .collect(),
            mqtt: self
                .mqtt
                .iter()
                .map(|(topic, reply)| MqttTrigger {
                    topic: topic.clone(),
                    reply_topic: reply.clone(),
                    pipeline: Vec::new(),
                })
                .collect(),
            // Placement has tests of its own below.
            schedule: Vec::new(),
            placement: Vec::new(),
        }
    }
}

fn method() -> impl Strategy<Value = String> {
    (prop::sample::select(METHODS.to_vec()), any::<bool>()).prop_map(|(m, lower)| {
        if lower {
            m.to_ascii_lowercase()
        } else {
            m.to_string()
        }
    })
}

fn route() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("/".to_string()),
        9 => "(/[a-zA-Z0-9_~-][a-zA-Z0-9._~-]{0,8}){1,3}",
    ]
}

fn model() -> impl Strategy<Value = Model> {
    let language = prop::sample::select(vec!["rust", "c", "cpp", "c++"]).prop_map(String::from);
    let source = "[a-z_]{1,8}(/[a-z_]{1,8}){0,2}\\.(c|cc|cpp|h)";
    let param = prop_oneof![
        "[^\\x00]{0,40}".prop_map(Param::Text),
        any::<i64>().prop_map(Param::Integer),
        any::<bool>().prop_map(Param::Boolean),
    ];
    let resources = (
        prop::option::of(1i64..=300_000),
        prop::option::of(16i64..=8192),
        prop::option::of(1i64..=64),
        prop::option::of(0i64..=64),
    )
        .prop_map(|(timeout, memory, concurrency, min_warm)| {
            let most = concurrency.unwrap_or(i64::from(Resources::default().concurrency));
            (timeout, memory, concurrency, min_warm.map(|w| w.min(most)))
        });
    let http = prop::collection::btree_set(route(), 0..4).prop_flat_map(|routes| {
        let n = routes.len();
        (
            Just(routes),
            prop::collection::vec(prop::option::of(prop::collection::vec(method(), 1..5)), n),
        )
            .prop_map(|(routes, methods)| routes.into_iter().zip(methods).collect::<Vec<_>>())
    });
    let topic = prop_oneof![
        1 => Just("#".to_string()),
        9 => "[a-z]{1,6}(/([a-z0-9]{1,6}|\\+)){0,3}(/#)?",
    ];
    let mqtt = prop::collection::vec(
        (topic, prop::option::of("[a-z]{1,6}(/[a-z0-9 ]{1,6}){0,2}")),
        0..3,
    );
    (
        "[a-z0-9][a-z0-9-]{0,62}",
        language,
        prop::collection::vec(source, 1..4),
        prop::option::of(
            prop::sample::select(vec!["high", "normal", "low"]).prop_map(String::from),
        ),
        prop::collection::btree_map("[a-zA-Z0-9_.-]{1,64}", param, 0..6),
        resources,
        http,
        mqtt,
        any::<bool>(),
    )
        .prop_map(
            |(name, language, sources, priority, params, resources, http, mqtt, inline)| Model {
                name,
                sources: (language != "rust").then_some(sources),
                language,
                priority,
                params,
                timeout_ms: resources.0,
                memory_mb: resources.1,
                concurrency: resources.2,
                min_warm: resources.3,
                http,
                mqtt,
                inline,
                extra: Vec::new(),
            },
        )
}

/// One field broken, and what the error must name.
#[derive(Debug, Clone)]
enum Break {
    Name(String),
    NameType,
    Language(String),
    RustSources,
    NoSources,
    EmptySources,
    Source(String),
    Priority(String),
    Timeout(i64),
    Memory(i64),
    Concurrency(i64),
    MinWarmAboveConcurrency,
    Route(String),
    Method(String),
    Topic(String),
    Reply(String),
    ParamKey(String),
    Unknown(String),
}

fn breakage() -> impl Strategy<Value = Break> {
    let not_in = |known: &'static [&'static str]| move |s: &String| !known.contains(&s.as_str());
    prop_oneof![
        prop_oneof![
            Just(String::new()),
            Just("Bad_Name".to_string()),
            Just("-lead".to_string()),
            Just("a".repeat(64)),
            "[a-z]{0,3}[A-Z_. /][a-z]{0,3}",
        ]
        .prop_map(Break::Name),
        Just(Break::NameType),
        "[a-zA-Z+#]{0,6}"
            .prop_filter("unknown", not_in(&["rust", "c", "cpp", "c++"]))
            .prop_map(Break::Language),
        Just(Break::RustSources),
        Just(Break::NoSources),
        Just(Break::EmptySources),
        prop_oneof![
            Just(String::new()),
            Just("../up.c".to_string()),
            Just("/etc/passwd".to_string()),
            Just("a//b.c".to_string()),
            Just("a\\b.c".to_string()),
            Just("tab\t.c".to_string()),
        ]
        .prop_map(Break::Source),
        "[a-zA-Z]{0,8}"
            .prop_filter("unknown", not_in(&["high", "normal", "low"]))
            .prop_map(Break::Priority),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(300_001),
            Just(i64::MAX),
            Just(i64::MIN)
        ]
        .prop_map(Break::Timeout),
        prop_oneof![Just(15i64), Just(0), Just(8193), Just(1 << 40)].prop_map(Break::Memory),
        prop_oneof![Just(0i64), Just(65), Just(-4)].prop_map(Break::Concurrency),
        Just(Break::MinWarmAboveConcurrency),
        prop_oneof![
            "[a-z]{1,5}",
            Just(String::new()),
            Just("/a/".to_string()),
            Just("/a//b".to_string()),
            Just("/a/../b".to_string()),
            Just("/.".to_string()),
            Just("/a b".to_string()),
            Just("/é".to_string()),
            Just(format!("/{}", "a".repeat(200))),
        ]
        .prop_map(Break::Route),
        "[A-Z]{1,8}"
            .prop_filter("unknown", not_in(&METHODS))
            .prop_map(Break::Method),
        prop_oneof![
            Just(String::new()),
            Just("a/#/b".to_string()),
            Just("a+".to_string()),
            Just("a/b#".to_string()),
            Just("a\0b".to_string()),
        ]
        .prop_map(Break::Topic),
        prop_oneof![
            Just("a/+".to_string()),
            Just("#".to_string()),
            Just(String::new())
        ]
        .prop_map(Break::Reply),
        prop_oneof![
            Just("a b".to_string()),
            Just(String::new()),
            Just("k".repeat(65)),
            Just("ü".to_string()),
            Just("a/b".to_string()),
        ]
        .prop_map(Break::ParamKey),
        "[a-z_]{1,10}"
            .prop_filter(
                "unknown",
                not_in(&[
                    "name",
                    "language",
                    "sources",
                    "priority",
                    "params",
                    "resources",
                    "triggers",
                ]),
            )
            .prop_map(Break::Unknown),
    ]
}

impl Break {
    /// Breaks `model`; returns what the error must contain.
    fn apply(&self, model: &mut Model) -> String {
        let c_like = |model: &mut Model| {
            if model.language == "rust" {
                model.language = "c".into();
                model.sources = Some(vec!["main.c".into()]);
            }
        };
        match self {
            Break::Name(name) => {
                model.name = name.clone();
                "`name`".into()
            }
            Break::NameType => {
                model.extra.push("name = 5".into());
                model.name = "placeholder".into();
                // The key twice is a syntax error; replace it instead.
                "".into()
            }
            Break::Language(language) => {
                model.language = language.clone();
                model.sources = None;
                "`language`".into()
            }
            Break::RustSources => {
                model.language = "rust".into();
                model.sources = Some(vec!["a.c".into()]);
                "`sources`".into()
            }
            Break::NoSources => {
                c_like(model);
                model.sources = None;
                "`sources`".into()
            }
            Break::EmptySources => {
                c_like(model);
                model.sources = Some(Vec::new());
                "`sources`".into()
            }
            Break::Source(source) => {
                c_like(model);
                model.sources.as_mut().unwrap().push(source.clone());
                format!("`sources[{}]`", model.sources.as_ref().unwrap().len() - 1)
            }
            Break::Priority(priority) => {
                model.priority = Some(priority.clone());
                "`priority`".into()
            }
            Break::Timeout(v) => {
                model.timeout_ms = Some(*v);
                "`resources.timeout_ms`".into()
            }
            Break::Memory(v) => {
                model.memory_mb = Some(*v);
                "`resources.memory_mb`".into()
            }
            Break::Concurrency(v) => {
                model.concurrency = Some(*v);
                "`resources.concurrency`".into()
            }
            Break::MinWarmAboveConcurrency => {
                let most = model.concurrency.unwrap_or(4);
                model.min_warm = Some(most + 1);
                "`resources.min_warm`".into()
            }
            Break::Route(route) => {
                model.http.insert(0, (route.clone(), None));
                "`triggers.http[0].route`".into()
            }
            Break::Method(method) => {
                model.http.insert(
                    0,
                    ("/route-that-is-long".into(), Some(vec![method.clone()])),
                );
                "`triggers.http[0].methods`".into()
            }
            Break::Topic(topic) => {
                model.mqtt.insert(0, (topic.clone(), None));
                "`triggers.mqtt[0].topic`".into()
            }
            Break::Reply(reply) => {
                model.mqtt.insert(0, ("t".into(), Some(reply.clone())));
                "`triggers.mqtt[0].reply_topic`".into()
            }
            Break::ParamKey(key) => {
                model.params.insert(key.clone(), Param::Boolean(true));
                format!("`params.{key}`")
            }
            Break::Unknown(key) => {
                model.extra.push(format!("{key} = 1"));
                format!("unknown field `{key}`")
            }
        }
    }
}

/// An error names the field at fault (in backticks) or the line where the
/// text stops being TOML.
fn check_error(text: &str, err: &manifest::ManifestError) {
    let message = err.to_string();
    let what = message
        .strip_prefix("doee.toml: ")
        .unwrap_or_else(|| panic!("{message:?} does not name the file"));
    assert!(
        what.len() > 10 && (what.contains('`') || what.contains("(line ")),
        "for {text:?}: {message:?} names neither a field nor a line"
    );
}

/// Edits that turn a manifest into something else.
#[derive(Debug, Clone)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    SwapLines { a: usize, b: usize },
    RepeatLine { at: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    let token = prop_oneof![
        prop::sample::select(vec![
            "=",
            "\"",
            "'",
            "[",
            "]",
            "[[",
            "]]",
            "{",
            "}",
            ",",
            "\n",
            "#",
            "\\",
            "'''",
            "\"\"\"",
            "é",
            "\0",
            "\r",
            "name",
            "= 1",
            "= -1",
            "= \"x\"",
            "= []",
            "= {}",
            "= 1979-05-27",
            "= inf",
            "= nan",
            "[resources]",
            "[[triggers.http]]",
            "[params]",
            "triggers.",
        ])
        .prop_map(String::from),
        "\\PC{1,4}",
    ];
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), token).prop_map(|(at, text)| Edit::Insert { at, text }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines { a, b }),
        any::<usize>().prop_map(|at| Edit::RepeatLine { at }),
    ]
}

fn apply_edit(text: &str, edit: &Edit) -> String {
    let boundary = |at: usize| {
        let mut at = at % (text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    let n = lines.len();
    match edit {
        Edit::Delete { at, len } => {
            let from = boundary(*at);
            let mut to = (from + len).min(text.len());
            while !text.is_char_boundary(to) {
                to -= 1;
            }
            let to = to.max(from);
            format!("{}{}", &text[..from], &text[to..])
        }
        Edit::Insert { at, text: new } => {
            let at = boundary(*at);
            format!("{}{new}{}", &text[..at], &text[at..])
        }
        Edit::SwapLines { a, b } => {
            lines.swap(a % n, b % n);
            lines.join("\n")
        }
        Edit::RepeatLine { at } => {
            let line = lines[at % n];
            lines.insert(at % n, line);
            lines.join("\n")
        }
    }
}

// PROPTEST_CASES raises the case count for a longer hunt.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n),
    )
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn generated_manifests_round_trip(model in model()) {
        let text = model.render();
        let parsed = Manifest::parse(&text)
            .unwrap_or_else(|e| panic!("{e}\nin:\n{text}"));
        prop_assert_eq!(parsed, model.expected());
    }

    #[test]
    fn one_broken_field_is_named(mut model in model(), breakage in breakage()) {
        let expected = breakage.apply(&mut model);
        let mut text = model.render();
        let expected = if expected.is_empty() {
            // A value of the wrong type: the field and its line.
            text = text.replacen("name = \"placeholder\"\n", "", 1);
            "`name`: invalid type: integer `5`, expected a string (line ".to_string()
        } else {
            expected
        };
        let err = Manifest::parse(&text).expect_err(&text);
        check_error(&text, &err);
        prop_assert!(
            err.to_string().contains(&expected),
            "expected {:?} in {:?}\nfor:\n{}", expected, err.to_string(), text
        );
    }

    #[test]
    fn edited_manifests_never_panic(
        model in model(),
        edits in prop::collection::vec(edit(), 1..5),
    ) {
        let mut text = model.render();
        for edit in &edits {
            text = apply_edit(&text, edit);
        }
        if let Err(err) = Manifest::parse(&text) {
            check_error(&text, &err);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in prop_oneof![
        any::<String>(),
        "[ -~\n]{0,200}",
        prop::collection::vec(
            prop::sample::select(vec![
                "name", "language", "=", "\"rust\"", "\"c\"", "[", "]", "{", "}", ",",
                "\n", "[triggers]", "[[triggers.http]]", "route", "\"/x\"", "1", "-", ".",
            ]),
            0..40,
        )
        .prop_map(|tokens| tokens.join(" ")),
    ]) {
        if let Err(err) = Manifest::parse(&text) {
            check_error(&text, &err);
        }
    }
}

/// Found by these tests: an error of type named no field, and leaked the
/// parser's own type names ("expected struct RawTriggers").
#[test]
fn type_errors_name_the_field_and_the_line() {
    let cases = [
        (
            "name = 1\nlanguage = \"c\"",
            "`name`: invalid type: integer `1`, expected a string (line 1)",
        ),
        (
            "name = \"x\"\nlanguage = \"rust\"\ntriggers = 5",
            "`triggers`: invalid type: integer `5`, expected a table (line 3)",
        ),
        (
            "name = \"x\"\nlanguage = \"rust\"\n[[triggers.http]]\nroute = 5",
            "`triggers.http.route`: invalid type: integer `5`, expected a string (line 4)",
        ),
        (
            "name = \"x\"\nlanguage = \"rust\"\n[[triggers.http]]\nmethods = []",
            "`triggers.http`: missing field `route`",
        ),
        (
            "name = \"x\"\nlanguage = \"rust\"\n[resources]\ncpu = 1",
            "`resources`: unknown field `cpu`",
        ),
        ("name = \"é\"\nlanguage = 1é", "(line 2)"),
    ];
    for (text, expected) in cases {
        let err = Manifest::parse(text).unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
}

#[test]
fn the_size_limit_is_exact() {
    let head = "name = \"x\"\nlanguage = \"rust\"\n#";
    let at_limit = format!("{head}{}", "c".repeat(manifest::MAX_BYTES - head.len()));
    Manifest::parse(&at_limit).unwrap();
    let over = format!("{at_limit}c");
    let err = Manifest::parse(&over).unwrap_err().to_string();
    assert!(err.contains("at most 1048576"), "{err}");
}

#[test]
fn duplicate_routes_and_methods() {
    let text = "name = \"x\"\nlanguage = \"rust\"\n\
                [[triggers.http]]\nroute = \"/a\"\nmethods = [\"get\", \"GET\", \"Post\"]\n\
                [[triggers.http]]\nroute = \"/a\"\n";
    let err = Manifest::parse(text).unwrap_err().to_string();
    assert!(
        err.contains("`triggers.http[1].route` repeats \"/a\""),
        "{err}"
    );
    let set: BTreeSet<_> = Manifest::parse(&text[..text.rfind("[[").unwrap()])
        .unwrap()
        .http[0]
        .methods
        .iter()
        .cloned()
        .collect();
    assert_eq!(set, BTreeSet::from(["GET".to_string(), "POST".to_string()]));
}

#[test]
fn placement_labels_are_read_and_checked() {
    let base = "name = \"near\"\nlanguage = \"rust\"\n";
    let manifest = Manifest::parse(&format!(
        "{base}[placement]\nlabels = {{ site = \"shed\", \"rack.id\" = \"r-2\" }}\n"
    ))
    .unwrap();
    assert_eq!(
        manifest.placement,
        vec![
            ("rack.id".into(), "r-2".into()),
            ("site".into(), "shed".into())
        ]
    );
    assert!(Manifest::parse(base).unwrap().placement.is_empty());
    for bad in [
        "[placement]\nlabels = { site = \"\" }\n",
        "[placement]\nlabels = { \"a b\" = \"x\" }\n",
        "[placement]\nlabels = { site = \"sh/ed\" }\n",
        "[placement]\nlabels = { site = 3 }\n",
        "[placement]\nsite = \"shed\"\n",
    ] {
        let err = Manifest::parse(&format!("{base}{bad}")).unwrap_err();
        assert!(err.0.contains("placement"), "{bad}: {}", err.0);
    }
}
