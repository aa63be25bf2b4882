//! Answers MQTT messages, for the MQTT tests and the `mqtt` benchmark.
//!
//! The payload's first word picks what it does:
//!
//! - `publish <topic> <text>`: `ctx.publish(topic, text)`; a refusal is the
//!   invocation's error;
//! - `seen <id>`: records the id in the `seen` table (which the test
//!   creates), so a test can count what ran;
//! - anything else: answers `<topic> <payload>`, which the platform
//!   publishes on the reply topic.

use doee_sdk::{Context, Doee, Error, export_doee};

#[derive(Default)]
struct Mqtt;

impl Doee for Mqtt {
    fn execute(&mut self, ctx: &mut Context, input: &[u8]) -> Result<Vec<u8>, Error> {
        let text = String::from_utf8_lossy(input);
        let topic = ctx.meta("topic").unwrap_or_default().to_string();
        let mut words = text.splitn(3, ' ');
        match words.next() {
            Some("publish") => {
                let to = words.next().unwrap_or_default();
                ctx.publish(to, words.next().unwrap_or_default().as_bytes())?;
                Ok(format!("published on {to}").into_bytes())
            }
            Some("seen") => {
                let id = words.next().unwrap_or_default().trim();
                ctx.sql("INSERT INTO seen (id) VALUES (?)", &format!("[\"{id}\"]"))?;
                Ok(format!("{topic} seen {id}").into_bytes())
            }
            _ => Ok(format!("{topic} {text}").into_bytes()),
        }
    }
}

export_doee!(Mqtt);
