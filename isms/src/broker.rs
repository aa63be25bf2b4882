//! The embedded MQTT broker `isms up` runs when no external one is
//! configured: rumqttd on its own thread, in the supervisor's process, so
//! it outlives a CommServer crash (the CommServer's persistent session and
//! its queued messages survive in it). It keeps messages in memory: a
//! message the broker has accepted but not yet delivered to the CommServer
//! is lost if the whole platform dies. An external broker with
//! persistence (Mosquitto's `persistence true`) closes that gap.

use crate::config::{Config, EMBEDDED_COMMSERVER_USER, embedded_broker_secret};
use anyhow::{Context as _, bail};
use rumqttd::{Config as BrokerConfig, ConnectionSettings, RouterConfig, ServerSettings};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Starts the broker on `addr`; fails at once if the port is taken.
pub fn start(addr: SocketAddr, config: &Config, data_dir: &Path) -> anyhow::Result<()> {
    // rumqttd binds on its own thread and only logs a failure: bind here
    // first so a port in use stops `isms up` with a clear message.
    drop(std::net::TcpListener::bind(addr).with_context(|| {
        format!("cannot run the embedded MQTT broker on {addr} (commserver.mqtt_addr)")
    })?);
    let secret = embedded_broker_secret(data_dir)?;
    let users = match config.commserver.mqtt_users_file.as_str() {
        "" => None,
        file => Some(read_users(Path::new(file))?),
    };
    let client_id = config.commserver.mqtt_client_id.clone();
    // Without device authentication nothing is asked of anyone; with it,
    // devices sign in from the users file and only the CommServer, with
    // its secret, may take the CommServer's client id (and its session).
    let external_auth: Option<rumqttd::AuthHandler> = users.map(|users| {
        let users = Arc::new(users);
        let secret = Arc::new(secret);
        let handler: rumqttd::AuthHandler = Arc::new(move |client, user, password| {
            let ok = if client == client_id || user == EMBEDDED_COMMSERVER_USER {
                client == client_id && user == EMBEDDED_COMMSERVER_USER && password == *secret
            } else {
                users.get(&user).is_some_and(|known| *known == password)
            };
            Box::pin(async move { ok })
        });
        handler
    });
    let max_payload = (config.commserver.max_body_kb as usize) << 10;
    let server = ServerSettings {
        name: "v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: max_payload + 64 * 1024,
            max_inflight_count: 1000,
            auth: None,
            external_auth,
            dynamic_filters: true,
        },
    };
    let broker = BrokerConfig {
        id: 0,
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 1000,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        ..BrokerConfig::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            // No shutdown call: it ends with the process.
            if let Err(err) = rumqttd::Broker::new(broker).start() {
                eprintln!("error: the embedded MQTT broker stopped: {err}");
            }
        })
        .context("cannot start the embedded MQTT broker's thread")?;
    Ok(())
}

/// `username:password` lines; blank lines and `#` comments skipped. The
/// file must not be readable by others, like an SSH key.
fn read_users(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("commserver.mqtt_users_file: cannot read {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "commserver.mqtt_users_file: {} holds passwords and is readable by others: chmod 600 it",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("commserver.mqtt_users_file: cannot read {}", path.display()))?;
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, password)) = line.split_once(':') else {
            bail!(
                "commserver.mqtt_users_file: line {} of {} is not username:password",
                n + 1,
                path.display()
            );
        };
        if user.is_empty() || password.is_empty() || user == EMBEDDED_COMMSERVER_USER {
            bail!(
                "commserver.mqtt_users_file: line {} of {} needs a username (not {EMBEDDED_COMMSERVER_USER}) and a password",
                n + 1,
                path.display()
            );
        }
        users.insert(user.to_string(), password.to_string());
    }
    Ok(users)
}
