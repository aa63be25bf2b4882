//! Write ISMS Doees in Rust.
//!
//! A Doee is a type implementing [`Doee`], exported with [`export_doee!`]:
//!
//! ```
//! use doee_sdk::{export_doee, Context, Doee, Error};
//!
//! #[derive(Default)]
//! struct Hello;
//!
//! impl Doee for Hello {
//!     fn execute(&mut self, _ctx: &mut Context, input: &[u8]) -> Result<Vec<u8>, Error> {
//!         Ok(format!("Hello, {}!", String::from_utf8_lossy(input)).into_bytes())
//!     }
//! }
//! export_doee!(Hello);
//! ```
//!
//! The platform builds the crate as a `cdylib`; the Doee Executor loads it in a
//! sandboxed Worker and calls it through the C ABI of [`abi`]. The
//! [`testing`] module runs a Doee in a unit test against a fake host.
//!
//! This crate depends on nothing but `std`, so a Doee builds in seconds, offline.
//!
//! C and C++ Doees use the headers this crate ships in `include/`:
//! `isms/doee.h` (the same ABI as [`abi`], `ISMS_DOEE_C(init, exec, term)`),
//! `isms/doee.hpp` (a class deriving from `isms::Doee`, `ISMS_DOEE(Class)`)
//! and `isms/testing.h` (a header-only fake host for their unit tests).
//! `isms new <name> --lang c|cpp` scaffolds one with a `make test`.
#![deny(missing_docs)]

pub mod abi;
pub mod testing;

use std::ffi::{CStr, CString, c_char, c_int};
use std::fmt;

/// A function deployed on ISMS.
///
/// The Executor creates the value with `Default`, calls [`Doee::initialize`]
/// once per Worker, [`Doee::execute`] once per invocation, and
/// [`Doee::terminate`] before the Worker stops. One Worker runs one
/// invocation at a time, so `&mut self` is never shared.
pub trait Doee: Default + Send + 'static {
    /// Reads parameters and opens resources. An error stops the Worker and
    /// fails the invocation that started it.
    fn initialize(&mut self, ctx: &mut Context) -> Result<(), Error> {
        let _ = ctx;
        Ok(())
    }

    /// Handles one invocation: `input` is the HTTP body or the MQTT payload;
    /// the returned bytes are the response body or the reply message.
    fn execute(&mut self, ctx: &mut Context, input: &[u8]) -> Result<Vec<u8>, Error>;

    /// Releases resources before the Worker stops.
    fn terminate(&mut self, ctx: &mut Context) {
        let _ = ctx;
    }
}

