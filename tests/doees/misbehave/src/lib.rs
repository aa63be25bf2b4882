//! A Doee that misbehaves on purpose, for the sandbox tests. Its `mode`
//! parameter picks the misdeed; `echo` is the healthy control.

use doee_sdk::{Context, Doee, Error, export_doee};
use std::fmt::Write as _;

#[derive(Default)]
struct Misbehave {
    mode: String,
}

unsafe extern "C" {
    fn fork() -> i32;
}

impl Doee for Misbehave {
    fn initialize(&mut self, ctx: &mut Context) -> Result<(), Error> {
        self.mode = ctx.param("mode").unwrap_or("echo").to_string();
        Ok(())
    }

    fn execute(&mut self, ctx: &mut Context, input: &[u8]) -> Result<Vec<u8>, Error> {
        match self.mode.as_str() {
            "echo" => Ok(input.to_vec()),
            // The input picks: `crash-after:<ms>` works, then segfaults;
            // `sleep:<ms>[ anything]` works, then echoes; anything else is
            // echoed.
            "by-input" => {
                let text = String::from_utf8_lossy(input).to_string();
                if let Some(ms) = text.strip_prefix("crash-after:") {
                    std::thread::sleep(std::time::Duration::from_millis(ms.parse()?));
                    // SAFETY: it is not; that is the point.
                    unsafe { std::ptr::null_mut::<u64>().write_volatile(42) };
                }
                if let Some(rest) = text.strip_prefix("sleep:") {
                    let ms = rest.split(' ').next().unwrap_or_default();
                    std::thread::sleep(std::time::Duration::from_millis(ms.parse()?));
                }
                Ok(input.to_vec())
            }
            // Busy for `work_us` microseconds, then echoes: a Doee with a cost.
            "work" => {
                let work_us: u64 = ctx.param("work_us").unwrap_or("100").parse()?;
                let until = std::time::Instant::now() + std::time::Duration::from_micros(work_us);
                while std::time::Instant::now() < until {
                    std::hint::spin_loop();
                }
                Ok(input.to_vec())
            }
            "respond" => {
                ctx.set_status(201);
                ctx.set_header("x-answer", "42");
                ctx.set_header("set-cookie", "doee=1");
                ctx.set_header("content-length", "999");
                ctx.log(doee_sdk::Level::Info, "responded");
                Ok(format!("{} via {}", ctx.meta("method").unwrap_or("?"), ctx.meta("trigger").unwrap_or("?")).into_bytes())
            }
            // The secret the input names, described without showing it:
            // its length and last two characters.
            "secret" => {
                let name = String::from_utf8_lossy(input).trim().to_string();
                let value = ctx.secret(&name)?;
                let tail: String = value.chars().rev().take(2).collect::<Vec<_>>().into_iter().rev().collect();
                Ok(format!("{} bytes ending in {tail}", value.len()).into_bytes())
            }
            // A schedule's firing: `sleep:<ms>` input sleeps first; the
            // output names the trigger and the firing's moment.
            "scheduled" => {
                let text = String::from_utf8_lossy(input).to_string();
                if let Some(ms) = text.strip_prefix("sleep:") {
                    std::thread::sleep(std::time::Duration::from_millis(ms.trim().parse()?));
                }
                Ok(format!("{} {}", ctx.meta("trigger").unwrap_or("?"), ctx.meta("scheduled").unwrap_or("?")).into_bytes())
            }
            // A link of a chain: waits `sleep_ms`, calls the Doee named by
            // `call` (if any) with the input, and wraps what it got in its
            // own name: `outer(inner(x))`. With `recurse`, an input `n > 0`
            // calls itself with `n - 1`.
            "chain" => {
                let sleep_ms: u64 = ctx.param("sleep_ms").unwrap_or("0").parse()?;
                std::thread::sleep(std::time::Duration::from_millis(sleep_ms));
                let name = ctx.meta("doee").unwrap_or("?").to_string();
                let text = String::from_utf8_lossy(input).to_string();
                let inner = match (ctx.param("call").map(str::to_string), text.parse::<u32>()) {
                    (Some(callee), _) => ctx.invoke(&callee, input)?,
                    (None, Ok(n)) if n > 0 && ctx.param("recurse").is_some() => {
                        ctx.invoke(&name, (n - 1).to_string().as_bytes())?
                    }
                    _ => input.to_vec(),
                };
                Ok(format!("{name}({})", String::from_utf8_lossy(&inner)).into_bytes())
            }
            // Streams: writes `first`, waits until the secret the input
            // names exists (the test sets it once it has read `first`), then
            // writes `second` and answers `done`.
            "stream" => {
                ctx.write(b"first\n")?;
                let signal = String::from_utf8_lossy(input).trim().to_string();
                while ctx.secret(&signal).is_err() {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                ctx.write(b"second\n")?;
                Ok(b"done\n".to_vec())
            }
            // Writes `tick <n>` every `every_ms` (100), `count` times (600),
            // then answers `end`; stops when a write fails (the client left).
            "drip" => {
                let every: u64 = ctx.param("every_ms").unwrap_or("100").parse()?;
                let count: u32 = ctx.param("count").unwrap_or("600").parse()?;
                for n in 0..count {
                    ctx.write(format!("tick {n}\n").as_bytes())?;
                    std::thread::sleep(std::time::Duration::from_millis(every));
                }
                if ctx.param("fail").is_some() {
                    return Err(Error::new("dripped dry"));
                }
                Ok(b"end".to_vec())
            }
            "panic" => panic!("misbehave panics on purpose"),
            "segfault" => {
                // SAFETY: it is not; that is the point.
                unsafe { std::ptr::null_mut::<u64>().write_volatile(42) };
                Ok(Vec::new())
            }
            "spin" => loop {
                std::hint::spin_loop();
            },
            "allocate" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch every page so the memory is really used.
                    hoard.push(vec![1u8; 1 << 20]);
                }
            }
            "fork-bomb" => loop {
                // Every process keeps forking until the limit stops it.
                // SAFETY: fork in a process that then only forks again.
                unsafe { fork() };
            },
            // Tries to reach the address in the input (a host listener).
            "connect" => {
                let target = String::from_utf8_lossy(input).to_string();
                let mut out = String::new();
                for addr in [target.as_str(), "1.1.1.1:80"] {
                    let result = addr
                        .parse()
                        .map_err(|e: std::net::AddrParseError| e.to_string())
                        .and_then(|a| {
                            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_millis(300))
                                .map_err(|e| e.to_string())
                        });
                    let _ = writeln!(out, "{addr}: {}", match result {
                        Ok(_) => "CONNECTED".to_string(),
                        Err(e) => format!("refused ({e})"),
                    });
                }
                Ok(out.into_bytes())
            }
            // Tries to write outside /tmp and to read the paths in the input.
            "escape" => {
                let mut out = String::new();
                for path in ["/etc/isms-escape", "/usr/isms-escape", "/isms/escape", "/run/isms/escape", "/escape"] {
                    let result = std::fs::write(path, b"x");
                    let _ = writeln!(out, "write {path}: {}", if result.is_ok() { "WRITTEN" } else { "refused" });
                }
                let tmp = std::fs::write("/tmp/allowed", b"x").and_then(|()| std::fs::read("/tmp/allowed"));
                let _ = writeln!(out, "write /tmp/allowed: {}", if tmp.is_ok() { "ok" } else { "FAILED" });
                for path in String::from_utf8_lossy(input).split_whitespace() {
                    let result = std::fs::read(path).map(|_| ()).or_else(|_| std::fs::read_dir(path).map(|_| ()));
                    let _ = writeln!(out, "read {path}: {}", if result.is_ok() { "READ" } else { "refused" });
                }
                ctx.log(doee_sdk::Level::Info, "escape probes done");
                Ok(out.into_bytes())
            }
            other => Err(Error::new(format!("unknown mode {other}"))),
        }
    }
}

export_doee!(Misbehave);
