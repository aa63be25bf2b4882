//! `doee.toml`: parsing and validation into a [`Manifest`] whose fields can
//! be trusted. Every error names the field at fault.

use isms_ipc::resadmin::Resources;
use isms_ipc::{DoeeName, Priority};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The manifest's file name.
pub const FILE: &str = "doee.toml";

/// The longest manifest, in bytes: room for 64 parameters of 4 KiB each.
pub const MAX_BYTES: usize = 1 << 20;

/// The language a Doee is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// A Rust crate built as a `cdylib`.
    Rust,
    /// C sources compiled with `cc`.
    C,
    /// C++ sources compiled with `c++`.
    Cpp,
    /// A `handler.py`, run by CPython embedded in the Python runtime.
    Python,
}

impl Language {
    /// `rust`, `c` or `cpp`, as manifests spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::C => "c",
            Language::Cpp => "cpp",
            Language::Python => "python",
        }
    }
}

/// HTTP methods a route may allow.
pub const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

pub use isms_ipc::resadmin::{CatchUp, HttpTrigger, MqttTrigger, Overlap, ScheduleTrigger, When};
use isms_ipc::topic;

/// A validated manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The Doee's name.
    pub name: DoeeName,
    /// Its language.
    pub language: Language,
    /// Source files (C and C++), relative to the Doee directory.
    pub sources: Vec<String>,
    /// Its scheduling class.
    pub priority: Priority,
    /// Parameters handed to the Doee.
    pub params: Vec<(String, String)>,
    /// Resource limits.
    pub resources: Resources,
    /// HTTP triggers.
    pub http: Vec<HttpTrigger>,
    /// MQTT triggers.
    pub mqtt: Vec<MqttTrigger>,
    /// Schedules. (Stored manifests from before have none.)
    #[serde(default)]
    pub schedule: Vec<ScheduleTrigger>,
    /// Labels a Doer must have to run it (`[placement] labels`); empty
    /// means any Doer. (Stored manifests from before have none.)
    #[serde(default)]
    pub placement: Vec<(String, String)>,
}

/// Bounds on resources, so one manifest cannot ask for the whole machine.
pub mod bounds {
    /// Longest timeout, ms.
    pub const TIMEOUT_MS: std::ops::RangeInclusive<u32> = 1..=300_000;
    /// Memory per Worker, MiB.
    pub const MEMORY_MB: std::ops::RangeInclusive<u32> = 16..=8192;
    /// Workers per Doee.
    pub const CONCURRENCY: std::ops::RangeInclusive<u32> = 1..=64;
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("doee.toml: {0}")]
pub struct ManifestError(pub String);

fn invalid<T>(message: impl Into<String>) -> Result<T, ManifestError> {
    Err(ManifestError(message.into()))
}