/// The error a Doee returns; its message reaches the caller.
///
/// Any `std::error::Error` converts into it, so `?` works on most results.
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Error {
            message: message.to_string(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(err: E) -> Self {
        Error::new(err)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The level of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Normal operation.
    Info,
    /// Detail for debugging.
    Debug,
}

impl Level {
    fn to_abi(self) -> c_int {
        match self {
            Level::Error => abi::level::ERROR,
            Level::Warn => abi::level::WARN,
            Level::Info => abi::level::INFO,
            Level::Debug => abi::level::DEBUG,
        }
    }

    /// The level of an ABI code; unknown codes read as `Info`.
    pub fn from_abi(code: c_int) -> Level {
        match code {
            abi::level::ERROR => Level::Error,
            abi::level::WARN => Level::Warn,
            abi::level::DEBUG => Level::Debug,
            _ => Level::Info,
        }
    }

    /// The lower-case name: `error`, `warn`, `info`, `debug`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// What a Doee can ask of the platform during a call.
///
/// Every request goes through the Executor and the kernel; the platform, not
/// the Doee, decides which project's databases and topics it reaches.
pub struct Context {
    raw: *mut abi::Ctx,
}

impl Context {
    /// Wraps a host context.
    ///
    /// # Safety
    /// `raw` must point to a live [`abi::Ctx`] whose `api` table is valid for
    /// as long as the returned `Context` is used.
    pub unsafe fn from_raw(raw: *mut abi::Ctx) -> Context {
        Context { raw }
    }

    fn api(&self) -> &abi::HostApi {
        // SAFETY: `from_raw` promised a live context with a valid table.
        unsafe { &*(*self.raw).api }
    }

    /// A parameter from the manifest's `[params]`.
    pub fn param(&self, name: &str) -> Option<&str> {
        let name = CString::new(name).ok()?;
        // SAFETY: the host keeps the returned string alive while `self` is.
        unsafe { borrow_str((self.api().param)(self.raw, name.as_ptr())) }
    }

    /// A fact about the current invocation: `trigger` (`http`, `mqtt`,
    /// `schedule` or `cli`), `topic`, `method`, `path`, `query`, `scheduled`
    /// (a schedule's firing: its moment, ms since the epoch),
    /// `invocation_id`, `project`, `doee`.
    pub fn meta(&self, key: &str) -> Option<&str> {
        let key = CString::new(key).ok()?;
        // SAFETY: as in `param`.
        unsafe { borrow_str((self.api().meta)(self.raw, key.as_ptr())) }
    }

    /// Sets the HTTP status of the response (200 by default).
    pub fn set_status(&mut self, status: u16) {
        // SAFETY: a valid context and table.
        unsafe { (self.api().set_status)(self.raw, status) }
    }

    /// Sets an HTTP response header.
    pub fn set_header(&mut self, name: &str, value: &str) {
        let (name, value) = (lossy_cstring(name), lossy_cstring(value));
        // SAFETY: valid NUL-terminated strings that outlive the call.
        unsafe { (self.api().set_header)(self.raw, name.as_ptr(), value.as_ptr()) }
    }

    /// Writes a log line, shown in the project's logs.
    pub fn log(&self, level: Level, message: &str) {
        let message = lossy_cstring(message);
        // SAFETY: as in `set_header`.
        unsafe { (self.api().log)(self.raw, level.to_abi(), message.as_ptr()) }
    }

    /// Runs SQL on the project's database; `params_json` is a JSON array of
    /// positional parameters. Returns the rows as a JSON array of objects.
    pub fn sql(&mut self, query: &str, params_json: &str) -> Result<String, Error> {
        let (query, params) = (lossy_cstring(query), lossy_cstring(params_json));
        let mut out: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid strings and a valid out pointer.
        let code = unsafe { (self.api().sql)(self.raw, query.as_ptr(), params.as_ptr(), &mut out) };
        self.take_result(code, out)
    }

    /// The project's document store.
    pub fn docs(&mut self) -> Docs<'_> {
        Docs { ctx: self }
    }

    /// Publishes an MQTT message on a topic of the project's namespace.
    pub fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), Error> {
        let topic = lossy_cstring(topic);
        // SAFETY: valid string and a slice that outlives the call.
        let code = unsafe {
            (self.api().publish)(self.raw, topic.as_ptr(), payload.as_ptr(), payload.len())
        };
        if code == abi::OK {
            Ok(())
        } else {
            Err(self.last_error())
        }
    }

    /// A secret of the project (`isms secret set`), read at this call, so a
    /// value set since takes effect at once. Keep it out of logs and
    /// outputs: the platform never shows it, but cannot stop a Doee.
    pub fn secret(&mut self, name: &str) -> Result<String, Error> {
        let needed = std::mem::offset_of!(abi::HostApi, secret) + size_of::<usize>();
        if (self.api().size as usize) < needed {
            return Err(Error::new("this platform has no secrets"));
        }
        let name = lossy_cstring(name);
        let mut out: *mut c_char = std::ptr::null_mut();
        // SAFETY: a valid string and a valid out pointer; the host has the entry.
        let code = unsafe { (self.api().secret)(self.raw, name.as_ptr(), &mut out) };
        self.take_result(code, out)
    }

    /// Runs another Doee of the project with `input` and waits for its
    /// output; its failure is this call's error, naming its invocation. The
    /// callee is recorded as this invocation's child; calls nest at most
    /// `doer.max_chain_depth` deep (8), so a cycle fails there.
    pub fn invoke(&mut self, doee: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        let needed = std::mem::offset_of!(abi::HostApi, invoke) + size_of::<usize>();
        if (self.api().size as usize) < needed {
            return Err(Error::new("this platform cannot invoke Doees"));
        }
        let doee = lossy_cstring(doee);
        let mut out: *mut u8 = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: a valid string, a slice that outlives the call and valid
        // out pointers; the host has the entry.
        let code = unsafe {
            (self.api().invoke)(
                self.raw,
                doee.as_ptr(),
                input.as_ptr(),
                input.len(),
                &mut out,
                &mut len,
            )
        };
        if code != abi::OK || out.is_null() {
            return Err(self.last_error());
        }
        // SAFETY: the host returned an owned buffer of `len` bytes.
        let output = unsafe { std::slice::from_raw_parts(out, len) }.to_vec();
        // SAFETY: `out` came from this host and is released exactly once.
        unsafe { (self.api().free)(self.raw, out.cast()) };
        Ok(output)
    }

    /// Sends a piece of the output now: an HTTP client (chunked, or
    /// Server-Sent Events) or `isms invoke --follow` gets it before the
    /// invocation ends, ahead of the output `execute` returns. Where the
    /// output is not streamed (MQTT, schedules, chains) the pieces join the
    /// output. Waits while the client is behind; fails once it went away.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        let needed = std::mem::offset_of!(abi::HostApi, write) + size_of::<usize>();
        if (self.api().size as usize) < needed {
            // An older platform: the piece joins the output, as in C.
            // SAFETY: a slice that outlives the call.
            unsafe { (self.api().output)(self.raw, chunk.as_ptr(), chunk.len()) };
            return Ok(());
        }
        // SAFETY: a slice that outlives the call; the host has the entry.
        let code = unsafe { (self.api().write)(self.raw, chunk.as_ptr(), chunk.len()) };
        if code == abi::OK {
            Ok(())
        } else {
            Err(self.last_error())
        }
    }

    fn take_result(&mut self, code: c_int, out: *mut c_char) -> Result<String, Error> {
        if code != abi::OK || out.is_null() {
            return Err(self.last_error());
        }
        // SAFETY: the host returned an owned NUL-terminated string in `out`.
        let text = unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `out` came from this host and is released exactly once.
        unsafe { (self.api().free)(self.raw, out.cast()) };
        Ok(text)
    }

    fn last_error(&self) -> Error {
        // SAFETY: the host returns a string valid until the next call.
        let message = unsafe { borrow_str((self.api().last_error)(self.raw)) };
        Error::new(message.unwrap_or("the platform refused the call"))
    }
}

