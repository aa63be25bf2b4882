//! When schedule triggers fire: the moments of a cron expression in a time
//! zone, or of a period, as milliseconds since the Unix epoch.
//!
//! Resadmin checks a manifest's schedules with it and shows their next
//! firing; the CommServer fires them. Both compute the same moments, and
//! so does every CommServer: a moment names one firing, claimed once.
//!
//! A crate of its own, owned by no service and depending on `isms-ipc`
//! and the cron parser alone, so that both services may use it.

use croner::Cron;
use croner::parser::CronParser;
use isms_ipc::resadmin::When;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::time::Duration;

/// The shortest period of `every`.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// The longest period of `every`: 366 days (`8784h`).
pub const MAX_EVERY: Duration = Duration::from_secs(366 * 24 * 3600);

/// A schedule's timing, parsed: what computes its moments.
pub struct Clock {
    kind: Kind,
}

enum Kind {
    Cron { cron: Box<Cron>, zone: TimeZone },
    Every { ms: u64 },
}

impl Clock {
    /// Parses `when`; the error says what is wrong with it.
    pub fn new(when: &When) -> Result<Clock, String> {
        let kind = match when {
            When::Cron {
                expression,
                timezone,
            } => Kind::Cron {
                cron: Box::new(parse_cron(expression)?),
                zone: parse_timezone(timezone)?,
            },
            When::Every { ms } => {
                check_period(Duration::from_millis(*ms))?;
                Kind::Every { ms: *ms }
            }
        };
        Ok(Clock { kind })
    }

    /// The first moment strictly after `after_ms`, if there is one (a cron
    /// expression may match nothing, such as the 31st of February).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match &self.kind {
            Kind::Every { ms } => Some((after_ms / ms + 1) * ms),
            Kind::Cron { cron, zone } => {
                let from = zoned(after_ms, zone)?;
                let next = cron.find_next_occurrence(&from, false).ok()?;
                u64::try_from(next.timestamp().as_millisecond()).ok()
            }
        }
    }

    /// The last moment at or before `at_ms`, if there is one.
    pub fn last_at_or_before(&self, at_ms: u64) -> Option<u64> {
        match &self.kind {
            Kind::Every { ms } => Some(at_ms / ms * ms),
            Kind::Cron { cron, zone } => {
                let from = zoned(at_ms, zone)?;
                let last = cron.find_previous_occurrence(&from, true).ok()?;
                u64::try_from(last.timestamp().as_millisecond()).ok()
            }
        }
    }
}

fn zoned(ms: u64, zone: &TimeZone) -> Option<jiff::Zoned> {
    let at = Timestamp::from_millisecond(i64::try_from(ms).ok()?).ok()?;
    Some(at.to_zoned(zone.clone()))
}

/// A cron expression: five fields (minute, hour, day of month, month, day
/// of week), or six with seconds first.
fn parse_cron(expression: &str) -> Result<Cron, String> {
    let fields = expression.split_whitespace().count();
    if !(5..=6).contains(&fields) && !expression.trim_start().starts_with('@') {
        return Err(format!(
            "has {fields} fields; use five (minute hour day-of-month month day-of-week) or six (seconds first)"
        ));
    }
    CronParser::new()
        .parse(expression)
        .map_err(|err| err.to_string())
}

/// An IANA time zone name, from the copy of the database the platform
/// carries (the same on every host, so every CommServer computes the same
/// moments).
fn parse_timezone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| {
        format!("\"{name}\" is not a time zone (use an IANA name such as UTC or Europe/Berlin)")
    })
}

/// Reads a period such as `30s`, `5m`, `1h30m` or `500ms`.
pub fn parse_every(text: &str) -> Result<u64, String> {
    let wrong =
        || format!("\"{text}\" is not a period (write it as 30s, 5m, 1h or 1h30m; ms, s, m, h, d)");
    let period: jiff::SignedDuration = text.trim().parse().map_err(|_| wrong())?;
    let period = Duration::try_from(period).map_err(|_| wrong())?;
    check_period(period).map_err(|why| format!("\"{text}\" {why}"))?;
    u64::try_from(period.as_millis()).map_err(|_| wrong())
}

/// A period `every` may have.
fn check_period(period: Duration) -> Result<(), String> {
    if (MIN_EVERY..=MAX_EVERY).contains(&period) {
        return Ok(());
    }
    Err(format!(
        "must be between {}s and {} days",
        MIN_EVERY.as_secs(),
        MAX_EVERY.as_secs() / 86_400
    ))
}

/// Checks a cron expression and its time zone, so a manifest can be
/// refused naming what is wrong: also one that matches no moment after
/// `now_ms` (the 30th of February), which would never fire.
pub fn check_cron(expression: &str, timezone: &str, now_ms: u64) -> Result<(), CronFault> {
    let cron = parse_cron(expression).map_err(CronFault::Expression)?;
    let zone = parse_timezone(timezone).map_err(CronFault::Timezone)?;
    let clock = Clock {
        kind: Kind::Cron {
            cron: Box::new(cron),
            zone,
        },
    };
    if clock.next_after(now_ms).is_none() {
        return Err(CronFault::Expression(
            "matches no moment from now on, so it would never fire".into(),
        ));
    }
    Ok(())
}