// `expecting` keeps these type names out of error messages.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct Raw {
    name: String,
    language: String,
    sources: Option<Vec<String>>,
    priority: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
    #[serde(default)]
    resources: RawResources,
    #[serde(default)]
    triggers: RawTriggers,
    #[serde(default)]
    placement: RawPlacement,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawPlacement {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawResources {
    timeout_ms: Option<i64>,
    memory_mb: Option<i64>,
    concurrency: Option<i64>,
    min_warm: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttp>,
    #[serde(default)]
    mqtt: Vec<RawMqtt>,
    #[serde(default)]
    schedule: Vec<RawSchedule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawSchedule {
    cron: Option<String>,
    every: Option<String>,
    timezone: Option<String>,
    input: Option<String>,
    catch_up: Option<String>,
    overlap: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawHttp {
    route: String,
    methods: Option<Vec<String>>,
    pipeline: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawMqtt {
    topic: String,
    reply_topic: Option<String>,
    pipeline: Option<Vec<String>>,
}

impl Manifest {
    /// Parses and validates the text of a `doee.toml`.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        if text.len() > MAX_BYTES {
            return invalid(format!(
                "the file is {} bytes; at most {MAX_BYTES} are allowed",
                text.len()
            ));
        }
        let raw: Raw = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let name = DoeeName::new(raw.name).map_err(|e| ManifestError(format!("`name`: {e}")))?;
        let language = match raw.language.as_str() {
            "rust" => Language::Rust,
            "c" => Language::C,
            "cpp" | "c++" => Language::Cpp,
            "python" => Language::Python,
            other => {
                return invalid(format!(
                    "`language` must be \"rust\", \"c\", \"cpp\" or \"python\" (got \"{other}\")"
                ));
            }
        };
        let sources = match (language, raw.sources) {
            (Language::Rust, Some(_)) => {
                return invalid(
                    "`sources` is for c and cpp Doees; a rust Doee builds the crate in its directory",
                );
            }
            (Language::Python, Some(_)) => {
                return invalid(
                    "`sources` is for c and cpp Doees; a python Doee is its handler.py and the modules beside it",
                );
            }
            (Language::Rust | Language::Python, None) => Vec::new(),
            (_, None) => return invalid("`sources` must list the C or C++ files to compile"),
            (_, Some(sources)) if sources.is_empty() => {
                return invalid("`sources` must not be empty");
            }
            (_, Some(sources)) => {
                for (i, source) in sources.iter().enumerate() {
                    check_relative_path(source)
                        .map_err(|why| ManifestError(format!("`sources[{i}]` {why}")))?;
                }
                sources
            }
        };
        let priority = match raw.priority.as_deref() {
            None => Priority::Normal,
            Some(p) => p
                .parse()
                .map_err(|e| ManifestError(format!("`priority`: {e}")))?,
        };
        if raw.params.len() > 64 {
            return invalid("`params` may hold at most 64 entries");
        }
        let mut params = Vec::with_capacity(raw.params.len());
        for (key, value) in raw.params {
            if key.is_empty()
                || key.len() > 64
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            {
                return invalid(format!(
                    "`params.{key}`: a parameter name is 1 to 64 of a-z, A-Z, 0-9, _ . -"
                ));
            }
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return invalid(format!(
                        "`params.{key}` must be a string, number or boolean"
                    ));
                }
            };
            if value.len() > 4096 || value.contains('\0') {
                return invalid(format!(
                    "`params.{key}` must be at most 4096 bytes, without NUL"
                ));
            }
            params.push((key, value));
        }
        let defaults = Resources::default();
        let field =
            |value: Option<i64>, default: u32, name: &str, range: std::ops::RangeInclusive<u32>| {
                let value = value.unwrap_or(i64::from(default));
                match u32::try_from(value) {
                    Ok(v) if range.contains(&v) => Ok(v),
                    _ => invalid(format!(
                        "`resources.{name}` must be between {} and {} (got {value})",
                        range.start(),
                        range.end()
                    )),
                }
            };
        let resources = Resources {
            timeout_ms: field(
                raw.resources.timeout_ms,
                defaults.timeout_ms,
                "timeout_ms",
                bounds::TIMEOUT_MS,
            )?,
            memory_mb: field(
                raw.resources.memory_mb,
                defaults.memory_mb,
                "memory_mb",
                bounds::MEMORY_MB,
            )?,
            concurrency: field(
                raw.resources.concurrency,
                defaults.concurrency,
                "concurrency",
                bounds::CONCURRENCY,
            )?,
            min_warm: 0,
        };
        let resources = Resources {
            min_warm: field(
                raw.resources.min_warm,
                defaults.min_warm,
                "min_warm",
                0..=resources.concurrency,
            )?,
            ..resources
        };
        let mut http = Vec::new();
        for (i, trigger) in raw.triggers.http.into_iter().enumerate() {
            check_route(&trigger.route)
                .map_err(|why| ManifestError(format!("`triggers.http[{i}].route` {why}")))?;
            if http.iter().any(|h: &HttpTrigger| h.route == trigger.route) {
                return invalid(format!(
                    "`triggers.http[{i}].route` repeats \"{}\"",
                    trigger.route
                ));
            }
            let methods = match trigger.methods {
                None => vec!["GET".to_string(), "POST".to_string()],
                Some(methods) if methods.is_empty() => {
                    return invalid(format!("`triggers.http[{i}].methods` must not be empty"));
                }
                Some(methods) => {
                    let mut upper = Vec::new();
                    for method in methods {
                        let m = method.to_ascii_uppercase();
                        if !METHODS.contains(&m.as_str()) {
                            return invalid(format!(
                                "`triggers.http[{i}].methods`: unknown method \"{method}\" (use {})",
                                METHODS.join(", ")
                            ));
                        }
                        if !upper.contains(&m) {
                            upper.push(m);
                        }
                    }
                    upper
                }
            };
            http.push(HttpTrigger {
                route: trigger.route,
                methods,
                pipeline: parse_pipeline(&format!("triggers.http[{i}]"), trigger.pipeline)?,
            });
        }
        let mut mqtt = Vec::new();
        for (i, trigger) in raw.triggers.mqtt.into_iter().enumerate() {
            topic::check(&trigger.topic, true)
                .map_err(|why| ManifestError(format!("`triggers.mqtt[{i}].topic` {why}")))?;
            if let Some(reply) = &trigger.reply_topic {
                topic::check(reply, false).map_err(|why| {
                    ManifestError(format!("`triggers.mqtt[{i}].reply_topic` {why}"))
                })?;
            }
            mqtt.push(MqttTrigger {
                topic: trigger.topic,
                reply_topic: trigger.reply_topic,
                pipeline: parse_pipeline(&format!("triggers.mqtt[{i}]"), trigger.pipeline)?,
            });
        }
        let mut schedule = Vec::new();
        for (i, trigger) in raw.triggers.schedule.into_iter().enumerate() {
            let trigger = parse_schedule(i, trigger)?;
            // A schedule is named by its timing (its firings are claimed
            // under it): two alike would be one.
            if schedule
                .iter()
                .any(|s: &ScheduleTrigger| s.when == trigger.when)
            {
                return invalid(format!(
                    "`triggers.schedule[{i}]` repeats {}: one schedule per timing",
                    trigger.when
                ));
            }
            schedule.push(trigger);
        }
        let mut placement = Vec::new();
        for (name, value) in raw.placement.labels {
            isms_ipc::names::check_label(&name, &value)
                .map_err(|why| ManifestError(format!("`placement.labels`: {why}")))?;
            placement.push((name, value));
        }
        Ok(Manifest {
            name,
            language,
            sources,
            priority,
            params,
            resources,
            http,
            mqtt,
            schedule,
            placement,
        })
    }
}

