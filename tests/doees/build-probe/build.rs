//! A build script that tries to leave its sandbox. It reads `probes.txt`
//! (one probe a line, written by the test) and reports each outcome as a
//! cargo warning, which lands in the build log, and in the Doee's output:
//!
//!   connect <addr>    open a TCP connection           CONNECTED / refused
//!   read <path>       read a file                     READ / refused
//!   write <path>      create a file                   WRITTEN / refused
//!   allocate <bytes>  reserve memory                  ALLOCATED / refused
//!   whoami            the uid the build runs as       uid=<n>
//!   hang <seconds>    leave a `sleep <seconds>` behind and never finish

use std::io::Write;
use std::time::Duration;

fn main() {
    println!("cargo:rerun-if-changed=probes.txt");
    let probes = std::fs::read_to_string("probes.txt").unwrap_or_default();
    let mut report = Vec::new();
    for line in probes.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (probe, arg) = line.split_once(' ').unwrap_or((line, ""));
        let outcome = match probe {
            "connect" => {
                let addr = arg.parse().expect("connect needs an address");
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(_) => "CONNECTED".to_string(),
                    Err(e) => format!("refused ({e})"),
                }
            }
            "read" => match std::fs::read(arg) {
                Ok(bytes) => format!("READ {} bytes", bytes.len()),
                Err(e) => format!("refused ({e})"),
            },
            "write" => match std::fs::File::create(arg).and_then(|mut f| f.write_all(b"escaped")) {
                Ok(()) => "WRITTEN".to_string(),
                Err(e) => format!("refused ({e})"),
            },
            "allocate" => {
                let bytes: usize = arg.parse().expect("allocate needs a size");
                let mut hoard: Vec<u8> = Vec::new();
                match hoard.try_reserve_exact(bytes) {
                    Ok(()) => "ALLOCATED".to_string(),
                    Err(e) => format!("refused ({e})"),
                }
            }
            "whoami" => std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("Uid:"))
                        .and_then(|l| l.split_whitespace().nth(1).map(|uid| format!("uid={uid}")))
                })
                .unwrap_or_else(|| "uid=unknown".to_string()),
            "hang" => {
                let _child = std::process::Command::new("sleep").arg(arg).spawn();
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            other => format!("unknown probe {other}"),
        };
        println!("cargo:warning=probe {line}: {outcome}");
        report.push(format!("{line}: {outcome}"));
    }
    println!("cargo:rustc-env=PROBE_REPORT={}", report.join(" | "));
}
