//! Servers the tests start beside a platform, each private to one test on
//! free loopback ports and removed on drop: a PostgreSQL database, a
//! MongoDB-wire server, a Mosquitto broker.

use crate::{eventually, free_port, temp_dir};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A fresh, empty database on the PostgreSQL server of
/// `ISMS_TEST_POSTGRES_URL` (which `tests/run` starts), dropped on drop with
/// the roles the platform made for it.
pub struct PostgresDatabase {
    server: String,
    name: String,
    /// The database's URL, for `dbriver.sql_url`.
    pub url: String,
}

impl PostgresDatabase {
    /// Creates the database, or panics saying how to get a server.
    pub fn create() -> PostgresDatabase {
        let server = std::env::var("ISMS_TEST_POSTGRES_URL").unwrap_or_else(|_| {
            panic!(
                "these tests need a PostgreSQL server: run tests/run, which starts one, or set \
                 ISMS_TEST_POSTGRES_URL=postgres://user:password@127.0.0.1:port/postgres \
                 (a role with CREATEDB and CREATEROLE)"
            )
        });
        let mut nonce = [0u8; 4];
        getrandom::fill(&mut nonce).unwrap();
        let name = format!("isms_test_{:08x}", u32::from_be_bytes(nonce));
        psql(&server, &format!("CREATE DATABASE {name}"));
        let (base, _) = server
            .rsplit_once('/')
            .expect("ISMS_TEST_POSTGRES_URL has no /database");
        let url = format!("{base}/{name}");
        PostgresDatabase { server, name, url }
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let name = &self.name;
        // Project roles are named `isms` + 6 hex digits of the database
        // name's sha256 + `_<project>` (see DBriver's postgres.rs).
        let script = format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE);\n\
             SELECT format('DROP ROLE %I', rolname) FROM pg_roles WHERE rolname LIKE \
             'isms' || left(encode(sha256('{name}'::bytea), 'hex'), 6) || '\\_%' \\gexec\n"
        );
        let _ = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=0", &self.server])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().unwrap().write_all(script.as_bytes())?;
                child.wait()
            });
    }
}

fn psql(server: &str, command: &str) {
    let output = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", server, "-c", command])
        .output()
        .expect("cannot run psql (apt-get install postgresql-client)");
    assert!(
        output.status.success(),
        "psql `{command}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The MongoDB-wire test server `tests/run` installs (SecantusDB, found through
/// `ISMS_TEST_MONGO_SERVER`), on a free loopback port with in-memory storage,
/// killed and removed on drop.
pub struct MongoWire {
    child: Child,
    dir: PathBuf,
    /// `mongodb://127.0.0.1:<port>`.
    pub url: String,
}

impl MongoWire {
    /// Starts the server and waits until it listens, or panics saying how to install it.
    pub fn start() -> MongoWire {
        let exe = std::env::var_os("ISMS_TEST_MONGO_SERVER")
            .filter(|e| !e.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!(
                    "this test needs the MongoDB-wire server SecantusDB: run tests/run, or \
                     python3 -m venv ~/.cache/isms-ci/venv && ~/.cache/isms-ci/venv/bin/pip install SecantusDB==0.7.0b3 \
                     and export ISMS_TEST_MONGO_SERVER=~/.cache/isms-ci/venv/bin/secantusd-py"
                )
            });
        let dir = temp_dir("mongo-wire");
        let port = free_port();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new(&exe)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--storage-path", ":memory:", "--log-level", "WARNING"])
            .current_dir(&dir)
            .env("TMPDIR", &dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let server = MongoWire {
            child,
            dir,
            url: format!("mongodb://127.0.0.1:{port}"),
        };
        eventually(
            Duration::from_secs(60),
            "the MongoDB-wire server to listen",
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        );
        server
    }
}

impl Drop for MongoWire {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private Mosquitto broker (Debian's `mosquitto`, which `tests/run`
/// installs) on a free loopback port, with its config, persistence and log
/// in a fresh directory, killed and removed on drop. Never the system's
/// broker on port 1883.
pub struct Mosquitto {
    child: Child,
    dir: PathBuf,
    /// `mqtt://127.0.0.1:<port>`.
    pub url: String,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl Mosquitto {
    /// The broker's executable.
    pub const EXE: &'static str = "/usr/sbin/mosquitto";

    /// Starts the broker and waits until it accepts connections, or panics
    /// saying how to install it.
    pub fn start() -> Mosquitto {
        Mosquitto::start_with("")
    }

    /// As [`Mosquitto::start`], with more lines of configuration.
    pub fn start_with(extra: &str) -> Mosquitto {
        assert!(
            Path::new(Self::EXE).is_file(),
            "this needs the Mosquitto MQTT broker at {}: apt-get install mosquitto \
             (or run tests/run, which installs what the tests need)",
            Self::EXE
        );
        let dir = temp_dir("mosquitto");
        let port = free_port();
        // Queues and the in-flight window large enough that a benchmark's
        // burst of QoS 1 messages is relayed, not dropped or throttled by
        // the defaults (1,000 queued, 20 in flight per client).
        let mut config = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence true\n\
             persistence_location {dir}/\n\
             max_queued_messages 100000\n\
             max_inflight_messages 0\n\
             log_dest file {dir}/mosquitto.log\n\
             {extra}\n",
            dir = dir.display()
        );
        // As root it would switch to the `mosquitto` user, which cannot
        // write to this directory.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            config.push_str("user root\n");
        }
        std::fs::write(dir.join("mosquitto.conf"), config).unwrap();
        let child = Mosquitto::launch(&dir, port);
        Mosquitto {
            child,
            dir,
            url: format!("mqtt://127.0.0.1:{port}"),
            port,
        }
    }

    /// Starts the broker on its configuration and waits until it listens.
    fn launch(dir: &Path, port: u16) -> Child {
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stdout.log"))
            .unwrap();
        let mut child = Command::new(Self::EXE)
            .arg("-c")
            .arg(dir.join("mosquitto.conf"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", Self::EXE));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = || {
                std::fs::read_to_string(dir.join("stdout.log")).unwrap_or_default()
                    + &std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default()
            };
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "mosquitto exited ({status}) before listening on {port}:\n{}",
                    log()
                );
            }
            if Instant::now() > deadline {
                panic!("mosquitto did not listen on {port} within 30 s:\n{}", log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// Stops the broker cleanly (it saves its state) and starts it again on
    /// the same directory and port.
    pub fn restart(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        self.child = Mosquitto::launch(&self.dir, self.port);
    }

    /// What the broker logged so far.
    pub fn log(&self) -> String {
        self.read_log("mosquitto.log")
    }

    fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The broker starts, answers an MQTT 3.1.1 CONNECT with a CONNACK that
    /// accepts it, writes its log where the config says, and is gone with
    /// its directory after drop.
    #[test]
    fn mosquitto_accepts_a_client_and_cleans_up() {
        let broker = Mosquitto::start();
        assert_eq!(broker.url, format!("mqtt://127.0.0.1:{}", broker.port));
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", broker.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // CONNECT: protocol "MQTT" level 4, clean session, keep-alive 60 s,
        // client id "self-test".
        let mut connect = vec![0x10, 21, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 9];
        connect.extend_from_slice(b"self-test");
        stream.write_all(&connect).unwrap();
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepting the client");
        drop(stream);
        let dir = broker.dir.clone();
        eventually(Duration::from_secs(10), "mosquitto's log", || {
            broker.log().contains("self-test").then_some(())
        });
        let port = broker.port;
        drop(broker);
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "mosquitto still listening on {port}"
        );
    }
}
