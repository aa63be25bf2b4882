//! Other hosts for the multi-host tests: network namespaces on a bridge
//! the test makes (and removes on drop), each with a host name of its own,
//! running `isms join`. The tests talk only to the addresses of the
//! namespaces they made.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A bridge with an address on the test's own subnet; the kernel listens
/// on [`Network::kernel_ip`].
pub struct Network {
    bridge: String,
    prefix: String,
    /// The root namespace's address on the bridge, where the kernel listens.
    pub kernel_ip: String,
    hosts: u8,
}

impl Network {
    /// Makes the bridge, or says why it cannot (not root, no `ip`): the
    /// caller skips with that reason.
    pub fn create() -> Result<Network, String> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root (tests/run runs the tests as root)".into());
        }
        // A /24 in 10.x.y.0 that no interface of this machine has, and no
        // other test of this process took.
        static TAKEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let addresses = Command::new("ip")
            .args(["-4", "-o", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .map_err(|e| format!("cannot run ip: {e}"))?;
        let mut taken = TAKEN.lock().unwrap();
        let (tag, prefix) = loop {
            let mut nonce = [0u8; 3];
            getrandom::fill(&mut nonce).unwrap();
            let prefix = format!("10.{}.{}", 100 + nonce[0] % 150, nonce[1]);
            if !taken.contains(&prefix) && !addresses.contains(&format!(" {prefix}.")) {
                taken.push(prefix.clone());
                break (
                    format!("{:02x}{:02x}{:02x}", nonce[0], nonce[1], nonce[2]),
                    prefix,
                );
            }
        };
        drop(taken);
        let bridge = format!("ib{tag}");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        let network = Network {
            bridge: bridge.clone(),
            kernel_ip: format!("{prefix}.1"),
            prefix,
            hosts: 0,
        };
        ip(&[
            "addr",
            "add",
            &format!("{}/24", network.kernel_ip),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        Ok(network)
    }

    /// A new host: a namespace with its own address on the bridge.
    pub fn host(&mut self, name: &str) -> Host {
        self.hosts += 1;
        let n = self.hosts;
        let namespace = format!("{}-{name}", self.bridge);
        let outside = format!("{}h{n}", self.bridge);
        let inside = format!("{}n{n}", self.bridge);
        let address = format!("{}.{}", self.prefix, 10 + n);
        let steps: [&[&str]; 8] = [
            &["netns", "add", &namespace],
            &[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ],
            &["link", "set", &outside, "master", &self.bridge],
            &["link", "set", &outside, "up"],
            &["link", "set", &inside, "netns", &namespace],
            &[
                "-n",
                &namespace,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                &inside,
            ],
            &["-n", &namespace, "link", "set", &inside, "up"],
            &["-n", &namespace, "link", "set", "lo", "up"],
        ];
        for step in steps {
            ip(step).unwrap();
        }
        Host {
            name: name.to_string(),
            namespace,
            outside,
            address,
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A host: a network namespace and its cable to the bridge.
pub struct Host {
    /// Its host name (also its instances' name after `@`).
    pub name: String,
    namespace: String,
    outside: String,
    /// Its address on the bridge.
    pub address: String,
}

impl Host {
    /// Pulls its cable: the link goes down without a packet saying so.
    pub fn cut(&self) {
        ip(&["link", "set", &self.outside, "down"]).unwrap();
    }

    /// Plugs it back in.
    pub fn restore(&self) {
        ip(&["link", "set", &self.outside, "up"]).unwrap();
    }

    /// A command run on this host, under its own host name.
    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &self.namespace,
                "unshare",
                "--uts",
                "sh",
                "-c",
            ])
            .arg(format!("hostname {} && exec \"$@\"", self.name))
            .arg("sh")
            .arg(program)
            .args(args);
        command
    }

    /// Runs `isms join <endpoint> --service <service> --key-file <key>`
    /// with `extra` arguments, its data under `dir`.
    pub fn join(
        &self,
        exe: &Path,
        endpoint: &str,
        service: &str,
        key_file: &Path,
        dir: &Path,
        extra: &[&str],
    ) -> Joined {
        let data_dir = dir.join(format!("{}-{service}", self.name));
        let mut args = vec![
            "join",
            endpoint,
            "--service",
            service,
            "--key-file",
            key_file.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let mut command = self.command(exe, &args);
        command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().expect("cannot start isms join");
        let output = Arc::new(Mutex::new(String::new()));
        crate::collect_output(&mut child, &output);
        Joined {
            child,
            output,
            data_dir,
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.namespace]);
        let _ = ip(&["link", "del", &self.outside]);
    }
}

/// A running `isms join`, stopped (with its service) on drop.
pub struct Joined {
    child: Child,
    output: Arc<Mutex<String>>,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl Joined {
    /// What it printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Whether it has exited, and how.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// A power cut of its host: `isms join` and its service killed at once
    /// (SIGKILL), never to come back.
    pub fn power_cut(&mut self) {
        let root = self.child.id();
        let mut pids = crate::descendants(root);
        pids.push(root);
        for pid in &pids {
            // SAFETY: signalling processes of our own.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        let _ = self.child.wait();
        for pid in pids {
            crate::eventually(
                std::time::Duration::from_secs(10),
                "the host's processes to die",
                || crate::procs::gone(pid).then_some(()),
            );
        }
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        // `ip netns exec`, `unshare` and `sh` exec: the child is `isms join`,
        // which stops its service on SIGTERM. Then its whole process group,
        // whatever is left.
        let pid = self.child.id() as i32;
        // SAFETY: signalling a process (group) of our own.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- isms join printed:\n{}", self.output());
        }
    }
}