/// The most stages a pipeline may have.
pub const MAX_PIPELINE: usize = 8;

/// A trigger's `pipeline`: Doee names, 1 to [`MAX_PIPELINE`] of them.
fn parse_pipeline(
    trigger: &str,
    pipeline: Option<Vec<String>>,
) -> Result<Vec<DoeeName>, ManifestError> {
    let Some(names) = pipeline else {
        return Ok(Vec::new());
    };
    if names.is_empty() || names.len() > MAX_PIPELINE {
        return invalid(format!(
            "`{trigger}.pipeline` names 1 to {MAX_PIPELINE} Doees of the project (got {})",
            names.len()
        ));
    }
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            DoeeName::new(name)
                .map_err(|why| ManifestError(format!("`{trigger}.pipeline[{i}]`: {why}")))
        })
        .collect()
}

/// The longest `input` of a schedule.
const MAX_SCHEDULE_INPUT: usize = 64 * 1024;

fn parse_schedule(i: usize, raw: RawSchedule) -> Result<ScheduleTrigger, ManifestError> {
    let field = |name: &str| format!("`triggers.schedule[{i}].{name}`");
    let when = match (raw.cron, raw.every) {
        (Some(expression), None) => {
            let timezone = raw.timezone.unwrap_or_else(|| "UTC".to_string());
            let now = isms_ipc::names::now_ms();
            isms_schedule::check_cron(&expression, &timezone, now).map_err(
                |fault| match fault {
                    isms_schedule::CronFault::Expression(why) => {
                        ManifestError(format!("{} \"{expression}\": {why}", field("cron")))
                    }
                    isms_schedule::CronFault::Timezone(why) => {
                        ManifestError(format!("{}: {why}", field("timezone")))
                    }
                },
            )?;
            When::Cron {
                expression,
                timezone,
            }
        }
        (None, Some(every)) => {
            if raw.timezone.is_some() {
                return invalid(format!(
                    "{} applies to `cron` only (`every` counts from the epoch, in no time zone)",
                    field("timezone")
                ));
            }
            let ms = isms_schedule::parse_every(&every)
                .map_err(|why| ManifestError(format!("{}: {why}", field("every"))))?;
            When::Every { ms }
        }
        (Some(_), Some(_)) => {
            return invalid(format!(
                "`triggers.schedule[{i}]` has both `cron` and `every`: keep one"
            ));
        }
        (None, None) => {
            return invalid(format!(
                "`triggers.schedule[{i}]` needs `cron = \"*/5 * * * *\"` or `every = \"30s\"`"
            ));
        }
    };
    let input = raw.input.unwrap_or_default();
    if input.len() > MAX_SCHEDULE_INPUT {
        return invalid(format!(
            "{} is longer than {} KiB",
            field("input"),
            MAX_SCHEDULE_INPUT / 1024
        ));
    }
    let catch_up = match raw.catch_up.as_deref() {
        None => CatchUp::default(),
        Some(name) => CatchUp::named(name).ok_or_else(|| {
            ManifestError(format!(
                "{}: \"{name}\" is not \"none\" or \"last\"",
                field("catch_up")
            ))
        })?,
    };
    let overlap = match raw.overlap.as_deref() {
        None => Overlap::default(),
        Some(name) => Overlap::named(name).ok_or_else(|| {
            ManifestError(format!(
                "{}: \"{name}\" is not \"skip\" or \"queue\"",
                field("overlap")
            ))
        })?,
    };
    Ok(ScheduleTrigger {
        when,
        input,
        catch_up,
        overlap,
    })
}