/// The project's document store, from [`Context::docs`].
pub struct Docs<'a> {
    ctx: &'a mut Context,
}

impl Docs<'_> {
    /// Inserts a document (JSON object); returns `{"id": …}`.
    pub fn insert(&mut self, collection: &str, document_json: &str) -> Result<String, Error> {
        self.call("insert", collection, document_json)
    }

    /// Finds documents: `{"filter": …, "projection": …, "sort": …, "limit": N}`.
    pub fn find(&mut self, collection: &str, query_json: &str) -> Result<String, Error> {
        self.call("find", collection, query_json)
    }

    /// Updates documents: `{"filter": …, "update": {"$set": …}}`.
    pub fn update(&mut self, collection: &str, update_json: &str) -> Result<String, Error> {
        self.call("update", collection, update_json)
    }

    /// Deletes documents: `{"filter": …}`.
    pub fn delete(&mut self, collection: &str, filter_json: &str) -> Result<String, Error> {
        self.call("delete", collection, filter_json)
    }

    fn call(&mut self, op: &str, collection: &str, json: &str) -> Result<String, Error> {
        let (op, collection, json) = (
            lossy_cstring(op),
            lossy_cstring(collection),
            lossy_cstring(json),
        );
        let mut out: *mut c_char = std::ptr::null_mut();
        let ctx = &mut *self.ctx;
        // SAFETY: valid strings and out pointer.
        let code = unsafe {
            (ctx.api().doc)(
                ctx.raw,
                op.as_ptr(),
                collection.as_ptr(),
                json.as_ptr(),
                &mut out,
            )
        };
        ctx.take_result(code, out)
    }
}

/// A C string of `s`; an interior NUL (which C cannot carry) ends it.
fn lossy_cstring(s: &str) -> CString {
    let end = s.find('\0').unwrap_or(s.len());
    CString::new(&s[..end]).unwrap_or_default()
}

/// # Safety
/// `p` is NULL or a NUL-terminated string alive for `'a`.
unsafe fn borrow_str<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

