//! The system calls a Doee may not make: a deny-list the Executor installs
//! on itself (with `no_new_privs`) before it loads any Doee code, so every
//! backend — bwrap, Apptainer, even `process` — gets the same filter, and
//! every process the Doee forks inherits it. A denied call fails with
//! `EPERM`, as a call the sandbox forbids would; a call made through
//! another architecture's convention (32-bit `int 0x80` on x86-64) kills
//! the process.
//!
//! What is denied, and why: other processes' memory (`ptrace`,
//! `process_vm_*`); kernel subsystems that are frequent sources of exploits
//! and that no Doee needs (`bpf`, `perf_event_open`, `userfaultfd`,
//! `io_uring_*`, the keyrings, which are not namespaced); the mount table and
//! namespaces (`mount` and the new mount API, `pivot_root`, `chroot`,
//! `unshare`, `setns`); and the machine itself (modules, `kexec_*`,
//! `reboot`, swap, `acct`, `syslog`).

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use std::collections::BTreeMap;

/// The denied calls, by number on this architecture.
const DENIED: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_syslog,
    libc::SYS_open_by_handle_at,
];

/// x86-64 also runs x32 programs: the same calls with this bit set in the
/// number, and a few of its own numbers, which share the audit architecture
/// and so pass the filter's architecture check.
#[cfg(target_arch = "x86_64")]
fn x32_numbers() -> Vec<libc::c_long> {
    const X32: libc::c_long = 0x4000_0000;
    // x32's own numbers for ptrace, kexec_load and process_vm_readv/writev.
    let own = [521, 528, 539, 540];
    DENIED.iter().chain(own.iter()).map(|nr| nr | X32).collect()
}

#[cfg(not(target_arch = "x86_64"))]
fn x32_numbers() -> Vec<libc::c_long> {
    Vec::new()
}

/// The filter, compiled for this machine.
pub fn program() -> Result<BpfProgram, String> {
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("no seccomp filter for this architecture: {e:?}"))?;
    // `c_long` is `i64` on the 64-bit targets ISMS runs on, not everywhere.
    #[allow(clippy::useless_conversion)]
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = DENIED
        .iter()
        .copied()
        .chain(x32_numbers())
        .map(|nr| (i64::from(nr), Vec::new()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("cannot build the seccomp filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e| format!("cannot compile the seccomp filter: {e}"))
}

/// Installs the filter on the calling process.
pub fn apply() -> Result<(), String> {
    seccompiler::apply_filter(&program()?)
        .map_err(|e| format!("cannot install the seccomp filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a child process (the filter cannot be removed): denied calls
    /// answer EPERM, others still work.
    #[test]
    fn denied_calls_answer_eperm_and_others_work() {
        // Compiled before the fork: the child of a threaded process must not allocate.
        let program = program().unwrap();
        assert!(program.len() > DENIED.len());
        // SAFETY: the child only makes system calls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = (|| {
                seccompiler::apply_filter(&program).ok()?;
                // SAFETY: plain system calls with harmless arguments.
                unsafe {
                    let denied = libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0);
                    let errno = *libc::__errno_location();
                    let io_uring =
                        libc::syscall(libc::SYS_io_uring_setup, 1, std::ptr::null_mut::<u8>());
                    let errno2 = *libc::__errno_location();
                    let allowed = libc::getpid();
                    (denied == -1
                        && errno == libc::EPERM
                        && io_uring == -1
                        && errno2 == libc::EPERM
                        && allowed > 0)
                        .then_some(0)
                }
            })()
            .unwrap_or(1);
            // SAFETY: leaving the forked child without running the test harness's code.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status}"
        );
    }
}
