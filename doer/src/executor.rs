//! The Doee Executor: the daemon inside each Worker.
//!
//! It connects to the Doer over the Worker's ZeroMQ socket, receives the
//! `Load` message, applies the Worker's limits and the seccomp filter to
//! itself, and only then loads the Doee's shared object: no Doee code (not
//! even its constructors) runs before they hold. It then calls `initialize`
//! once, `execute` per invocation and `terminate` before it stops. In a
//! sandbox with a pid namespace of its own, whatever the Doee started dies
//! when `initialize` or an invocation returns: nothing runs between
//! invocations but the Executor.
//!
//! Single-threaded and blocking on purpose: a Worker runs one invocation at a
//! time, a Doee's calls to the platform block on the same link, and no
//! runtime threads count against the Worker's memory and process limits.
//!
//! Why one file of this size: it is the whole program that runs inside a
//! Worker, read top to bottom in the order it runs (connect, limit itself,
//! load, serve); splitting it would scatter that order.

use bytes::Bytes;
use doee_sdk::abi::{self, Ctx, HostApi};
use isms_ipc::doer::{LogLevel, LogLine, Response, Trigger};
use isms_ipc::names::now_ms;
use isms_ipc::worker::{Done, FromWorker, HostCall, Limits, Load, ToWorker};
use isms_ipc::zmtp::{self, BlockingLink};
use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::os::unix::net::UnixStream;
use std::path::Path;

type AbiVersionFn = unsafe extern "C" fn() -> u32;
type InitializeFn = unsafe extern "C" fn(*mut Ctx) -> c_int;
type ExecuteFn = unsafe extern "C" fn(*mut Ctx, *const u8, usize) -> c_int;
type TerminateFn = unsafe extern "C" fn(*mut Ctx);

/// What the Executor accepts from the Doer in one message.
const LINK_LIMITS: zmtp::Limits = zmtp::Limits {
    max_message: 64 << 20,
    max_frames: 4,
};

/// A log line longer than this is cut.
const MAX_LOG_LINE: usize = 4096;

/// Runs the Executor until the Doer stops it; returns the process exit code.
pub fn run(socket: &Path, doee: &Path) -> i32 {
    match serve(socket, doee) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("isms executor: {err}");
            1
        }
    }
}

type Link = BlockingLink<UnixStream>;

fn send(link: &mut Link, message: &FromWorker) -> Result<(), String> {
    let frame = message.encode().map_err(|e| e.to_string())?;
    link.send(&[&frame])
        .map_err(|e| format!("lost the Doer: {e}"))
}

fn recv(link: &mut Link) -> Result<ToWorker, String> {
    let frames = link.recv().map_err(|e| format!("lost the Doer: {e}"))?;
    let [frame] = &frames[..] else {
        return Err(format!("expected one frame, got {}", frames.len()));
    };
    ToWorker::decode(frame).map_err(|e| e.to_string())
}

fn serve(socket: &Path, doee: &Path) -> Result<(), String> {
    let stream = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    let mut link = BlockingLink::handshake(stream, LINK_LIMITS).map_err(|e| e.to_string())?;
    let ToWorker::Load(load) = recv(&mut link)? else {
        return Err("the first message was not Load".into());
    };
    // From here on, `link` is reached through `host` (host calls use it from
    // inside the Doee), so this function stops touching it directly.
    let mut host = Host::new(&load, link);
    match Loaded::open(doee, &load, &mut host) {
        Ok(loaded) => {
            host.send(&FromWorker::Ready)?;
            loaded.serve(&mut host)
        }
        Err(why) => {
            host.send(&FromWorker::LoadFailed(why.clone()))?;
            Err(why)
        }
    }
}

/// The loaded Doee's entry points. The library stays loaded for the life of
/// the process.
struct Loaded {
    _library: libloading::Library,
    execute: ExecuteFn,
    terminate: TerminateFn,
    /// Whether to kill the Doee's other processes when a call returns.
    reap: bool,
}