/// Which part of a cron schedule is wrong, and why.
#[derive(Debug, PartialEq, Eq)]
pub enum CronFault {
    /// The expression.
    Expression(String),
    /// The time zone.
    Timezone(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u64 {
        text.parse::<Timestamp>().unwrap().as_millisecond() as u64
    }

    fn cron(expression: &str, timezone: &str) -> Clock {
        Clock::new(&When::Cron {
            expression: expression.to_string(),
            timezone: timezone.to_string(),
        })
        .unwrap()
    }

    #[test]
    fn five_fields_fire_on_the_minute() {
        let clock = cron("*/5 * * * *", "UTC");
        let mut at = ms("2026-12-05T13:02:30Z");
        let mut next = Vec::new();
        for _ in 0..3 {
            at = clock.next_after(at).unwrap();
            next.push(at);
        }
        assert_eq!(
            next,
            [
                ms("2026-12-05T13:05:00Z"),
                ms("2026-12-05T13:10:00Z"),
                ms("2026-12-05T13:15:00Z")
            ]
        );
        assert_eq!(
            clock.last_at_or_before(ms("2026-12-05T13:02:30Z")),
            Some(ms("2026-12-05T13:00:00Z"))
        );
        assert_eq!(
            clock.last_at_or_before(ms("2026-12-05T13:05:00Z")),
            Some(ms("2026-12-05T13:05:00Z")),
            "a moment is at or before itself"
        );
    }

    #[test]
    fn six_fields_start_with_seconds() {
        let clock = cron("*/10 * * * * *", "UTC");
        assert_eq!(
            clock.next_after(ms("2026-12-05T13:02:31Z")),
            Some(ms("2026-12-05T13:02:40Z"))
        );
    }

    #[test]
    fn a_time_zone_moves_the_moments() {
        // 07:30 in Berlin is 06:30 UTC in winter, 05:30 in summer.
        let clock = cron("30 7 * * *", "Europe/Berlin");
        assert_eq!(
            clock.next_after(ms("2026-12-05T00:00:00Z")),
            Some(ms("2026-12-05T06:30:00Z"))
        );
        assert_eq!(
            clock.next_after(ms("2026-07-01T00:00:00Z")),
            Some(ms("2026-07-01T05:30:00Z"))
        );
    }

    #[test]
    fn periods_are_multiples_since_the_epoch() {
        let every = parse_every("30s").unwrap();
        assert_eq!(every, 30_000);
        let clock = Clock::new(&When::Every { ms: every }).unwrap();
        assert_eq!(clock.next_after(61_000), Some(90_000));
        assert_eq!(clock.next_after(90_000), Some(120_000));
        assert_eq!(clock.last_at_or_before(89_999), Some(60_000));
        assert_eq!(parse_every("1h30m"), Ok(5_400_000));
        assert_eq!(parse_every("8784h"), Ok(MAX_EVERY.as_millis() as u64));
        assert!(parse_every("8785h").unwrap_err().contains("between"));
        assert!(parse_every("500ms").unwrap_err().contains("between"));
        assert!(parse_every("soon").unwrap_err().contains("not a period"));
        assert!(parse_every("-5s").is_err());
    }

    #[test]
    fn faults_say_which_part() {
        let now = ms("2026-12-05T13:00:00Z");
        assert!(matches!(
            check_cron("*/5 * * *", "UTC", now),
            Err(CronFault::Expression(why)) if why.contains("4 fields")
        ));
        assert!(matches!(
            check_cron("61 * * * *", "UTC", now),
            Err(CronFault::Expression(_))
        ));
        assert!(matches!(
            check_cron("* * * * *", "Mars/Olympus", now),
            Err(CronFault::Timezone(why)) if why.contains("Mars/Olympus")
        ));
        assert!(matches!(
            check_cron("0 0 30 2 *", "UTC", now),
            Err(CronFault::Expression(why)) if why.contains("never fire")
        ));
        assert_eq!(
            check_cron("0 0 * * MON-FRI", "America/New_York", now),
            Ok(())
        );
    }

    /// Berlin's clocks go forward at 02:00 on 2026-03-29 and back at 03:00
    /// on 2026-10-25: a daily 02:30 has no moment on the first day and one
    /// (the first 02:30) on the second.
    #[test]
    fn daylight_saving_skips_the_missing_hour_and_fires_once_in_the_repeated_one() {
        let clock = cron("30 2 * * *", "Europe/Berlin");
        let spring: Vec<u64> = ["2026-03-28T00:00:00Z", "2026-03-29T00:00:00Z"]
            .iter()
            .map(|from| clock.next_after(ms(from)).unwrap())
            .collect();
        assert_eq!(spring[0], ms("2026-03-28T01:30:00Z"));
        assert_ne!(
            spring[1],
            ms("2026-03-29T00:30:00Z"),
            "02:30 does not exist that day"
        );
        let autumn = clock.next_after(ms("2026-10-24T23:00:00Z")).unwrap();
        assert_eq!(autumn, ms("2026-10-25T00:30:00Z"));
        let after = clock.next_after(autumn).unwrap();
        assert!(after >= ms("2026-10-26T00:00:00Z"), "once: {after}");
    }

    #[test]
    fn an_expression_matching_nothing_has_no_next_firing() {
        let clock = cron("0 0 31 2 *", "UTC");
        assert_eq!(clock.next_after(ms("2026-12-05T00:00:00Z")), None);
    }
}
