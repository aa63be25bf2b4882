//! The identifiers that travel in messages, validated where they are made.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A kind of service process connected to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ServiceKind {
    /// The kernel itself (its requests are answered in-process).
    Kernel,
    /// Runs Doees in Workers.
    Doer,
    /// Users, projects, Doee sources, builds and binaries.
    Resadmin,
    /// Each project's SQL and document databases.
    DBriver,
    /// HTTP and MQTT triggers.
    CommServer,
    /// Dashboard, REST API, metrics.
    ControlGate,
}

impl ServiceKind {
    /// Every kind, in start-up order.
    pub const ALL: [ServiceKind; 6] = [
        ServiceKind::Kernel,
        ServiceKind::Resadmin,
        ServiceKind::DBriver,
        ServiceKind::Doer,
        ServiceKind::CommServer,
        ServiceKind::ControlGate,
    ];

    /// The name used on the command line and in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Kernel => "kernel",
            ServiceKind::Doer => "doer",
            ServiceKind::Resadmin => "resadmin",
            ServiceKind::DBriver => "dbriver",
            ServiceKind::CommServer => "commserver",
            ServiceKind::ControlGate => "control-gate",
        }
    }
}

impl ServiceKind {
    /// Whether every request for this service must act for a project: the
    /// kernel refuses one whose envelope names none.
    pub fn serves_projects_only(self) -> bool {
        self == ServiceKind::DBriver
    }

    /// Whether an instance may run on another host than the kernel's. The
    /// Doer and the CommServer scale out; Resadmin, DBriver and the Control
    /// Gate hold the platform's accounts and data and may ask for them, so
    /// they stay beside the kernel (ARCHITECTURE.md, the trust model).
    pub fn may_join_from_another_host(self) -> bool {
        matches!(self, ServiceKind::Doer | ServiceKind::CommServer)
    }
}

