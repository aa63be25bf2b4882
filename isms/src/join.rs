//! `isms join`: runs one service (a Doer or a CommServer) on this host for
//! a kernel on another, and keeps it joined: the service exits when it
//! loses the kernel, and this supervisor starts it again with backoff, so
//! a kernel restart or a cut link heals without a hand on this host.
//! `isms join-key`: prints (or rotates) the key other hosts join with.

use crate::config::{Config, join_credentials_dir};
use crate::service::REFUSED_EXIT_CODE;
use crate::supervisor::{FIRST_BACKOFF, MAX_BACKOFF, STABLE_AFTER, describe, timestamp};
use anyhow::{Context as _, bail};
use isms_ipc::link::{self, JoinKey};
use isms_ipc::{Endpoint, ServiceKind};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;
use tokio::process::Command;

/// How a service joins a kernel on another host: the options `isms join`
/// takes and hands on to the service it starts.
#[derive(clap::Args, Clone, Debug)]
pub struct Membership {
    /// A file holding the join key (`isms join-key` on the kernel's host
    /// prints it); or the key itself in ISMS_JOIN_KEY (never an argument,
    /// which every user of the host could read).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Requests handled at once (a Doer's Workers) [default: the service's own]
    #[arg(long)]
    pub capacity: Option<u32>,
    /// A label for placement, name=value (repeatable): `--label site=shed`.
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

/// What `isms join` was asked.
#[derive(Debug)]
pub struct Join {
    /// The kernel's `tcp://host:port`.
    pub endpoint: String,
    /// Which service to run here.
    pub service: ServiceKind,
    /// The key file, capacity and labels.
    pub membership: Membership,
    /// The join key itself (from ISMS_JOIN_KEY).
    pub key: Option<String>,
    /// The instance's name after `<service>@` (default: the host name).
    pub name: Option<String>,
    /// Where this host keeps its state.
    pub data_dir: PathBuf,
    /// Options for the service.
    pub config_file: Option<PathBuf>,
}

/// Parses `name=value` (see [`isms_ipc::names::check_label`]).
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("label `{text}` is not name=value"))?;
    isms_ipc::names::check_label(name, value)?;
    Ok((name.to_string(), value.to_string()))
}

