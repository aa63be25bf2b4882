//! Run a Doee in a unit test, against a fake host.
//!
//! ```
//! use doee_sdk::{testing::TestContext, Context, Doee, Error};
//!
//! #[derive(Default)]
//! struct Echo;
//! impl Doee for Echo {
//!     fn execute(&mut self, ctx: &mut Context, input: &[u8]) -> Result<Vec<u8>, Error> {
//!         ctx.set_status(201);
//!         Ok(input.to_vec())
//!     }
//! }
//!
//! let mut host = TestContext::new().param("greeting", "hi");
//! let mut doee = Echo::default();
//! host.initialize(&mut doee).unwrap();
//! assert_eq!(host.execute(&mut doee, b"ping").unwrap(), b"ping");
//! assert_eq!(host.status(), Some(201));
//! ```
//!
//! The fake host implements the same [`abi::HostApi`] table as the Executor,
//! so the [`Context`] methods run exactly the code they run on the platform.
//! SQL, documents and publishing answer through handlers you install with
//! [`TestContext::on_sql`], [`TestContext::on_doc`] and
//! [`TestContext::on_publish`]; without one they fail with a clear message.

use crate::{Context, Doee, Error, Level, abi};
use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int, c_void};

type SqlHandler = Box<dyn FnMut(&str, &str) -> Result<String, String>>;
type DocHandler = Box<dyn FnMut(&str, &str, &str) -> Result<String, String>>;
type PublishHandler = Box<dyn FnMut(&str, &[u8]) -> Result<(), String>>;
type InvokeHandler = Box<dyn FnMut(&str, &[u8]) -> Result<Vec<u8>, String>>;

/// A fake host for one Doee, recording what the Doee did.
pub struct TestContext {
    host: Box<Host>,
}

#[repr(C)]
struct Host {
    // Must stay first: the ABI hands out `*mut Ctx`, which is cast back to `*mut Host`.
    ctx: abi::Ctx,
    params: HashMap<CString, CString>,
    meta: HashMap<CString, CString>,
    output: Vec<u8>,
    status: Option<u16>,
    headers: Vec<(String, String)>,
    logs: Vec<(Level, String)>,
    error: Option<String>,
    last_error: CString,
    sql: Option<SqlHandler>,
    doc: Option<DocHandler>,
    publish: Option<PublishHandler>,
    invoke: Option<InvokeHandler>,
    /// Pieces written with `write`, in order.
    written: Vec<Vec<u8>>,
    secrets: HashMap<String, String>,
    /// Outputs of `invoke` handed to the Doee, by address, until freed.
    buffers: HashMap<usize, Vec<u8>>,
}

