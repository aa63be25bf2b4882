//! One Worker: its sandboxed process, its socket, and the task that moves
//! messages between the two and reports to the Doer Admin.
//!
//! The task also keeps the Worker to the protocol, so that nothing a Doee
//! does can make the Doer hold more for it than a few messages: one
//! platform call at a time, a `Done` only for a task it was given, a
//! bounded line of its stderr. A Worker that breaks the protocol is killed.

use crate::cgroup::{WORKER_OVERHEAD_MB, WorkerGroup};
use crate::isolation::{Isolation, WorkerFiles};
use isms_ipc::worker::{FromWorker, Load, ToWorker};
use isms_ipc::zmtp::{self, AsyncLink};
use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio::process::Child;
use tokio::sync::mpsc;

/// Characters kept of one line of a Worker's stderr; the rest of the line
/// is read and dropped.
const STDERR_LINE: usize = 300;
/// Lines of a Worker's stderr kept, to say why it died.
const STDERR_LINES: usize = 8;

/// Identifies a Worker within this Doer.
pub type WorkerId = u64;

/// What a Worker may send the Doer in one message: the output cap plus
/// room for logs and framing.
pub fn link_limits(max_output_bytes: u32) -> zmtp::Limits {
    zmtp::Limits {
        max_message: max_output_bytes as usize + (8 << 20),
        max_frames: 4,
    }
}

/// What the Admin tells a Worker's task.
#[derive(Debug)]
pub enum Command {
    /// Send this message to the Executor.
    Send(ToWorker),
    /// Kill the Worker now.
    Kill,
}

/// What a Worker's task tells the Admin.
#[derive(Debug)]
pub enum Event {
    /// A message from the Executor.
    Message(FromWorker),
    /// The Worker is gone; the text says why, for people.
    Exited(String),
}

/// The Admin's handle on a Worker's task.
#[derive(Debug, Clone)]
pub struct Handle {
    commands: mpsc::UnboundedSender<Command>,
}

impl Handle {
    /// Sends a message to the Executor.
    pub fn send(&self, message: ToWorker) {
        let _ = self.commands.send(Command::Send(message));
    }

    /// Kills the Worker.
    pub fn kill(&self) {
        let _ = self.commands.send(Command::Kill);
    }
}

/// Everything needed to start a Worker.
pub struct Spawn<'a> {
    /// Its id.
    pub id: WorkerId,
    /// The backend.
    pub isolation: &'a dyn Isolation,
    /// The isms executable.
    pub executable: &'a Path,
    /// The Doee's shared object.
    pub doee: &'a Path,
    /// Where Workers' run directories go.
    pub workers_dir: &'a Path,
    /// What to load.
    pub load: Load,
    /// How long it may take to connect.
    pub start_timeout: Duration,
    /// Its cgroup, if the host gives Workers one; removed when it ends.
    pub cgroup: Option<WorkerGroup>,
}

/// Starts a Worker and its task; events arrive on `events` tagged with the id.
pub fn spawn(
    spec: Spawn<'_>,
    events: mpsc::UnboundedSender<(WorkerId, Event)>,
) -> anyhow::Result<Handle> {
    let run_dir = spec.workers_dir.join(spec.id.to_string());
    let (mut child, listener) = match start(&spec, &run_dir) {
        Ok(started) => started,
        Err(err) => {
            if let Some(group) = &spec.cgroup {
                group.remove();
            }
            let _ = std::fs::remove_dir_all(&run_dir);
            return Err(err);
        }
    };

    let (commands, commands_rx) = mpsc::unbounded_channel();
    let task = WorkerTask {
        id: spec.id,
        run_dir,
        stderr_tail: Default::default(),
        limits: link_limits(spec.load.limits.max_output_bytes),
        memory_mb: spec.load.limits.memory_mb,
        cgroup: spec.cgroup,
    };
    let stderr = child.stderr.take();
    tokio::spawn(task.run(
        child,
        stderr,
        listener,
        spec.load,
        spec.start_timeout,
        commands_rx,
        events,
    ));
    Ok(Handle { commands })
}