/// A TOML error with the key at fault and its line. An error read from the
/// text has the line but not the key; reading the parsed table again gives
/// the key (toml shows it only in the `Display` of an error without a span).
fn toml_error(text: &str, err: &toml::de::Error) -> ManifestError {
    let key = text
        .parse::<toml::Table>()
        .ok()
        .and_then(|table| Raw::deserialize(toml::Value::Table(table)).err())
        .filter(|again| again.message() == err.message())
        .and_then(|again| {
            let shown = again.to_string();
            let key = shown
                .lines()
                .last()?
                .strip_prefix("in `")?
                .strip_suffix('`')?;
            Some(format!("`{key}`: "))
        })
        .unwrap_or_default();
    let line = err
        .span()
        .and_then(|span| text.as_bytes().get(..span.start))
        .map(|before| {
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            format!(" (line {line})")
        })
        .unwrap_or_default();
    ManifestError(format!("{key}{}{line}", err.message()))
}

/// A path inside the Doee directory: relative, no `..`, printable.
pub fn check_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 255 {
        return Err("must be a path of 1 to 255 characters".into());
    }
    if path.starts_with('/') || path.split('/').any(|part| part == ".." || part.is_empty()) {
        return Err(format!(
            "must be a relative path inside the Doee directory (got \"{path}\")"
        ));
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!("contains a forbidden character (got {path:?})"));
    }
    Ok(())
}

