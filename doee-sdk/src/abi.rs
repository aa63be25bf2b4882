//! The one C ABI between a Doee shared object and the Doee Executor.
//!
//! Rust, C and C++ Doees all compile down to these four exported symbols and
//! call back into the host only through [`HostApi`]. `include/isms/doee.h` is
//! the C mirror of this module; the two must change together, and the version
//! below must change whenever either does in an incompatible way.
//!
//! Why a function table instead of host symbols resolved at `dlopen` time: the
//! Executor would have to export its symbols from the executable (`-rdynamic`),
//! which is fragile across linkers and languages; a table reached through the
//! context pointer works the same for every toolchain.

use std::ffi::{c_char, c_int, c_void};

/// The ABI version this SDK produces and the Executor accepts.
pub const ABI_VERSION: u32 = 1;

/// Symbol exporting `extern "C" fn() -> u32`: the ABI version the Doee was built for.
pub const SYMBOL_ABI_VERSION: &[u8] = b"isms_doee_abi_version\0";
/// Symbol exporting `extern "C" fn(*mut Ctx) -> c_int`: 0 on success.
pub const SYMBOL_INITIALIZE: &[u8] = b"isms_doee_initialize\0";
/// Symbol exporting `extern "C" fn(*mut Ctx, *const u8, usize) -> c_int`: 0 on success.
pub const SYMBOL_EXECUTE: &[u8] = b"isms_doee_execute\0";
/// Symbol exporting `extern "C" fn(*mut Ctx)`.
pub const SYMBOL_TERMINATE: &[u8] = b"isms_doee_terminate\0";

/// `execute`/`initialize` return code: success.
pub const OK: c_int = 0;
/// Return code: the Doee reported an error (see [`HostApi::error`]).
pub const FAILED: c_int = 1;
/// Return code: the Doee panicked; the Executor stops the Worker afterwards
/// because the Doee's state can no longer be trusted.
pub const PANICKED: c_int = 2;

/// Log levels of [`HostApi::log`].
pub mod level {
    use std::ffi::c_int;
    /// Something failed.
    pub const ERROR: c_int = 1;
    /// Something looks wrong.
    pub const WARN: c_int = 2;
    /// Normal operation.
    pub const INFO: c_int = 3;
    /// Detail for debugging.
    pub const DEBUG: c_int = 4;
}

/// `isms_ctx` in C: what the host hands to every Doee entry point.
///
/// The host embeds this as the first field of its own `#[repr(C)]` state, so a
/// `*mut Ctx` is also a pointer to that state.
#[repr(C)]
pub struct Ctx {
    /// The host's function table; valid for as long as the context is.
    pub api: *const HostApi,
}

/// `isms_host_api` in C: the host functions a Doee may call.
///
/// Strings are NUL-terminated UTF-8. Strings returned by `param` and `meta`
/// stay valid until the current entry point returns; strings returned through
/// an `out` pointer are owned by the caller and released with `free`.
#[repr(C)]
pub struct HostApi {
    /// [`ABI_VERSION`] of the host.
    pub abi_version: u32,
    /// `size_of::<HostApi>()` of the host, so later versions can append entries.
    pub size: u32,
    /// A parameter from the manifest's `[params]`, or NULL.
    pub param: unsafe extern "C" fn(*mut Ctx, *const c_char) -> *const c_char,
    /// A fact about the current invocation (`trigger`, `topic`, `method`, …), or NULL.
    pub meta: unsafe extern "C" fn(*mut Ctx, *const c_char) -> *const c_char,
    /// Appends bytes to the invocation's output.
    pub output: unsafe extern "C" fn(*mut Ctx, *const u8, usize),
    /// Sets the HTTP status of the response.
    pub set_status: unsafe extern "C" fn(*mut Ctx, u16),
    /// Sets an HTTP response header.
    pub set_header: unsafe extern "C" fn(*mut Ctx, *const c_char, *const c_char),
    /// Sets the error message reported when the entry point returns non-zero.
    pub error: unsafe extern "C" fn(*mut Ctx, *const c_char),
    /// Writes a log line at a [`level`].
    pub log: unsafe extern "C" fn(*mut Ctx, c_int, *const c_char),
    /// Runs SQL with JSON parameters; on 0, `*out` holds the rows as JSON.
    /// On non-zero, `*out` is NULL and `last_error` explains.
    pub sql:
        unsafe extern "C" fn(*mut Ctx, *const c_char, *const c_char, *mut *mut c_char) -> c_int,
    /// Runs a document operation (`insert`, `find`, `update`, `delete`); like `sql`.
    pub doc: unsafe extern "C" fn(
        *mut Ctx,
        *const c_char,
        *const c_char,
        *const c_char,
        *mut *mut c_char,
    ) -> c_int,
    /// Publishes an MQTT message; 0 on success, else `last_error` explains.
    pub publish: unsafe extern "C" fn(*mut Ctx, *const c_char, *const u8, usize) -> c_int,
    /// Why the last failed `sql`, `doc` or `publish` call failed (never NULL).
    pub last_error: unsafe extern "C" fn(*mut Ctx) -> *const c_char,
    /// Releases a string the host returned through an `out` pointer.
    pub free: unsafe extern "C" fn(*mut Ctx, *mut c_void),
    /// A secret of the project, read now; on 0, `*out` holds its value. On
    /// non-zero (no such secret), `*out` is NULL and `last_error` explains.
    /// Appended: a host whose `size` ends before it has none.
    pub secret: unsafe extern "C" fn(*mut Ctx, *const c_char, *mut *mut c_char) -> c_int,
    /// Runs another Doee of the project with an input and waits for it; on
    /// 0, `*out` holds its output (`*out_len` bytes, then a NUL), released
    /// with `free`. On non-zero, `*out` is NULL and `last_error` explains
    /// (naming the callee's invocation). Appended, like `secret`.
    pub invoke: unsafe extern "C" fn(
        *mut Ctx,
        *const c_char,
        *const u8,
        usize,
        *mut *mut u8,
        *mut usize,
    ) -> c_int,
    /// Sends a piece of the output now, to a client that streams (an HTTP
    /// trigger, `isms invoke --follow`); elsewhere it is added to the
    /// output like `output`. 0 on success; non-zero when the client went
    /// away or the output is too large (`last_error` explains). Waits while
    /// the client is behind. Appended, like `invoke`.
    pub write: unsafe extern "C" fn(*mut Ctx, *const u8, usize) -> c_int,
}