/// Makes the Worker's socket and starts its sandboxed process.
fn start(spec: &Spawn<'_>, run_dir: &Path) -> anyhow::Result<(Child, UnixListener)> {
    let _ = std::fs::remove_dir_all(run_dir);
    std::fs::create_dir_all(run_dir)?;
    // Traversable but not listable by the Worker's user; writable by nobody
    // else (the sandbox binds it read-only anyway).
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o711))?;
    let socket = run_dir.join("worker.sock");
    let listener = UnixListener::bind(&socket)?;
    let uid = spec.isolation.worker_uid();
    std::os::unix::fs::chown(&socket, Some(uid), Some(uid))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    let files = WorkerFiles {
        executable: spec.executable,
        doee: spec.doee,
        run_dir,
        memory_mb: spec.load.limits.memory_mb,
    };
    let mut launch = spec.isolation.command(&files)?;
    launch
        .command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = launch.spawn(spec.cgroup.as_ref())?;
    Ok((child, listener))
}

/// How a Worker's link ended.
enum Ending {
    /// The Admin asked for the Worker to be killed.
    Killed,
    /// The Executor closed its end or exited.
    Closed,
    /// Something went wrong on our side of the link.
    Failed(String),
}

struct WorkerTask {
    id: WorkerId,
    run_dir: PathBuf,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    limits: zmtp::Limits,
    memory_mb: u32,
    cgroup: Option<WorkerGroup>,
}

/// What the Worker may send next, by what it was sent.
#[derive(Default)]
struct Expect {
    ready: bool,
    /// Tasks sent and not yet `Done` (the running one and one sent ahead).
    tasks: u8,
    /// A platform call waits for its answer.
    call: bool,
}

impl Expect {
    fn sent(&mut self, message: &ToWorker) {
        match message {
            ToWorker::Execute(_) => self.tasks = self.tasks.saturating_add(1),
            ToWorker::HostReply(_) => self.call = false,
            ToWorker::Load(_) | ToWorker::Stop => {}
        }
    }

    /// Checks a message from the Worker against what it may say now.
    fn received(&mut self, message: &FromWorker) -> Result<(), &'static str> {
        match message {
            FromWorker::Ready | FromWorker::LoadFailed(_) if self.ready => {
                Err("it said it was loaded twice")
            }
            FromWorker::Ready | FromWorker::LoadFailed(_) => {
                self.ready = true;
                Ok(())
            }
            FromWorker::HostCall(_) if self.call => {
                Err("it made a platform call before its last one was answered")
            }
            FromWorker::HostCall(_) => {
                self.call = true;
                Ok(())
            }
            FromWorker::Done(_) if self.tasks == 0 || self.call => {
                Err("it finished a task it was not running")
            }
            FromWorker::Done(_) => {
                self.tasks -= 1;
                Ok(())
            }
        }
    }
}

