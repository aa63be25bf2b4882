//! `isms logs <project> [-f]`: a project's Doee and build logs, followed
//! live over Server-Sent Events.

use super::{Api, ApiArgs, format_time};
use crate::client;
use std::time::Duration;

/// `isms logs`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The project.
    pub project: String,
    /// Keep printing new lines as they come (Ctrl-C stops).
    #[arg(short, long)]
    pub follow: bool,
    /// How many recent lines to print first.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub lines: u32,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Runs `isms logs`.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let base = format!("/api/v1/projects/{}/logs", args.project);
    if !args.follow {
        let lines = api
            .get_json(&format!("{base}?limit={}", args.lines.clamp(1, 1000)))
            .await?;
        for line in lines.as_array().into_iter().flatten() {
            println!("{}", format_line(line));
        }
        return Ok(());
    }
    // Follow, reconnecting from the last line seen when the connection
    // drops (a restart of the platform, say).
    let mut cursor: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        let url = match cursor {
            Some(after) => format!("{}{base}?follow=1&after={after}", api.url()),
            None => format!(
                "{}{base}?follow=1&limit={}",
                api.url(),
                args.lines.clamp(1, 1000)
            ),
        };
        let mut events = Events::default();
        let mut error = None;
        let result = client::stream(
            &url,
            api.token(),
            client::StreamRequest::events(),
            |chunk| {
                for event in events.feed(chunk) {
                    match event.kind.as_str() {
                        "log" => {
                            if let Ok(line) = serde_json::from_str::<serde_json::Value>(&event.data)
                            {
                                println!("{}", format_line(&line));
                            }
                            if let Some(id) = event.id {
                                cursor = Some(id);
                            }
                        }
                        "error" => {
                            error = Some(event.data);
                            return false;
                        }
                        _ => {}
                    }
                }
                true
            },
        )
        .await;
        if let Some(error) = error {
            anyhow::bail!("{error}");
        }
        match result {
            Ok(Some(refused)) => {
                let message = refused.error_message();
                if refused.status == 401 {
                    anyhow::bail!("{message} (run `isms login`)");
                }
                anyhow::bail!("{message}");
            }
            Ok(None) => failures = 0,
            Err(err) => {
                failures += 1;
                if failures == 1 {
                    eprintln!("(lost the platform: {err}; retrying)");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

/// `2026-11-23 10:00:00 info  hello@2 [invocation 0a1b2c3d] text`.
fn format_line(line: &serde_json::Value) -> String {
    let source = match line["source"].as_str() {
        Some("build") => "build".to_string(),
        _ => line["invocation_id"]
            .as_str()
            .map_or("?", |id| &id[id.len().saturating_sub(8)..])
            .to_string(),
    };
    format!(
        "{} {:<5} {}@{} [{}] {}",
        format_time(line["at_ms"].as_u64().unwrap_or(0)),
        line["level"].as_str().unwrap_or("info"),
        line["doee"].as_str().unwrap_or("?"),
        line["version"].as_u64().unwrap_or(0),
        source,
        line["message"].as_str().unwrap_or("")
    )
}

/// One Server-Sent Event.
#[derive(Debug, Default, PartialEq)]
pub struct Event {
    /// `event:`, `message` when absent.
    pub kind: String,
    /// `data:` lines joined by newlines.
    pub data: String,
    /// `id:`, when a number.
    pub id: Option<u64>,
}

/// Splits a Server-Sent Events stream into events, across chunk boundaries.
#[derive(Default)]
pub struct Events {
    buffer: Vec<u8>,
}

impl Events {
    /// Takes a chunk and returns the events it completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let mut event = Event {
                kind: "message".into(),
                ..Event::default()
            };
            let mut data = Vec::new();
            let mut any = false;
            for line in text.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event.kind = value.to_string(),
                    "data" => data.push(value.to_string()),
                    "id" => event.id = value.parse().ok(),
                    // Comments (`: keep-alive`) and `retry:` carry no event.
                    _ => continue,
                }
                any = true;
            }
            if any {
                event.data = data.join("\n");
                events.push(event);
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut events = Events::default();
        assert!(
            events
                .feed(b"retry: 1000\n\n: keep-alive\n\nid: 7\nevent: lo")
                .is_empty()
        );
        let got = events.feed(b"g\ndata: {\"a\":1}\n\nevent: error\ndata: gone\n\n");
        assert_eq!(
            got,
            vec![
                Event {
                    kind: "log".into(),
                    data: "{\"a\":1}".into(),
                    id: Some(7)
                },
                Event {
                    kind: "error".into(),
                    data: "gone".into(),
                    id: None
                }
            ]
        );
    }
}