fn check_route(route: &str) -> Result<(), String> {
    if !route.starts_with('/') || route.len() > 200 {
        return Err(format!(
            "must start with / and be at most 200 characters (got \"{route}\")"
        ));
    }
    if route.len() > 1 && route.ends_with('/') {
        return Err(format!("must not end with / (got \"{route}\")"));
    }
    if !route
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
    {
        return Err(format!(
            "may contain only letters, digits and / - _ . ~ (got \"{route}\")"
        ));
    }
    if route.contains("//") || route.split('/').any(|s| s == "." || s == "..") {
        return Err(format!(
            "must not contain empty, . or .. segments (got \"{route}\")"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = r#"
name = "threshold"          # [a-z0-9-]{1,63}
language = "c"
sources = ["src/threshold.c"]
priority = "normal"

[params]
limit = "25"

[resources]
timeout_ms = 2000
memory_mb = 64
concurrency = 4
min_warm = 0

[[triggers.http]]
route = "/threshold"
methods = ["POST"]

[[triggers.mqtt]]
topic = "greenhouse/+/temp"
reply_topic = "greenhouse/alerts"

[[triggers.schedule]]
cron = "*/5 * * * *"

[[triggers.schedule]]
every = "30s"
input = "tick"
overlap = "queue"
catch_up = "none"
"#;

    #[test]
    fn the_spec_example_parses() {
        let m = Manifest::parse(SPEC_EXAMPLE).unwrap();
        assert_eq!(m.name.as_str(), "threshold");
        assert_eq!(m.language, Language::C);
        assert_eq!(m.params, vec![("limit".into(), "25".into())]);
        assert_eq!(m.http[0].methods, vec!["POST"]);
        assert_eq!(m.mqtt[0].reply_topic.as_deref(), Some("greenhouse/alerts"));
        assert_eq!(
            m.schedule,
            [
                ScheduleTrigger {
                    when: When::Cron {
                        expression: "*/5 * * * *".into(),
                        timezone: "UTC".into()
                    },
                    input: String::new(),
                    catch_up: CatchUp::Last,
                    overlap: Overlap::Skip,
                },
                ScheduleTrigger {
                    when: When::Every { ms: 30_000 },
                    input: "tick".into(),
                    catch_up: CatchUp::None,
                    overlap: Overlap::Queue,
                }
            ]
        );
    }

    #[test]
    fn defaults_fill_what_is_missing() {
        let m = Manifest::parse("name = \"hello\"\nlanguage = \"rust\"\n").unwrap();
        assert_eq!(m.resources, Resources::default());
        assert_eq!(m.priority, Priority::Normal);
        assert!(m.http.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("name = \"Hello\"\nlanguage = \"rust\"", "`name`"),
            ("name = \"x\"\nlanguage = \"go\"", "`language`"),
            (
                "name = \"x\"\nlanguage = \"rust\"\nsources = [\"a.c\"]",
                "`sources`",
            ),
            ("name = \"x\"\nlanguage = \"c\"", "`sources`"),
            (
                "name = \"x\"\nlanguage = \"c\"\nsources = [\"../a.c\"]",
                "`sources[0]`",
            ),
            (
                "name = \"x\"\nlanguage = \"c\"\nsources = [\"/etc/passwd\"]",
                "`sources[0]`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\npriority = \"urgent\"",
                "`priority`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[resources]\ntimeout_ms = 0",
                "`resources.timeout_ms`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[resources]\nmemory_mb = -1",
                "`resources.memory_mb`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[resources]\nconcurrency = 2\nmin_warm = 3",
                "`resources.min_warm`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.http]]\nroute = \"nope\"",
                "`triggers.http[0].route`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.http]]\nroute = \"/a/../b\"",
                "`triggers.http[0].route`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.http]]\nroute = \"/a\"\nmethods = [\"FETCH\"]",
                "`triggers.http[0].methods`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.mqtt]]\ntopic = \"a/#/b\"",
                "`triggers.mqtt[0].topic`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.mqtt]]\ntopic = \"a\"\nreply_topic = \"b/+\"",
                "`triggers.mqtt[0].reply_topic`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.schedule]]\ncron = \"*/5 * * *\"",
                "`triggers.schedule[0].cron` \"*/5 * * *\": has 4 fields",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.schedule]]\ncron = \"0 25 * * *\"",
                "`triggers.schedule[0].cron`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.schedule]]\ncron = \"0 7 * * *\"\ntimezone = \"Europe/Nowhere\"",
                "`triggers.schedule[0].timezone`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.schedule]]\nevery = \"30s\"\ntimezone = \"UTC\"",
                "`triggers.schedule[0].timezone` applies to `cron` only",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.schedule]]\nevery = \"often\"",
                "`triggers.schedule[0].every`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.schedule]]\nevery = \"10ms\"",
                "`triggers.schedule[0].every`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.schedule]]\nevery = \"1s\"\ncron = \"* * * * *\"",
                "both `cron` and `every`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.schedule]]\ninput = \"x\"",
                "needs `cron",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.http]]\nroute = \"/p\"\npipeline = []",
                "`triggers.http[0].pipeline` names 1 to 8",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.mqtt]]\ntopic = \"x/y\"\npipeline = [\"ok\", \"Not OK\"]",
                "`triggers.mqtt[0].pipeline[1]`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.schedule]]\nevery = \"60s\"\n[[triggers.schedule]]\nevery = \"1m\"",
                "`triggers.schedule[1]` repeats every 60s",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.schedule]]\nevery = \"1s\"\ncatch_up = \"all\"",
                "`triggers.schedule[0].catch_up`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[[triggers.schedule]]\nevery = \"1s\"\noverlap = \"kill\"",
                "`triggers.schedule[0].overlap`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[params]\n\"a b\" = \"1\"",
                "`params.a b`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\nextra = 1",
                "unknown field `extra`",
            ),
            (
                "name = \"x\"\nlanguage = \"rust\"\n[resources]\ncpu = 1",
                "unknown field `cpu`",
            ),
            ("language = \"rust\"", "missing field `name`"),
            ("name = [", "line 1"),
        ];
        for (text, expected) in cases {
            let err = Manifest::parse(text).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "for {text:?}: expected {expected:?} in {err:?}"
            );
            assert!(err.starts_with("doee.toml: "), "{err}");
        }
    }
}
