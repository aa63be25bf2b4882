//! The web dashboard: plain HTML, CSS and JavaScript modules from
//! `control-gate/dashboard`, built into the binary, served at `/` and
//! `/ui/<file>`. The page talks to the same REST API as the CLI.
//!
//! No build step and no third-party code: `cargo build` is all it takes, and
//! nothing is fetched at run time. Every answer carries a strict
//! Content-Security-Policy (only this origin's scripts, styles and
//! connections, no inline script), so a string from the API that slipped
//! into the page as markup could still not run.

use bytes::Bytes;
use std::path::PathBuf;

/// One file of the dashboard.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../dashboard/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file, by the name it is served under (`/ui/<name>`; `index.html`
/// is served at `/`).
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("messages.js", JS),
    asset!("dom.js", JS),
    asset!("tar.js", JS),
    asset!("charts.js", JS),
    asset!("login.js", JS),
    asset!("projects.js", JS),
    asset!("project.js", JS),
    asset!("doees.js", JS),
    asset!("activity.js", JS),
    asset!("data.js", JS),
    asset!("mqtt.js", JS),
    asset!("secrets.js", JS),
    asset!("system.js", JS),
];

/// The page's name in [`ASSETS`].
pub const INDEX: &str = "index.html";

/// The headers every dashboard answer carries.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

/// A file ready to send.
pub struct File {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: Bytes,
    /// A strong validator of those bytes, quoted.
    pub etag: String,
}

/// Where the files come from, and what the page needs to know of the
/// platform.
#[derive(Clone, Debug)]
pub struct Dashboard {
    /// Read the files from this directory instead of the built-in copies
    /// (for working on the dashboard without rebuilding). Only the names in
    /// the built-in list are served, so nothing else there is reachable.
    pub dir: Option<PathBuf>,
    /// The base URL of HTTP triggers, for the page's curl lines.
    pub triggers_url: String,
    /// Where devices reach the embedded MQTT broker (`mqtt://host:port`);
    /// empty when an external broker is configured.
    pub mqtt_url: String,
}

impl Dashboard {
    /// The file served under `name`, if the dashboard has one.
    pub fn file(&self, name: &str) -> Option<File> {
        let asset = ASSETS.iter().find(|a| a.name == name)?;
        let body = match &self.dir {
            Some(dir) => match std::fs::read(dir.join(asset.name)) {
                Ok(bytes) => Bytes::from(bytes),
                Err(err) => {
                    tracing::warn!(cause = %err, file = asset.name, "dashboard file unreadable; serving the built-in copy");
                    Bytes::from_static(asset.bytes)
                }
            },
            None => Bytes::from_static(asset.bytes),
        };
        let body = if asset.name == INDEX {
            fill_index(
                &body,
                &[
                    ("{{triggers_url}}", &self.triggers_url),
                    ("{{mqtt_url}}", &self.mqtt_url),
                ],
            )
        } else {
            body
        };
        Some(File {
            content_type: asset.content_type,
            etag: format!("\"{:016x}\"", fnv1a(&body)),
            body,
        })
    }
}

/// Puts what the page needs to know of the platform into the page (a
/// `<meta>` attribute, since inline scripts are not allowed).
fn fill_index(page: &[u8], values: &[(&str, &str)]) -> Bytes {
    let mut text = String::from_utf8_lossy(page).into_owned();
    for (placeholder, value) in values {
        let escaped = value
            .replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        text = text.replace(placeholder, &escaped);
    }
    Bytes::from(text)
}

/// FNV-1a, 64 bits: enough to tell one version of a file from another.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built_in() -> Dashboard {
        Dashboard {
            dir: None,
            triggers_url: "http://127.0.0.1:7781".into(),
            mqtt_url: "mqtt://127.0.0.1:1884".into(),
        }
    }

    #[test]
    fn the_page_knows_where_triggers_and_the_broker_are() {
        let page = built_in().file(INDEX).unwrap();
        let text = std::str::from_utf8(&page.body).unwrap();
        assert!(text.contains("content=\"http://127.0.0.1:7781\""), "{text}");
        assert!(text.contains("content=\"mqtt://127.0.0.1:1884\""), "{text}");
        assert!(page.content_type.starts_with("text/html"));
    }

    /// The page loads nothing from elsewhere, runs no inline script (which
    /// the Content-Security-Policy would refuse anyway) and never turns text
    /// into markup.
    #[test]
    fn every_file_is_local_and_every_script_is_a_file() {
        let page = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        let style = std::str::from_utf8(ASSETS[1].bytes).unwrap();
        assert!(!page.contains("://"), "index.html refers to another site");
        assert!(!style.contains("://"), "app.css refers to another site");
        for script in page.split("<script").skip(1) {
            assert!(
                script.contains("src=\"/ui/"),
                "an inline script in index.html"
            );
        }
        assert!(
            !page.contains("style="),
            "inline styles are refused by the CSP"
        );
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            for forbidden in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "eval(",
                "document.write",
            ] {
                assert!(!text.contains(forbidden), "{} uses {forbidden}", asset.name);
            }
            // Every request goes to this origin's API (`path()` makes the URL).
            for call in text.split("fetch(").skip(1) {
                assert!(
                    call.starts_with("path(") || call.starts_with(')'),
                    "{} fetches another site",
                    asset.name
                );
            }
        }
    }

    /// Each module the dashboard imports is one it serves.
    #[test]
    fn every_imported_module_is_served() {
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let module = line
                    .rsplit("'./")
                    .next()
                    .and_then(|rest| rest.split('\'').next())
                    .unwrap_or_default();
                assert!(
                    ASSETS.iter().any(|a| a.name == module),
                    "{} imports {module}, which is not served",
                    asset.name
                );
            }
        }
    }

    /// A file added to the folder is served, not forgotten.
    #[test]
    fn every_file_of_the_folder_is_built_in() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboard");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(
                name == "package.json" || ASSETS.iter().any(|a| a.name == name),
                "control-gate/dashboard/{name} is not in ASSETS"
            );
        }
    }

    #[test]
    fn unknown_names_are_not_served_even_from_a_directory() {
        let dashboard = Dashboard {
            dir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboard")),
            triggers_url: String::new(),
            mqtt_url: String::new(),
        };
        assert!(dashboard.file("Cargo.toml").is_none());
        assert!(dashboard.file("package.json").is_none());
        assert!(dashboard.file("../Cargo.toml").is_none());
        assert!(dashboard.file("app.js").is_some());
    }

    #[test]
    fn a_changed_file_gets_another_etag() {
        let a = built_in().file("app.js").unwrap();
        let b = built_in().file("app.css").unwrap();
        assert_ne!(a.etag, b.etag);
        assert_eq!(a.etag, built_in().file("app.js").unwrap().etag);
    }
}