impl WorkerTask {
    #[allow(clippy::too_many_arguments)]
    async fn run(
        self,
        mut child: Child,
        stderr: Option<tokio::process::ChildStderr>,
        listener: UnixListener,
        load: Load,
        start_timeout: Duration,
        mut commands: mpsc::UnboundedReceiver<Command>,
        events: mpsc::UnboundedSender<(WorkerId, Event)>,
    ) {
        if let Some(stderr) = stderr {
            tokio::spawn(read_stderr(stderr, self.id, self.stderr_tail.clone()));
        }
        let ending = self
            .serve(
                &mut child,
                listener,
                load,
                start_timeout,
                &mut commands,
                &events,
            )
            .await;
        let why = match ending {
            Ending::Closed => {
                // The Executor went away by itself: give the sandbox a moment
                // to report how (a signal, an exit code) before killing it.
                if tokio::time::timeout(Duration::from_secs(2), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.start_kill();
                }
                None
            }
            Ending::Killed => {
                let _ = child.start_kill();
                None
            }
            Ending::Failed(why) => {
                let _ = child.start_kill();
                Some(why)
            }
        };
        let status = child.wait().await;
        // Let the stderr reader catch the last lines.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let reason = match (why, status) {
            (Some(why), _) => why,
            (None, Ok(status)) => self.describe(status),
            (None, Err(err)) => format!("cannot wait for the Worker: {err}"),
        };
        let _ = std::fs::remove_dir_all(&self.run_dir);
        if let Some(group) = self.cgroup {
            // Kills whatever escaped the sandbox's end, which may take a moment.
            let _ = tokio::task::spawn_blocking(move || group.remove()).await;
        }
        let _ = events.send((self.id, Event::Exited(reason)));
    }

    /// Runs until the Worker ends.
    async fn serve(
        &self,
        child: &mut Child,
        listener: UnixListener,
        load: Load,
        start_timeout: Duration,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        events: &mpsc::UnboundedSender<(WorkerId, Event)>,
    ) -> Ending {
        let stream = tokio::select! {
            accepted = tokio::time::timeout(start_timeout, listener.accept()) => match accepted {
                Ok(Ok((stream, _))) => stream,
                Ok(Err(err)) => return Ending::Failed(format!("cannot accept the Worker: {err}")),
                Err(_) => return Ending::Failed(format!("the Worker did not connect within {start_timeout:?}")),
            },
            status = child.wait() => return match status {
                Ok(status) => Ending::Failed(format!("the Worker failed to start: {}", self.describe(status))),
                Err(err) => Ending::Failed(format!("the Worker failed to start: {err}")),
            },
            command = commands.recv() => match command {
                Some(Command::Kill) | None => return Ending::Failed("stopped before it started".into()),
                Some(Command::Send(_)) => return Ending::Failed("a message arrived before the Worker started".into()),
            },
        };
        drop(listener);
        if let Err(why) = check_peer(&stream, child.id()) {
            return Ending::Failed(why);
        }
        let mut link = match AsyncLink::handshake(stream, self.limits).await {
            Ok(link) => link,
            Err(err) => return Ending::Failed(format!("the Worker's handshake failed: {err}")),
        };
        if let Err(err) = send(&mut link, &ToWorker::Load(load)).await {
            return Ending::Failed(err);
        }
        let mut expect = Expect::default();
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Send(message)) => {
                        expect.sent(&message);
                        if let Err(err) = send(&mut link, &message).await {
                            return Ending::Failed(err);
                        }
                    }
                    Some(Command::Kill) | None => return Ending::Killed,
                },
                received = link.recv() => match received {
                    Ok(frames) => match decode(&frames) {
                        Ok(message) => {
                            if let Err(why) = expect.received(&message) {
                                return Ending::Failed(format!("the Worker broke the protocol: {why}"));
                            }
                            let _ = events.send((self.id, Event::Message(message)));
                        }
                        Err(err) => return Ending::Failed(format!("the Worker broke the protocol: {err}")),
                    },
                    // The Worker closed its end: its exit status tells why.
                    Err(zmtp::LinkError::Io(_)) => return Ending::Closed,
                    Err(err) => return Ending::Failed(format!("the Worker broke the protocol: {err}")),
                },
                _ = child.wait() => return Ending::Closed,
            }
        }
    }

    fn describe(&self, status: ExitStatus) -> String {
        // bwrap reports a sandboxed process killed by signal N as 128 + N.
        let signal = status.signal().or_else(|| {
            status
                .code()
                .filter(|c| (129..160).contains(c))
                .map(|c| c - 128)
        });
        let out_of_memory = self.cgroup.as_ref().is_some_and(WorkerGroup::out_of_memory);
        let mut text = match (signal, status.code()) {
            (Some(libc::SIGKILL), _) if out_of_memory => format!(
                "killed for running out of memory: its processes together used all of \
                 memory_mb = {} (and the Worker's own {WORKER_OVERHEAD_MB} MiB)",
                self.memory_mb
            ),
            (Some(signal), _) => format!("killed by {}", signal_name(signal)),
            (None, Some(0)) => "exited".to_string(),
            (None, Some(code)) => format!("exited with code {code}"),
            (None, None) => "ended".to_string(),
        };
        // The last line that says something: not Rust's backtrace hint.
        let last = self.stderr_tail.lock().ok().and_then(|tail| {
            tail.iter()
                .rev()
                .find(|l| !l.trim().is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
                .cloned()
        });
        if let Some(last) = last {
            text.push_str(": ");
            text.push_str(last.trim());
        }
        text
    }
}