/// Exports a [`Doee`] type as the Doee of this shared object.
///
/// Generates the four `extern "C"` entry points of [`abi`]. A panic inside the
/// Doee is caught here and reported as the invocation's error; the Executor
/// then replaces the Worker.
#[macro_export]
macro_rules! export_doee {
    ($doee:ty) => {
        static __ISMS_DOEE: $crate::__private::Slot<$doee> = $crate::__private::Slot::new();

        /// The ABI version this Doee was built for.
        #[unsafe(no_mangle)]
        pub extern "C" fn isms_doee_abi_version() -> u32 {
            $crate::abi::ABI_VERSION
        }

        /// Creates the Doee and calls `initialize`.
        ///
        /// # Safety
        /// Called by the Executor with a live context.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn isms_doee_initialize(
            ctx: *mut $crate::abi::Ctx,
        ) -> ::std::ffi::c_int {
            unsafe { __ISMS_DOEE.initialize(ctx) }
        }

        /// Calls `execute` for one invocation.
        ///
        /// # Safety
        /// Called by the Executor with a live context and input.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn isms_doee_execute(
            ctx: *mut $crate::abi::Ctx,
            input: *const u8,
            len: usize,
        ) -> ::std::ffi::c_int {
            unsafe { __ISMS_DOEE.execute(ctx, input, len) }
        }

        /// Calls `terminate` and drops the Doee.
        ///
        /// # Safety
        /// Called by the Executor with a live context.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn isms_doee_terminate(ctx: *mut $crate::abi::Ctx) {
            unsafe { __ISMS_DOEE.terminate(ctx) }
        }
    };
}

#[doc(hidden)]
pub mod __private {
    //! Support for `export_doee!`; not part of the API.
    use super::{Context, Doee, Error, abi};
    use std::ffi::c_int;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Mutex;

    /// The one instance of a shared object's Doee.
    pub struct Slot<D>(Mutex<Option<D>>);

    impl<D: Doee> Slot<D> {
        /// An empty slot.
        pub const fn new() -> Self {
            Slot(Mutex::new(None))
        }

        /// # Safety
        /// `ctx` is a live host context.
        pub unsafe fn initialize(&self, ctx: *mut abi::Ctx) -> c_int {
            // SAFETY: forwarded from the caller.
            let mut ctx = unsafe { Context::from_raw(ctx) };
            let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let outcome = guarded(&mut ctx, |ctx| {
                let mut doee = D::default();
                doee.initialize(ctx)?;
                Ok(doee)
            });
            match outcome {
                Ok(doee) => {
                    *slot = Some(doee);
                    abi::OK
                }
                Err(code) => code,
            }
        }

        /// # Safety
        /// `ctx` is a live host context; `input` points to `len` readable bytes.
        pub unsafe fn execute(&self, ctx: *mut abi::Ctx, input: *const u8, len: usize) -> c_int {
            // SAFETY: forwarded from the caller.
            let mut ctx = unsafe { Context::from_raw(ctx) };
            let input = if len == 0 {
                &[][..]
            } else {
                // SAFETY: forwarded from the caller.
                unsafe { std::slice::from_raw_parts(input, len) }
            };
            let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let Some(doee) = slot.as_mut() else {
                report(&mut ctx, "execute called before initialize");
                return abi::FAILED;
            };
            match guarded(&mut ctx, |ctx| doee.execute(ctx, input)) {
                Ok(output) => {
                    // SAFETY: a valid context and a slice alive for the call.
                    unsafe { (ctx.api().output)(ctx.raw, output.as_ptr(), output.len()) };
                    abi::OK
                }
                Err(code) => code,
            }
        }

        /// # Safety
        /// `ctx` is a live host context.
        pub unsafe fn terminate(&self, ctx: *mut abi::Ctx) {
            // SAFETY: forwarded from the caller.
            let mut ctx = unsafe { Context::from_raw(ctx) };
            let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(mut doee) = slot.take() {
                let _ = guarded(&mut ctx, |ctx| {
                    doee.terminate(ctx);
                    Ok(())
                });
            }
        }
    }

    impl<D: Doee> Default for Slot<D> {
        fn default() -> Self {
            Self::new()
        }
    }

    /// Runs `f`, turning its error or panic into the ABI's return code.
    fn guarded<T>(
        ctx: &mut Context,
        f: impl FnOnce(&mut Context) -> Result<T, Error>,
    ) -> Result<T, c_int> {
        match catch_unwind(AssertUnwindSafe(|| f(ctx))) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                report(ctx, err.message());
                Err(abi::FAILED)
            }
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic payload".to_string());
                report(ctx, &format!("the Doee panicked: {what}"));
                Err(abi::PANICKED)
            }
        }
    }

    fn report(ctx: &mut Context, message: &str) {
        let message = super::lossy_cstring(message);
        // SAFETY: a valid context and string.
        unsafe { (ctx.api().error)(ctx.raw, message.as_ptr()) };
    }
}