static TEST_API: abi::HostApi = abi::HostApi {
    abi_version: abi::ABI_VERSION,
    size: size_of::<abi::HostApi>() as u32,
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

impl Default for TestContext {
    fn default() -> Self {
        Self::new()
    }
}

impl TestContext {
    /// A host with no parameters, `trigger` = `http` and `method` = `POST`.
    pub fn new() -> Self {
        let host = Box::new(Host {
            ctx: abi::Ctx { api: &TEST_API },
            params: HashMap::new(),
            meta: HashMap::new(),
            output: Vec::new(),
            status: None,
            headers: Vec::new(),
            logs: Vec::new(),
            error: None,
            last_error: CString::default(),
            sql: None,
            doc: None,
            publish: None,
            invoke: None,
            written: Vec::new(),
            secrets: HashMap::new(),
            buffers: HashMap::new(),
        });
        TestContext { host }
            .meta("trigger", "http")
            .meta("method", "POST")
    }

    /// Sets a manifest parameter.
    pub fn param(mut self, name: &str, value: &str) -> Self {
        self.host.params.insert(cstring(name), cstring(value));
        self
    }

    /// Sets a project secret seen through [`Context::secret`].
    pub fn secret(mut self, name: &str, value: &str) -> Self {
        self.host
            .secrets
            .insert(name.to_string(), value.to_string());
        self
    }

    /// Sets an invocation fact seen through [`Context::meta`].
    pub fn meta(mut self, key: &str, value: &str) -> Self {
        self.host.meta.insert(cstring(key), cstring(value));
        self
    }

    /// Answers [`Context::sql`] with `handler(query, params_json)`.
    pub fn on_sql(
        mut self,
        handler: impl FnMut(&str, &str) -> Result<String, String> + 'static,
    ) -> Self {
        self.host.sql = Some(Box::new(handler));
        self
    }

    /// Answers [`Context::invoke`] with `handler(doee, input)`: the callee's
    /// output, or its error.
    pub fn on_invoke(
        mut self,
        handler: impl FnMut(&str, &[u8]) -> Result<Vec<u8>, String> + 'static,
    ) -> Self {
        self.host.invoke = Some(Box::new(handler));
        self
    }

    /// Answers document calls with `handler(op, collection, json)`.
    pub fn on_doc(
        mut self,
        handler: impl FnMut(&str, &str, &str) -> Result<String, String> + 'static,
    ) -> Self {
        self.host.doc = Some(Box::new(handler));
        self
    }

    /// Answers [`Context::publish`] with `handler(topic, payload)`.
    pub fn on_publish(
        mut self,
        handler: impl FnMut(&str, &[u8]) -> Result<(), String> + 'static,
    ) -> Self {
        self.host.publish = Some(Box::new(handler));
        self
    }

    fn context(&mut self) -> Context {
        let raw: *mut Host = &mut *self.host;
        // SAFETY: `Host` is `repr(C)` with the `Ctx` first, and lives in a Box
        // that outlives the returned context's use within these methods.
        unsafe { Context::from_raw(raw.cast()) }
    }

    /// Calls [`Doee::initialize`].
    pub fn initialize<D: Doee>(&mut self, doee: &mut D) -> Result<(), Error> {
        let mut ctx = self.context();
        doee.initialize(&mut ctx)
    }

    /// Calls [`Doee::execute`] as one invocation, resetting status, headers
    /// and logs from the previous one.
    pub fn execute<D: Doee>(&mut self, doee: &mut D, input: &[u8]) -> Result<Vec<u8>, Error> {
        self.host.status = None;
        self.host.headers.clear();
        self.host.logs.clear();
        self.host.error = None;
        self.host.output.clear();
        self.host.written.clear();
        let mut ctx = self.context();
        doee.execute(&mut ctx, input)
    }

    /// The pieces the last invocation wrote with [`Context::write`], in
    /// order (on the platform they reach a streaming client before the
    /// output `execute` returns).
    pub fn written(&self) -> &[Vec<u8>] {
        &self.host.written
    }

    /// Calls [`Doee::terminate`].
    pub fn terminate<D: Doee>(&mut self, doee: &mut D) {
        let mut ctx = self.context();
        doee.terminate(&mut ctx);
    }

    /// The status the last invocation set, if it set one.
    pub fn status(&self) -> Option<u16> {
        self.host.status
    }

    /// The headers the last invocation set.
    pub fn headers(&self) -> &[(String, String)] {
        &self.host.headers
    }

    /// The log lines of the last invocation.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.host.logs
    }
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// # Safety
/// `ctx` was handed out by [`TestContext::context`].
unsafe fn host<'a>(ctx: *mut abi::Ctx) -> &'a mut Host {
    // SAFETY: see `TestContext::context`.
    unsafe { &mut *ctx.cast::<Host>() }
}

/// # Safety
/// `p` is a NUL-terminated string.
unsafe fn text<'a>(p: *const c_char) -> &'a str {
    if p.is_null() {
        return "";
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("")
}

fn owned_out(out: *mut *mut c_char, value: String) {
    if !out.is_null() {
        // SAFETY: `out` is the caller's valid, non-null out pointer.
        unsafe { *out = cstring(&value).into_raw() };
    }
}

unsafe extern "C" fn host_param(ctx: *mut abi::Ctx, name: *const c_char) -> *const c_char {
    // SAFETY: ABI contract.
    let (host, name) = unsafe { (host(ctx), CStr::from_ptr(name)) };
    host.params
        .get(name)
        .map_or(std::ptr::null(), |v| v.as_ptr())
}

unsafe extern "C" fn host_meta(ctx: *mut abi::Ctx, key: *const c_char) -> *const c_char {
    // SAFETY: ABI contract.
    let (host, key) = unsafe { (host(ctx), CStr::from_ptr(key)) };
    host.meta.get(key).map_or(std::ptr::null(), |v| v.as_ptr())
}

unsafe extern "C" fn host_output(ctx: *mut abi::Ctx, data: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: ABI contract.
    let (host, data) = unsafe { (host(ctx), std::slice::from_raw_parts(data, len)) };
    host.output.extend_from_slice(data);
}

unsafe extern "C" fn host_write(ctx: *mut abi::Ctx, data: *const u8, len: usize) -> c_int {
    // SAFETY: ABI contract.
    let host = unsafe { host(ctx) };
    let piece = if len == 0 {
        Vec::new()
    } else {
        // SAFETY: ABI contract.
        unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
    };
    host.written.push(piece);
    abi::OK
}

unsafe extern "C" fn host_set_status(ctx: *mut abi::Ctx, status: u16) {
    // SAFETY: ABI contract.
    unsafe { host(ctx) }.status = Some(status);
}

unsafe extern "C" fn host_set_header(
    ctx: *mut abi::Ctx,
    name: *const c_char,
    value: *const c_char,
) {
    // SAFETY: ABI contract.
    let (host, name, value) = unsafe { (host(ctx), text(name), text(value)) };
    host.headers.push((name.to_string(), value.to_string()));
}

unsafe extern "C" fn host_error(ctx: *mut abi::Ctx, message: *const c_char) {
    // SAFETY: ABI contract.
    let (host, message) = unsafe { (host(ctx), text(message)) };
    host.error = Some(message.to_string());
}

unsafe extern "C" fn host_log(ctx: *mut abi::Ctx, level: c_int, message: *const c_char) {
    // SAFETY: ABI contract.
    let (host, message) = unsafe { (host(ctx), text(message)) };
    host.logs
        .push((Level::from_abi(level), message.to_string()));
}

unsafe extern "C" fn host_sql(
    ctx: *mut abi::Ctx,
    query: *const c_char,
    params: *const c_char,
    out: *mut *mut c_char,
) -> c_int {
    // SAFETY: ABI contract.
    let (host, query, params) = unsafe { (host(ctx), text(query), text(params)) };
    let result = match host.sql.as_mut() {
        Some(handler) => handler(query, params),
        None => Err("no SQL handler: use TestContext::on_sql".to_string()),
    };
    finish(host, result, out)
}

unsafe extern "C" fn host_secret(
    ctx: *mut abi::Ctx,
    name: *const c_char,
    out: *mut *mut c_char,
) -> c_int {
    // SAFETY: ABI contract.
    let (host, name) = unsafe { (host(ctx), text(name)) };
    let result = host
        .secrets
        .get(name)
        .cloned()
        .ok_or_else(|| format!("no secret {name}: use TestContext::secret"));
    finish(host, result, out)
}

unsafe extern "C" fn host_doc(
    ctx: *mut abi::Ctx,
    op: *const c_char,
    collection: *const c_char,
    json: *const c_char,
    out: *mut *mut c_char,
) -> c_int {
    // SAFETY: ABI contract.
    let (host, op, collection, json) =
        unsafe { (host(ctx), text(op), text(collection), text(json)) };
    let result = match host.doc.as_mut() {
        Some(handler) => handler(op, collection, json),
        None => Err("no document handler: use TestContext::on_doc".to_string()),
    };
    finish(host, result, out)
}

unsafe extern "C" fn host_publish(
    ctx: *mut abi::Ctx,
    topic: *const c_char,
    data: *const u8,
    len: usize,
) -> c_int {
    // SAFETY: ABI contract.
    let (host, topic) = unsafe { (host(ctx), text(topic)) };
    let payload = if len == 0 {
        &[][..]
    } else {
        // SAFETY: ABI contract.
        unsafe { std::slice::from_raw_parts(data, len) }
    };
    let result = match host.publish.as_mut() {
        Some(handler) => handler(topic, payload).map(|()| String::new()),
        None => Err("no publish handler: use TestContext::on_publish".to_string()),
    };
    match result {
        Ok(_) => abi::OK,
        Err(message) => {
            host.last_error = cstring(&message);
            abi::FAILED
        }
    }
}

fn finish(host: &mut Host, result: Result<String, String>, out: *mut *mut c_char) -> c_int {
    match result {
        Ok(value) => {
            owned_out(out, value);
            abi::OK
        }
        Err(message) => {
            host.last_error = cstring(&message);
            abi::FAILED
        }
    }
}

unsafe extern "C" fn host_last_error(ctx: *mut abi::Ctx) -> *const c_char {
    // SAFETY: ABI contract.
    unsafe { host(ctx) }.last_error.as_ptr()
}

unsafe extern "C" fn host_invoke(
    ctx: *mut abi::Ctx,
    doee: *const c_char,
    data: *const u8,
    len: usize,
    out: *mut *mut u8,
    out_len: *mut usize,
) -> c_int {
    // SAFETY: ABI contract.
    let (host, doee) = unsafe { (host(ctx), text(doee)) };
    let input = if len == 0 {
        &[][..]
    } else {
        // SAFETY: ABI contract.
        unsafe { std::slice::from_raw_parts(data, len) }
    };
    let result = match host.invoke.as_mut() {
        Some(handler) => handler(doee, input),
        None => Err("no invoke handler: use TestContext::on_invoke".to_string()),
    };
    match result {
        Ok(mut output) => {
            let length = output.len();
            output.push(0);
            let p = output.as_mut_ptr();
            host.buffers.insert(p as usize, output);
            // SAFETY: the Doee's valid out pointers.
            unsafe {
                *out = p;
                *out_len = length;
            }
            abi::OK
        }
        Err(message) => {
            // SAFETY: as above.
            unsafe { *out = std::ptr::null_mut() };
            host.last_error = cstring(&message);
            abi::FAILED
        }
    }
}

unsafe extern "C" fn host_free(ctx: *mut abi::Ctx, p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: ABI contract.
    let host = unsafe { host(ctx) };
    if host.buffers.remove(&(p as usize)).is_none() {
        // SAFETY: every other string handed out went through `CString::into_raw`.
        drop(unsafe { CString::from_raw(p.cast()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Threshold {
        limit: f64,
    }

    impl Doee for Threshold {
        fn initialize(&mut self, ctx: &mut Context) -> Result<(), Error> {
            self.limit = ctx.param("limit").ok_or(Error::new("no limit"))?.parse()?;
            Ok(())
        }

        fn execute(&mut self, ctx: &mut Context, input: &[u8]) -> Result<Vec<u8>, Error> {
            let value: f64 = std::str::from_utf8(input)?.trim().parse()?;
            ctx.log(Level::Info, &format!("checking {value}"));
            ctx.set_header("x-limit", &self.limit.to_string());
            if value > self.limit {
                ctx.set_status(409);
                ctx.publish("alerts", input)?;
            }
            let rows = ctx.sql("SELECT ?1", "[1]")?;
            Ok(format!("{} {}", value > self.limit, rows).into_bytes())
        }
    }

    #[test]
    fn a_doee_runs_through_the_abi() {
        let published = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let sink = published.clone();
        let mut host = TestContext::new()
            .param("limit", "25")
            .on_sql(|q, p| Ok(format!("[{{\"q\":\"{q}\",\"p\":{p}}}]")))
            .on_publish(move |t, m| {
                sink.borrow_mut().push((t.to_string(), m.to_vec()));
                Ok(())
            });
        let mut doee = Threshold::default();
        host.initialize(&mut doee).unwrap();
        let out = host.execute(&mut doee, b"30").unwrap();
        assert_eq!(out, br#"true [{"q":"SELECT ?1","p":[1]}]"#);
        assert_eq!(host.status(), Some(409));
        assert_eq!(host.headers(), &[("x-limit".to_string(), "25".to_string())]);
        assert_eq!(host.logs(), &[(Level::Info, "checking 30".to_string())]);
        assert_eq!(
            published.borrow().as_slice(),
            &[("alerts".to_string(), b"30".to_vec())]
        );

        assert!(host.execute(&mut doee, b"abc").is_err());
        assert_eq!(host.status(), None, "each invocation starts afresh");
    }

    #[test]
    fn missing_handlers_fail_with_a_message() {
        #[derive(Default)]
        struct Sql;
        impl Doee for Sql {
            fn execute(&mut self, ctx: &mut Context, _: &[u8]) -> Result<Vec<u8>, Error> {
                Ok(ctx.sql("SELECT 1", "[]")?.into_bytes())
            }
        }
        let err = TestContext::new().execute(&mut Sql, b"").unwrap_err();
        assert!(err.message().contains("on_sql"), "{err}");
    }

    #[test]
    fn invoke_gets_the_handlers_output_bytes_and_all() {
        #[derive(Default)]
        struct Caller;
        impl Doee for Caller {
            fn execute(&mut self, ctx: &mut Context, input: &[u8]) -> Result<Vec<u8>, Error> {
                ctx.invoke("store", input)
            }
        }
        let mut host = TestContext::new().on_invoke(|doee, input| match doee {
            "store" => Ok([input, b"\0stored"].concat()),
            other => Err(format!("no {other}")),
        });
        let out = host.execute(&mut Caller, b"21.5").unwrap();
        assert_eq!(out, b"21.5\0stored");
        let err = TestContext::new().execute(&mut Caller, b"").unwrap_err();
        assert!(err.message().contains("on_invoke"), "{err}");
    }

    #[test]
    fn params_and_meta_are_absent_unless_set() {
        #[derive(Default)]
        struct Probe;
        impl Doee for Probe {
            fn execute(&mut self, ctx: &mut Context, _: &[u8]) -> Result<Vec<u8>, Error> {
                let seen = format!(
                    "{:?} {:?} {:?}",
                    ctx.param("x"),
                    ctx.meta("trigger"),
                    ctx.meta("nul\0key")
                );
                Ok(seen.into_bytes())
            }
        }
        let out = TestContext::new().execute(&mut Probe, b"").unwrap();
        assert_eq!(out, br#"None Some("http") None"#);
    }
}
