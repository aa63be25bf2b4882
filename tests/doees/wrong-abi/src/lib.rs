//! Exports the Doee entry points by hand, claiming ABI version 99: the
//! Executor must refuse to run it, with a clear error.

use std::ffi::{c_int, c_void};

#[unsafe(no_mangle)]
pub extern "C" fn isms_doee_abi_version() -> u32 {
    99
}

#[unsafe(no_mangle)]
pub extern "C" fn isms_doee_initialize(_ctx: *mut c_void) -> c_int {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn isms_doee_execute(_ctx: *mut c_void, _input: *const u8, _len: usize) -> c_int {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn isms_doee_terminate(_ctx: *mut c_void) {}