/// Checks one label of an instance or of a Doee's `[placement]`: name and
/// value are 1 to 63 letters, digits, `-`, `_` or `.`.
pub fn check_label(name: &str, value: &str) -> Result<(), String> {
    let fine = |part: &str| {
        !part.is_empty()
            && part.len() <= 63
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if fine(name) && fine(value) {
        Ok(())
    } else {
        Err(format!(
            "label `{name}={value}`: name and value are 1 to 63 letters, digits, `-`, `_` or `.`"
        ))
    }
}

/// Whether an instance with `labels` may take work placed at `wanted`:
/// it has every label wanted.
pub fn labels_match(wanted: &[(String, String)], labels: &[(String, String)]) -> bool {
    wanted.iter().all(|w| labels.contains(w))
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ServiceKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| format!("unknown service `{s}`"))
    }
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{name}`: {rule}")]
pub struct NameError {
    /// What kind of name (`project name`, …).
    pub what: &'static str,
    /// The refused name (truncated).
    pub name: String,
    /// The rule it broke.
    pub rule: &'static str,
}

/// Checks the SPEC's name rule `[a-z0-9-]{1,63}`, also refusing a leading `-`
/// so a name never reads as a command-line flag.
fn check_name(what: &'static str, name: &str) -> Result<(), NameError> {
    let refuse = |rule| {
        Err(NameError {
            what,
            name: name.chars().take(80).collect(),
            rule,
        })
    };
    if name.is_empty() || name.len() > 63 {
        return refuse("must be 1 to 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return refuse("may contain only a-z, 0-9 and -");
    }
    if name.starts_with('-') {
        return refuse("must not start with -");
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `name`.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check_name($what, &name)?;
                Ok($name(name))
            }

                        /// Whether `name` would be accepted, without allocating.
            pub fn is_valid(name: &str) -> bool {
                check_name($what, name).is_ok()
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(name: String) -> Result<Self, NameError> {
                Self::new(name)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Sound: Hash and Eq are derived from the inner string.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A project's name: `[a-z0-9-]{1,63}`.
    ProjectName,
    "project name"
);
name_type!(
    /// A Doee's name, unique within its project: `[a-z0-9-]{1,63}`.
    DoeeName,
    "Doee name"
);
name_type!(
    /// A user's login name: `[a-z0-9-]{1,63}`.
    Username,
    "username"
);
name_type!(
    /// An MQTT device's name, unique within its project: `[a-z0-9-]{1,63}`.
    DeviceName,
    "device name"
);

/// A secret's name, unique within its project: `[A-Za-z_][A-Za-z0-9_]{0,63}`,
/// as environment variables are named (`API_TOKEN`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretName(String);

impl SecretName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        let refuse = |rule| {
            Err(NameError {
                what: "secret name",
                name: name.chars().take(80).collect(),
                rule,
            })
        };
        if name.is_empty() || name.len() > 64 {
            return refuse("must be 1 to 64 characters");
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return refuse("may contain only A-Z, a-z, 0-9 and _");
        }
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            return refuse("must not start with a digit");
        }
        Ok(SecretName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SecretName {
    type Error = NameError;
    fn try_from(name: String) -> Result<Self, NameError> {
        Self::new(name)
    }
}

impl From<SecretName> for String {
    fn from(name: SecretName) -> String {
        name.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret's value: never printed, not even in a debug log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretValue(pub String);

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(…)")
    }
}

/// The scheduling class of a request: the kernel serves every queued `High`
/// request before any `Normal` one, and `Normal` before `Low`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Priority {
    /// Served first.
    High,
    /// The default.
    #[default]
    Normal,
    /// Served when nothing else waits.
    Low,
}

impl Priority {
    /// The manifest's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(format!(
                "unknown priority `{other}` (expected high, normal or low)"
            )),
        }
    }
}

/// A point in wall-clock time, in milliseconds since the Unix epoch, after
/// which nobody waits for the answer any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Deadline(pub u64);

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline(now_ms().saturating_add(timeout.as_millis() as u64))
    }

    /// The time left, zero once passed.
    pub fn remaining(self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(now_ms()))
    }

    /// Whether the deadline has passed.
    pub fn is_past(self) -> bool {
        now_ms() >= self.0
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Identifies a message among those one connection has outstanding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub u64);

/// The id of one invocation of a Doee, shown to users as 32 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InvocationId(pub u128);

impl InvocationId {
    /// A fresh id: a random 64-bit prefix drawn once per process, then a
    /// counter. Unique across processes and restarts without a system call
    /// per invocation (on the hot path); not secret, which nothing needs:
    /// reading an invocation checks the reader's rights.
    pub fn generate() -> InvocationId {
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(|| {
            let mut bytes = [0u8; 8];
            // Fall back to the clock and pid if the OS has no randomness.
            if getrandom::fill(&mut bytes).is_err() {
                bytes = (now_ms() ^ u64::from(std::process::id()) << 40).to_be_bytes();
            }
            u64::from_be_bytes(bytes)
        });
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        InvocationId(u128::from(prefix) << 64 | u128::from(count))
    }
}

impl fmt::Display for InvocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for InvocationId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() != 32 {
            return Err(format!(
                "invalid invocation id `{s}`: expected 32 hex digits"
            ));
        }
        u128::from_str_radix(s, 16)
            .map(InvocationId)
            .map_err(|_| format!("invalid invocation id `{s}`: expected 32 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for good in ["a", "demo", "hello-world-2", &"x".repeat(63)] {
            assert!(ProjectName::new(good).is_ok(), "{good}");
        }
        for bad in ["", "Demo", "a_b", "-x", "a/b", "..", "é", &"x".repeat(64)] {
            assert!(ProjectName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_name_cannot_be_decoded() {
        let bytes = postcard::to_allocvec(&"../etc".to_string()).unwrap();
        assert!(postcard::from_bytes::<DoeeName>(&bytes).is_err());
    }

    #[test]
    fn invocation_ids_round_trip_as_hex() {
        let id = InvocationId::generate();
        assert_eq!(id.to_string().parse::<InvocationId>().unwrap(), id);
        assert_ne!(InvocationId::generate(), id);
        assert!("xyz".parse::<InvocationId>().is_err());
    }
}