/// Reads a join key given inline or in a file.
pub fn read_key(key: Option<&str>, key_file: Option<&Path>) -> anyhow::Result<JoinKey> {
    let text = match (key, key_file) {
        (Some(key), None) => key.to_string(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the join key from {}", file.display()))?,
        (Some(_), Some(_)) => bail!("give the join key once: ISMS_JOIN_KEY or --key-file"),
        (None, None) => bail!(
            "joining needs the kernel's join key: --key-file FILE or ISMS_JOIN_KEY (print it with `isms join-key` on the kernel's host)"
        ),
    };
    text.parse().map_err(|e: String| anyhow::anyhow!(e))
}

/// Runs `isms join` until Ctrl-C or SIGTERM, or until the kernel refuses
/// this host.
pub fn join(join: Join) -> anyhow::Result<()> {
    let endpoint: Endpoint = join
        .endpoint
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    if !matches!(endpoint, Endpoint::Tcp(_)) {
        bail!(
            "`isms join` takes the kernel's tcp://host:port; on the kernel's own host `isms up` starts every service"
        );
    }
    if !join.service.may_join_from_another_host() {
        bail!(
            "a {} cannot join from another host: only a doer or a commserver can (the others stay beside the kernel)",
            join.service
        );
    }
    let key = read_key(join.key.as_deref(), join.membership.key_file.as_deref())?;
    let labels = join
        .membership
        .labels
        .iter()
        .map(|l| parse_label(l).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if join.membership.capacity == Some(0) {
        bail!("--capacity must be at least 1");
    }
    let name = join.name.clone().unwrap_or_else(link::host_name);
    parse_label(&format!("name={name}")).map_err(|_| {
        anyhow::anyhow!("--name `{name}`: 1 to 63 letters, digits, `-`, `_` or `.`")
    })?;
    let config = Config::load(join.config_file.as_deref())?;
    config.validate(&join.data_dir)?;
    let _lock = crate::supervisor::prepare_data_dir(&join.data_dir)?;
    // The service reads the key from a private file, never its arguments
    // (which every user of the host can read in /proc).
    let key_file = join_credentials_dir(&join.data_dir).join("joining.key");
    isms_ipc::secret_file::write(&key_file, format!("{}\n", key.to_text()).as_bytes())
        .with_context(|| format!("cannot keep the join key in {}", key_file.display()))?;
    let instance = format!("{}@{name}", join.service);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    println!(
        "Joining the kernel at {endpoint} as {instance}{}{}",
        join.membership
            .capacity
            .map(|c| format!(", capacity {c}"))
            .unwrap_or_default(),
        if labels.is_empty() {
            String::new()
        } else {
            let labels: Vec<String> = labels.iter().map(|(n, v)| format!("{n}={v}")).collect();
            format!(", labels {}", labels.join(","))
        }
    );
    runtime.block_on(supervise(&join, &instance, &key_file))
}

async fn supervise(join: &Join, instance: &str, key_file: &Path) -> anyhow::Result<()> {
    let mut backoff = FIRST_BACKOFF;
    let mut refusals = 0;
    let mut stop = std::pin::pin!(crate::service::shutdown_signal());
    loop {
        let mut child = start(join, instance, key_file)?;
        let started = Instant::now();
        let status = tokio::select! {
            _ = &mut stop => {
                println!("\nStopping…");
                if let Some(pid) = child.id() {
                    // SAFETY: kill on the child's pid.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                }
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await;
                let _ = child.kill().await;
                println!("Stopped.");
                return Ok(());
            }
            status = child.wait() => status,
        };
        // Refused twice in a row: the key is wrong for good. Once may be a
        // key given out in the second before the kernel read it.
        let refused =
            matches!(&status, Ok(status) if status.code() == Some(i32::from(REFUSED_EXIT_CODE)));
        if refused && refusals > 0 {
            bail!("the kernel refused this host (see the error above); not trying again");
        }
        refusals = if refused { refusals + 1 } else { 0 };
        if started.elapsed() > STABLE_AFTER {
            backoff = FIRST_BACKOFF;
        }
        println!(
            "{} the {} {}; joining again in {:.1} s",
            timestamp(),
            join.service,
            describe(status),
            backoff.as_secs_f64()
        );
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn start(join: &Join, instance: &str, key_file: &Path) -> anyhow::Result<tokio::process::Child> {
    let exe = std::env::current_exe().context("cannot find the isms executable")?;
    let mut command = Command::new(exe);
    command
        .arg("service")
        .arg(join.service.as_str())
        .arg("--instance")
        .arg(instance)
        .arg("--data-dir")
        .arg(&join.data_dir)
        .arg("--kernel")
        .arg(&join.endpoint)
        .arg("--key-file")
        .arg(key_file);
    if let Some(file) = &join.config_file {
        command.arg("--config").arg(file);
    }
    if let Some(capacity) = join.membership.capacity {
        command.arg("--capacity").arg(capacity.to_string());
    }
    for label in &join.membership.labels {
        command.arg("--label").arg(label);
    }
    command.stdin(Stdio::null());
    crate::supervisor::die_with_parent(&mut command);
    command
        .spawn()
        .with_context(|| format!("cannot start the {}", join.service))
}

/// How the service `isms join` started reaches its kernel (`isms service
/// … --kernel <endpoint>`).
pub fn remote(
    endpoint: &str,
    membership: &Membership,
    config_file: Option<&Path>,
) -> anyhow::Result<crate::service::Remote> {
    let key = read_key(None, membership.key_file.as_deref())?;
    let max_message = (Config::load(config_file)?.kernel.max_message_mb as usize) << 20;
    Ok(crate::service::Remote {
        endpoint: endpoint.parse().map_err(anyhow::Error::msg)?,
        joining: link::Joining {
            key,
            limits: isms_ipc::zmtp::Limits {
                max_message,
                ..Default::default()
            },
        },
        capacity: membership.capacity,
        labels: membership
            .labels
            .iter()
            .map(|l| parse_label(l).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?,
    })
}

/// `isms join-key`: prints the key other hosts join this kernel with,
/// making it (and the kernel's certificate) on first use; `rotate` replaces
/// it, and the running kernel cuts off every host that used the old one.
pub fn join_key(data_dir: &Path, rotate: bool) -> anyhow::Result<()> {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o077) };
    let dir = join_credentials_dir(data_dir);
    let key = if rotate {
        link::rotate_key(&dir)
    } else {
        link::kernel_credentials(&dir).map(|(_, key)| key)
    }
    .with_context(|| format!("cannot read or write the join key in {}", dir.display()))?;
    println!("{}", key.to_text());
    if rotate {
        eprintln!(
            "The old key no longer works: a running kernel closes the links made with it within a second.\n\
             Give the new key to every host that should stay joined."
        );
    } else {
        eprintln!(
            "(kept in {}, readable by you alone; `isms join-key --rotate` replaces it)",
            dir.join(link::KEY_FILE).display()
        );
    }
    Ok(())
}