/// Keeps the last lines of a Worker's stderr, each cut to [`STDERR_LINE`]
/// characters, however long the Worker makes them.
async fn read_stderr(
    mut stderr: tokio::process::ChildStderr,
    id: WorkerId,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut chunk = [0u8; 8192];
    let mut line: Vec<u8> = Vec::with_capacity(STDERR_LINE);
    let finish = |line: &mut Vec<u8>| {
        let text: String = String::from_utf8_lossy(line)
            .chars()
            .take(STDERR_LINE)
            .collect();
        line.clear();
        tracing::debug!(worker = id, "{text}");
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == STDERR_LINES {
                tail.pop_front();
            }
            tail.push_back(text);
        }
    };
    while let Ok(read) = stderr.read(&mut chunk).await {
        if read == 0 {
            break;
        }
        for &byte in &chunk[..read] {
            if byte == b'\n' {
                finish(&mut line);
            } else if line.len() < STDERR_LINE * 4 {
                // Bytes, not characters: room for multi-byte ones.
                line.push(byte);
            }
        }
    }
    if !line.is_empty() {
        finish(&mut line);
    }
}

async fn send(
    link: &mut AsyncLink<tokio::net::UnixStream>,
    message: &ToWorker,
) -> Result<(), String> {
    let frame = message.encode().map_err(|e| e.to_string())?;
    link.send(&[&frame])
        .await
        .map_err(|e| format!("cannot reach the Worker: {e}"))
}

fn decode(frames: &[bytes::Bytes]) -> Result<FromWorker, String> {
    let [frame] = frames else {
        return Err(format!("expected one frame, got {}", frames.len()));
    };
    FromWorker::decode(frame).map_err(|e| e.to_string())
}

/// Refuses a connection from anything but a descendant of the Worker's own
/// process: the socket directory is reachable by the Workers' uid, so
/// another process of that uid could otherwise pose as the Worker.
fn check_peer(stream: &tokio::net::UnixStream, child: Option<u32>) -> Result<(), String> {
    let refused = |why: &str| {
        Err(format!(
            "refused a connection to the Worker's socket: {why}"
        ))
    };
    let Some(child) = child else {
        return refused("the Worker's process is gone");
    };
    let Some(mut pid) = stream.peer_cred().ok().and_then(|cred| cred.pid()) else {
        return refused("the peer's process is unknown");
    };
    // Sandboxes add a process or two between our child and the Executor.
    for _ in 0..6 {
        if pid as u32 == child {
            return Ok(());
        }
        match parent_of(pid) {
            Some(parent) if parent > 1 => pid = parent,
            _ => break,
        }
    }
    refused("it does not come from the Worker's process")
}

/// The parent of a process, from `/proc/<pid>/stat`.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid …", where comm may hold spaces and parentheses.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(1)?.parse().ok()
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV (segmentation fault)",
        libc::SIGABRT => "SIGABRT (aborted)",
        libc::SIGKILL => "SIGKILL",
        libc::SIGBUS => "SIGBUS (bus error)",
        libc::SIGFPE => "SIGFPE (arithmetic error)",
        libc::SIGILL => "SIGILL (illegal instruction)",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU (CPU limit)",
        libc::SIGSYS => "SIGSYS (forbidden system call)",
        other => return format!("signal {other}"),
    };
    name.to_string()
}