impl Loaded {
    fn open(path: &Path, load: &Load, host: &mut Host) -> Result<Loaded, String> {
        apply_limits(&load.limits)?;
        crate::seccomp::apply()?;
        // SAFETY: loading runs the library's constructors; that is the Doee's
        // code, which is why it happens only after the limits are in place.
        let library = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("cannot load the Doee: {e}"))?;
        // SAFETY: the symbols are looked up with the ABI's signatures.
        let (initialize, execute, terminate) = unsafe {
            let version: AbiVersionFn = *library
                .get::<AbiVersionFn>(abi::SYMBOL_ABI_VERSION)
                .map_err(|_| {
                    "the shared object is not a Doee: it exports no isms_doee_abi_version"
                        .to_string()
                })?;
            let found = version();
            if found != abi::ABI_VERSION {
                return Err(format!(
                    "the Doee was built for ABI version {found}, but this Executor speaks version {}: rebuild it with this platform's SDK",
                    abi::ABI_VERSION
                ));
            }
            let symbol =
                |name: &[u8]| String::from_utf8_lossy(&name[..name.len() - 1]).into_owned();
            let initialize: InitializeFn = *library
                .get::<InitializeFn>(abi::SYMBOL_INITIALIZE)
                .map_err(|_| {
                    format!(
                        "the Doee does not export {}",
                        symbol(abi::SYMBOL_INITIALIZE)
                    )
                })?;
            let execute: ExecuteFn = *library
                .get::<ExecuteFn>(abi::SYMBOL_EXECUTE)
                .map_err(|_| format!("the Doee does not export {}", symbol(abi::SYMBOL_EXECUTE)))?;
            let terminate: TerminateFn = *library
                .get::<TerminateFn>(abi::SYMBOL_TERMINATE)
                .map_err(|_| {
                    format!("the Doee does not export {}", symbol(abi::SYMBOL_TERMINATE))
                })?;
            (initialize, execute, terminate)
        };
        host.begin(None);
        // SAFETY: a live context for the duration of the call.
        let code = unsafe { initialize(host.ctx()) };
        if load.own_pid_namespace {
            kill_the_rest();
        }
        if code != abi::OK {
            let why = host
                .error
                .take()
                .unwrap_or_else(|| format!("initialize returned {code}"));
            return Err(format!("initialize failed: {why}"));
        }
        Ok(Loaded {
            _library: library,
            execute,
            terminate,
            reap: load.own_pid_namespace,
        })
    }

    fn serve(self, host: &mut Host) -> Result<(), String> {
        loop {
            match host.recv()? {
                ToWorker::Execute(execute) => {
                    host.begin(Some((&execute.id.to_string(), &execute.trigger)));
                    host.stream = execute.stream;
                    // SAFETY: a live context and an input slice alive for the call.
                    let code = unsafe {
                        (self.execute)(host.ctx(), execute.input.as_ptr(), execute.input.len())
                    };
                    if self.reap {
                        kill_the_rest();
                    }
                    let done = host.finish(code);
                    let panicked = done.panicked;
                    host.send(&FromWorker::Done(done))?;
                    if panicked {
                        // The Doee's state can no longer be trusted.
                        return Ok(());
                    }
                }
                ToWorker::Stop => {
                    host.begin(None);
                    // SAFETY: a live context.
                    unsafe { (self.terminate)(host.ctx()) };
                    return Ok(());
                }
                ToWorker::Load(_) | ToWorker::HostReply(_) => {}
            }
        }
    }
}

/// Kills every process of the Worker's pid namespace but the Executor and
/// the sandbox's init (`kill(-1)` spares both), and reaps the Executor's own
/// children that are already gone.
fn kill_the_rest() {
    // SAFETY: kill and waitpid with no memory involved.
    unsafe {
        libc::kill(-1, libc::SIGKILL);
        while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
    }
}

