//! MQTT topics, filters and the namespaces that keep projects apart.
//!
//! A project may subscribe and publish only inside its namespaces:
//! `<project>/#` always, plus those a platform admin grants. A namespace is
//! a run of literal levels followed by `#`, so "is this filter inside it"
//! is a comparison of leading levels: a filter whose leading levels are
//! wildcards (`+/temp`, `#`) can match topics of any project and is inside
//! no namespace. Resadmin checks a manifest's filters at deploy; the
//! CommServer checks every delivery and every publish again, so a change of
//! grants takes effect without trusting what was deployed before it.

/// Why a topic, filter or namespace is refused.
pub type TopicError = String;

/// Checks an MQTT topic (`filter: false`) or topic filter (`filter: true`):
/// 1 to 1024 bytes, no NUL, wildcards filling whole levels, `#` last.
pub fn check(topic: &str, filter: bool) -> Result<(), TopicError> {
    if topic.is_empty() || topic.len() > 1024 {
        return Err("must be 1 to 1024 bytes".into());
    }
    if topic.contains('\0') {
        return Err("must not contain NUL".into());
    }
    if topic.starts_with('$') {
        return Err(format!(
            "must not start with $ (reserved for the broker, got \"{topic}\")"
        ));
    }
    let levels: Vec<&str> = topic.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wild = level.contains('+') || level.contains('#');
        if !filter && wild {
            return Err(format!("must not contain wildcards (got \"{topic}\")"));
        }
        if wild && *level != "+" && *level != "#" {
            return Err(format!(
                "wildcards must fill a whole level (got \"{topic}\")"
            ));
        }
        if *level == "#" && i + 1 != levels.len() {
            return Err(format!("# must be the last level (got \"{topic}\")"));
        }
    }
    Ok(())
}

/// Whether `topic` (no wildcards) matches `filter`, as MQTT 3.1.1 §4.7:
/// a wildcard first level does not match the broker's `$` topics.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (literal, Some(t)) if literal == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// A project's namespace: literal levels followed by `/#`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace(String);

impl Namespace {
    /// The namespace every project holds: `<project>/#`.
    pub fn of_project(project: &crate::ProjectName) -> Namespace {
        Namespace(format!("{project}/#"))
    }

    /// Parses `a/b/#`: at least one literal level, then `#`.
    pub fn parse(text: &str) -> Result<Namespace, TopicError> {
        check(text, true)?;
        let Some(prefix) = text.strip_suffix("/#") else {
            return Err(format!(
                "a topic namespace is literal levels followed by /# (like greenhouse/#), got \"{text}\""
            ));
        };
        if prefix
            .split('/')
            .any(|level| level == "+" || level.is_empty())
        {
            return Err(format!(
                "a topic namespace's levels must be literal and non-empty (got \"{text}\")"
            ));
        }
        Ok(Namespace(text.to_string()))
    }

    /// `a/b/#`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether every topic `filter` (or topic) can match lies inside.
    pub fn contains(&self, filter: &str) -> bool {
        let prefix = &self.0[..self.0.len() - 2];
        let mut levels = filter.split('/');
        for literal in prefix.split('/') {
            if levels.next() != Some(literal) {
                return false;
            }
        }
        true
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether some namespace of `namespaces` contains `filter`.
pub fn allowed(namespaces: &[Namespace], filter: &str) -> bool {
    namespaces.iter().any(|ns| ns.contains(filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_mqtt_says() {
        for (filter, topic, expected) in [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("#", "$SYS/load", false),
            ("+/load", "$SYS/load", false),
            ("$SYS/#", "$SYS/load", true),
            ("a/+/c", "a/b/c", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "anything/at/all", true),
            ("+", "a", true),
            ("+", "a/b", false),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("+/+", "/x", true),
        ] {
            assert_eq!(matches(filter, topic), expected, "{filter} vs {topic}");
        }
    }

    #[test]
    fn namespaces_contain_only_their_own_topics() {
        let ns = Namespace::parse("plant/#").unwrap();
        for (filter, inside) in [
            ("plant/a/in", true),
            ("plant/#", true),
            ("plant", true),
            ("plant/+", true),
            ("plants/a", false),
            ("+/a/in", false),
            ("#", false),
            ("+", false),
            ("other/plant/a", false),
        ] {
            assert_eq!(ns.contains(filter), inside, "{filter}");
        }
        let deep = Namespace::parse("green/house/#").unwrap();
        assert!(deep.contains("green/house/t"));
        assert!(!deep.contains("green/+/t"));
        assert!(!deep.contains("green/#"));
    }

    #[test]
    fn bad_namespaces_and_topics_are_refused_with_the_reason() {
        for bad in ["#", "+/#", "a/+/#", "a", "a/b", "a//#", "$SYS/#"] {
            assert!(Namespace::parse(bad).is_err(), "{bad}");
        }
        assert!(check("a/#/b", true).unwrap_err().contains("last level"));
        assert!(check("a/b+", true).unwrap_err().contains("whole level"));
        assert!(check("a/+", false).unwrap_err().contains("wildcards"));
        assert!(check("$SYS/x", true).unwrap_err().contains("reserved"));
        assert!(check("", false).is_err());
    }
}