fn apply_limits(limits: &Limits) -> Result<(), String> {
    let set = |resource, value: u64, what: &str| -> Result<(), String> {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit with a valid struct.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(format!(
                "cannot limit {what}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    };
    set(
        libc::RLIMIT_DATA,
        u64::from(limits.memory_mb) << 20,
        "memory",
    )?;
    set(
        libc::RLIMIT_NPROC,
        u64::from(limits.max_processes),
        "processes",
    )?;
    set(
        libc::RLIMIT_NOFILE,
        u64::from(limits.max_open_files),
        "open files",
    )?;
    set(libc::RLIMIT_CORE, 0, "core dumps")?;
    Ok(())
}

/// The host side of the ABI: what the Doee's context points to.
#[repr(C)]
struct Host {
    // Must stay first: the Doee gets `*mut Ctx`, cast back to `*mut Host`.
    ctx: Ctx,
    link: Link,
    params: HashMap<CString, CString>,
    meta: Meta,
    output: Vec<u8>,
    output_overflow: bool,
    /// Whether `write` sends its pieces now (else they join `output`).
    stream: bool,
    /// Bytes sent by `write` in this invocation, against `max_output`.
    written: usize,
    status: Option<u16>,
    headers: Vec<(String, String)>,
    logs: Vec<LogLine>,
    error: Option<String>,
    last_error: CString,
    /// A task the Doer sent ahead while the Doee waited for a platform
    /// call (it starts the moment the current one ends).
    next: Option<ToWorker>,
    max_output: usize,
    max_logs: usize,
}

static HOST_API: HostApi = HostApi {
    abi_version: abi::ABI_VERSION,
    size: size_of::<HostApi>() as u32,
    param: host_param,
    meta: host_meta,
    output: host_output,
    set_status: host_set_status,
    set_header: host_set_header,
    error: host_error,
    log: host_log,
    sql: host_sql,
    doc: host_doc,
    publish: host_publish,
    last_error: host_last_error,
    free: host_free,
    secret: host_secret,
    invoke: host_invoke,
    write: host_write,
};

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

impl Host {
    fn new(load: &Load, link: Link) -> Host {
        Host {
            ctx: Ctx { api: &HOST_API },
            link,
            params: load
                .params
                .iter()
                .map(|(k, v)| (cstring(k), cstring(v)))
                .collect(),
            meta: Meta::new(load),
            output: Vec::new(),
            output_overflow: false,
            stream: false,
            written: 0,
            status: None,
            headers: Vec::new(),
            logs: Vec::new(),
            error: None,
            last_error: CString::default(),
            next: None,
            max_output: load.limits.max_output_bytes as usize,
            max_logs: load.limits.max_log_lines as usize,
        }
    }

    fn ctx(&mut self) -> *mut Ctx {
        (self as *mut Host).cast()
    }

    fn send(&mut self, message: &FromWorker) -> Result<(), String> {
        send(&mut self.link, message)
    }

    fn recv(&mut self) -> Result<ToWorker, String> {
        match self.next.take() {
            Some(next) => Ok(next),
            None => recv(&mut self.link),
        }
    }

    /// Resets per-invocation state; `invocation` is None outside `execute`.
    fn begin(&mut self, invocation: Option<(&str, &Trigger)>) {
        self.output.clear();
        self.output_overflow = false;
        self.stream = false;
        self.written = 0;
        self.status = None;
        self.headers.clear();
        self.logs.clear();
        self.error = None;
        self.meta.begin(invocation);
    }

    fn finish(&mut self, code: c_int) -> Done {
        let logs = std::mem::take(&mut self.logs);
        let result = if self.output_overflow {
            Err(format!(
                "the output is larger than {} bytes",
                self.max_output
            ))
        } else if code == abi::OK {
            Ok(Response {
                status: self.status,
                headers: std::mem::take(&mut self.headers),
                body: Bytes::from(std::mem::take(&mut self.output)),
            })
        } else {
            Err(self
                .error
                .take()
                .unwrap_or_else(|| format!("the Doee failed (code {code})")))
        };
        Done {
            result,
            panicked: code == abi::PANICKED,
            logs,
        }
    }

    /// Forwards a Doee's request to the platform and waits for the answer.
    fn host_call(&mut self, call: HostCall) -> Result<Bytes, String> {
        self.send(&FromWorker::HostCall(call))?;
        loop {
            match recv(&mut self.link)? {
                ToWorker::HostReply(result) => return result,
                // The Doer wants the Worker gone, even mid-call.
                ToWorker::Stop => std::process::exit(0),
                // The next task, sent ahead: it waits its turn. The Doer
                // sends at most one ahead.
                execute @ ToWorker::Execute(_) if self.next.is_none() => {
                    self.next = Some(execute);
                }
                ToWorker::Load(_) | ToWorker::Execute(_) => {
                    return Err("the Doer sent a second task during a platform call".into());
                }
            }
        }
    }
}

/// The facts `meta()` answers, in NUL-terminated buffers reused from one
/// invocation to the next, so an invocation allocates nothing for them.
struct Meta {
    values: [Vec<u8>; Meta::KEYS.len()],
    set: [bool; Meta::KEYS.len()],
}

impl Meta {
    const KEYS: [&'static str; 11] = [
        "project",
        "doee",
        "version",
        "invocation_id",
        "trigger",
        "method",
        "path",
        "query",
        "topic",
        "scheduled",
        "parent",
    ];
    /// Keys before this index hold for the Worker's whole life.
    const FIXED: usize = 3;

    fn new(load: &Load) -> Meta {
        let mut meta = Meta {
            values: Default::default(),
            set: [false; Meta::KEYS.len()],
        };
        meta.put(0, load.project.as_str());
        meta.put(1, load.doee.as_str());
        meta.put(2, &load.version.to_string());
        meta
    }

    fn put(&mut self, index: usize, value: &str) {
        let buffer = &mut self.values[index];
        buffer.clear();
        // C strings end at the first NUL.
        buffer.extend(value.bytes().take_while(|&b| b != 0));
        buffer.push(0);
        self.set[index] = true;
    }

    fn begin(&mut self, invocation: Option<(&str, &Trigger)>) {
        self.set[Meta::FIXED..].fill(false);
        let Some((id, trigger)) = invocation else {
            return;
        };
        self.put(3, id);
        self.put(4, trigger.as_str());
        match trigger {
            Trigger::Http {
                method,
                path,
                query,
            } => {
                self.put(5, method);
                self.put(6, path);
                self.put(7, query);
            }
            Trigger::Mqtt { topic } => self.put(8, topic),
            Trigger::Schedule { slot_ms } => self.put(9, &slot_ms.to_string()),
            Trigger::Chain { parent, .. } => self.put(10, &parent.to_string()),
            Trigger::Cli => {}
        }
    }

    /// The NUL-terminated value of `key`, if set for this invocation.
    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let index = Meta::KEYS.iter().position(|k| k.as_bytes() == key)?;
        self.set[index].then(|| self.values[index].as_slice())
    }
}

/// # Safety
/// `ctx` is the context the Executor passed to the Doee.
unsafe fn host<'a>(ctx: *mut Ctx) -> &'a mut Host {
    // SAFETY: the Host is repr(C) with the Ctx first, alive across the call.
    unsafe { &mut *ctx.cast::<Host>() }
}

/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn text<'a>(p: *const c_char) -> &'a str {
    if p.is_null() {
        return "";
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("")
}

unsafe extern "C" fn host_param(ctx: *mut Ctx, name: *const c_char) -> *const c_char {
    if name.is_null() {
        return std::ptr::null();
    }
    // SAFETY: ABI contract.
    let (host, name) = unsafe { (host(ctx), CStr::from_ptr(name)) };
    host.params
        .get(name)
        .map_or(std::ptr::null(), |v| v.as_ptr())
}

unsafe extern "C" fn host_meta(ctx: *mut Ctx, key: *const c_char) -> *const c_char {
    if key.is_null() {
        return std::ptr::null();
    }
    // SAFETY: ABI contract.
    let (host, key) = unsafe { (host(ctx), CStr::from_ptr(key)) };
    host.meta
        .get(key.to_bytes())
        .map_or(std::ptr::null(), <[u8]>::as_ptr)
        .cast()
}

unsafe extern "C" fn host_output(ctx: *mut Ctx, data: *const u8, len: usize) {
    // SAFETY: ABI contract.
    let host = unsafe { host(ctx) };
    if len == 0 || data.is_null() {
        return;
    }
    if host.written + host.output.len() + len > host.max_output {
        host.output_overflow = true;
        return;
    }
    // SAFETY: ABI contract: `data` points to `len` bytes.
    host.output
        .extend_from_slice(unsafe { std::slice::from_raw_parts(data, len) });
}

/// `ctx.write`: a piece of the output, sent now when the invocation is
/// streamed (waiting while the reader is behind), else kept as output.
unsafe extern "C" fn host_write(ctx: *mut Ctx, data: *const u8, len: usize) -> c_int {
    // SAFETY: ABI contract.
    let host = unsafe { host(ctx) };
    if len == 0 || data.is_null() {
        return abi::OK;
    }
    if host.written + host.output.len() + len > host.max_output {
        host.output_overflow = true;
        host.last_error = cstring(&format!(
            "the output is larger than {} bytes",
            host.max_output
        ));
        return abi::FAILED;
    }
    // SAFETY: ABI contract: `data` points to `len` bytes.
    let piece = unsafe { std::slice::from_raw_parts(data, len) };
    if !host.stream {
        host.output.extend_from_slice(piece);
        return abi::OK;
    }
    host.written += len;
    let result = host.host_call(HostCall::Write(Bytes::copy_from_slice(piece)));
    finish_call(host, result, std::ptr::null_mut())
}

unsafe extern "C" fn host_set_status(ctx: *mut Ctx, status: u16) {
    // SAFETY: ABI contract.
    unsafe { host(ctx) }.status = Some(status);
}

unsafe extern "C" fn host_set_header(ctx: *mut Ctx, name: *const c_char, value: *const c_char) {
    // SAFETY: ABI contract.
    let (host, name, value) = unsafe { (host(ctx), text(name), text(value)) };
    if host.headers.len() < 64 {
        host.headers.push((name.to_string(), value.to_string()));
    }
}

unsafe extern "C" fn host_error(ctx: *mut Ctx, message: *const c_char) {
    // SAFETY: ABI contract.
    let (host, message) = unsafe { (host(ctx), text(message)) };
    host.error = Some(truncate(message, MAX_LOG_LINE));
}

unsafe extern "C" fn host_log(ctx: *mut Ctx, level: c_int, message: *const c_char) {
    // SAFETY: ABI contract.
    let (host, message) = unsafe { (host(ctx), text(message)) };
    if host.logs.len() >= host.max_logs {
        return;
    }
    let level = match level {
        abi::level::ERROR => LogLevel::Error,
        abi::level::WARN => LogLevel::Warn,
        abi::level::DEBUG => LogLevel::Debug,
        _ => LogLevel::Info,
    };
    host.logs.push(LogLine {
        at_ms: now_ms(),
        level,
        message: truncate(message, MAX_LOG_LINE),
    });
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn finish_call(host: &mut Host, result: Result<Bytes, String>, out: *mut *mut c_char) -> c_int {
    match result {
        Ok(value) => {
            if !out.is_null() {
                // SAFETY: `out` is the Doee's valid out pointer.
                unsafe { *out = malloc_copy(&value).cast() };
            }
            abi::OK
        }
        Err(message) => {
            if !out.is_null() {
                // SAFETY: as above.
                unsafe { *out = std::ptr::null_mut() };
            }
            host.last_error = cstring(&message);
            abi::FAILED
        }
    }
}

unsafe extern "C" fn host_sql(
    ctx: *mut Ctx,
    query: *const c_char,
    params: *const c_char,
    out: *mut *mut c_char,
) -> c_int {
    // SAFETY: ABI contract.
    let (host, query, params) = unsafe { (host(ctx), text(query), text(params)) };
    let result = host.host_call(HostCall::Sql {
        query: query.to_string(),
        params: params.to_string(),
    });
    finish_call(host, result, out)
}

unsafe extern "C" fn host_secret(
    ctx: *mut Ctx,
    name: *const c_char,
    out: *mut *mut c_char,
) -> c_int {
    // SAFETY: ABI contract.
    let (host, name) = unsafe { (host(ctx), text(name)) };
    let result = host.host_call(HostCall::Secret {
        name: name.to_string(),
    });
    finish_call(host, result, out)
}

unsafe extern "C" fn host_doc(
    ctx: *mut Ctx,
    op: *const c_char,
    collection: *const c_char,
    json: *const c_char,
    out: *mut *mut c_char,
) -> c_int {
    // SAFETY: ABI contract.
    let (host, op, collection, json) =
        unsafe { (host(ctx), text(op), text(collection), text(json)) };
    let result = op.parse().and_then(|op| {
        host.host_call(HostCall::Doc {
            op,
            collection: collection.to_string(),
            json: json.to_string(),
        })
    });
    finish_call(host, result, out)
}

unsafe extern "C" fn host_publish(
    ctx: *mut Ctx,
    topic: *const c_char,
    data: *const u8,
    len: usize,
) -> c_int {
    // SAFETY: ABI contract.
    let (host, topic) = unsafe { (host(ctx), text(topic)) };
    let payload = if len == 0 || data.is_null() {
        Bytes::new()
    } else {
        // SAFETY: ABI contract.
        Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(data, len) })
    };
    let result = host.host_call(HostCall::Publish {
        topic: topic.to_string(),
        payload,
    });
    finish_call(host, result, std::ptr::null_mut())
}

unsafe extern "C" fn host_last_error(ctx: *mut Ctx) -> *const c_char {
    // SAFETY: ABI contract.
    unsafe { host(ctx) }.last_error.as_ptr()
}

/// `bytes` in a buffer of the C heap with a NUL after them (text results
/// are C strings; an invoke's output may hold NULs and comes with its
/// length), which the Doee releases with `isms_free`.
fn malloc_copy(bytes: &[u8]) -> *mut u8 {
    // SAFETY: a fresh allocation of len + 1 bytes, filled before use.
    unsafe {
        let p = libc::malloc(bytes.len() + 1).cast::<u8>();
        if p.is_null() {
            std::process::abort();
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        *p.add(bytes.len()) = 0;
        p
    }
}

unsafe extern "C" fn host_free(_ctx: *mut Ctx, p: *mut c_void) {
    // SAFETY: every buffer the host hands out comes from malloc_copy.
    unsafe { libc::free(p) };
}

unsafe extern "C" fn host_invoke(
    ctx: *mut Ctx,
    doee: *const c_char,
    data: *const u8,
    len: usize,
    out: *mut *mut u8,
    out_len: *mut usize,
) -> c_int {
    // SAFETY: ABI contract.
    let (host, doee) = unsafe { (host(ctx), text(doee)) };
    let input = if len == 0 || data.is_null() {
        Bytes::new()
    } else {
        // SAFETY: ABI contract.
        Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(data, len) })
    };
    let result = host.host_call(HostCall::Invoke {
        doee: doee.to_string(),
        input,
    });
    let length = result.as_ref().map_or(0, Bytes::len);
    let code = finish_call(host, result, out.cast());
    if !out_len.is_null() {
        // SAFETY: the Doee's valid out pointer.
        unsafe { *out_len = length };
    }
    code
}
