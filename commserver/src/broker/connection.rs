//! One client's connection: its CONNECT (in 10 s), its credentials, then
//! packets to the router and the router's answers back, with keep-alive
//! (1.5 times what the client asked; 0 is none, as MQTT says) and bounds
//! on what is read (the packet size) and held (the outbox).

use super::codec::{self, ConnectCode, Goodbye, In, Out, Version};
use super::router::{ConnId, Input};
use super::{Connected, Identity};
use bytes::BytesMut;
use isms_ipc::connection::Scope;
use isms_ipc::resadmin::DeviceLogin;
use isms_ipc::{FailureKind, ServiceKind};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What every connection shares.
pub struct Shared {
    /// The router.
    pub input: mpsc::Sender<Input>,
    /// The kernel, to check credentials with Resadmin.
    pub conn: isms_ipc::Connection,
    /// Whether clients without credentials are let in (from loopback only).
    pub anonymous: bool,
    /// The largest packet read.
    pub max_packet: usize,
    /// The next connection's number.
    pub next_id: AtomicU64,
}

/// Time a client has to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Packets waiting to be written to one client at most.
const OUTBOX: usize = 1024;

/// Serves one connection to its end.
pub async fn serve<S>(stream: S, peer: SocketAddr, id: ConnId, shared: std::sync::Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buffer = BytesMut::with_capacity(4096);
    let connect = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        read_connect(&mut reader, &mut buffer, shared.max_packet),
    )
    .await
    {
        Ok(Ok(connect)) => connect,
        Ok(Err(why)) => return tracing::debug!(%peer, %why, "MQTT connection refused"),
        Err(_) => return tracing::debug!(%peer, "no MQTT CONNECT in time"),
    };
    let version = connect.version;
    let identity = match authenticate(&shared, peer, connect.login.clone()).await {
        Ok(identity) => identity,
        Err(code) => {
            tracing::info!(%peer, client = %connect.client_id, ?code, "MQTT connection refused");
            let mut out = BytesMut::new();
            codec::write(
                &Out::ConnAck {
                    session_present: false,
                    code,
                    assigned_id: None,
                    max_packet_size: shared.max_packet as u32,
                },
                version,
                &mut out,
            );
            let _ = writer.write_all(&out).await;
            let _ = writer.shutdown().await;
            return;
        }
    };
    let keep_alive = match connect.keep_alive {
        0 => None,
        seconds => Some(Duration::from_millis(u64::from(seconds) * 1500)),
    };
    let (outbox, mut outgoing) = mpsc::channel(OUTBOX);
    let connected = Connected {
        id,
        connect,
        identity,
        outbox,
    };
    if shared.input.send(Input::Connect(connected)).await.is_err() {
        return;
    }
    let mut heard = Instant::now();
    let mut out = BytesMut::with_capacity(4096);
    let why = loop {
        let deadline = keep_alive.map(|k| heard + k);
        tokio::select! {
            read = reader.read_buf(&mut buffer) => match read {
                Ok(0) | Err(_) => break None,
                Ok(_) => {
                    heard = Instant::now();
                    match forward(&mut buffer, version, id, &shared).await {
                        Ok(true) => {}
                        Ok(false) => break None,
                        Err(goodbye) => break Some(goodbye),
                    }
                }
            },
            next = outgoing.recv() => {
                let Some(first) = next else { break None };
                // Write what is waiting in one go.
                let mut last = first;
                let mut closing = false;
                loop {
                    if matches!(last, Out::Disconnect(_)) {
                        closing = true;
                    }
                    codec::write(&last, version, &mut out);
                    match outgoing.try_recv() {
                        Ok(next) if !closing => last = next,
                        _ => break,
                    }
                }
                if writer.write_all(&out).await.is_err() {
                    break None;
                }
                out.clear();
                if closing {
                    break None;
                }
            },
            () = sleep_until(deadline) => break Some(Goodbye::KeepAliveTimeout),
        }
    };
    if let Some(goodbye) = why {
        if version == Version::V5 {
            codec::write(&Out::Disconnect(goodbye), version, &mut out);
            let _ = writer.write_all(&out).await;
        }
        tracing::debug!(%peer, ?goodbye, "MQTT connection closed");
    }
    let _ = writer.shutdown().await;
    let _ = shared.input.send(Input::Closed(id)).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Hands the whole packets read to the router: `Ok(false)` after a
/// DISCONNECT, `Err` for a packet that ends the connection.
async fn forward(
    buffer: &mut BytesMut,
    version: Version,
    id: ConnId,
    shared: &Shared,
) -> Result<bool, Goodbye> {
    loop {
        match codec::read(buffer, version, shared.max_packet) {
            Ok(Some(packet)) => {
                let disconnect = matches!(packet, In::Disconnect { .. });
                if shared.input.send(Input::Packet(id, packet)).await.is_err() {
                    return Ok(false);
                }
                if disconnect {
                    return Ok(false);
                }
            }
            Ok(None) => return Ok(true),
            Err(codec::Error::TooLarge(_)) => return Err(Goodbye::PacketTooLarge),
            Err(_) => return Err(Goodbye::ProtocolError),
        }
    }
}

async fn read_connect<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
    max: usize,
) -> Result<codec::Connect, String> {
    loop {
        if let Some(connect) = codec::read_connect(buffer, max).map_err(|e| e.to_string())? {
            return Ok(connect);
        }
        if reader.read_buf(buffer).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed before its CONNECT".into());
        }
    }
}

/// Who the client is: a device by its credentials (Resadmin checks them),
/// or anonymous where allowed.
async fn authenticate(
    shared: &Shared,
    peer: SocketAddr,
    login: Option<(String, String)>,
) -> Result<Identity, ConnectCode> {
    let Some((username, password)) = login else {
        return if shared.anonymous && peer.ip().is_loopback() {
            Ok(Identity::Anonymous)
        } else {
            Err(ConnectCode::NotAuthorized)
        };
    };
    let scope = Scope::platform(Duration::from_secs(5));
    match shared
        .conn
        .call(&scope, DeviceLogin { username, password })
        .await
    {
        Ok(grant) => Ok(Identity::Device {
            project: grant.project,
            device: grant.device,
        }),
        Err(failure) => match failure.kind {
            FailureKind::Unauthenticated | FailureKind::NotFound | FailureKind::Invalid => {
                Err(ConnectCode::BadCredentials)
            }
            _ => {
                tracing::warn!(%failure, service = %ServiceKind::Resadmin, "cannot check MQTT credentials");
                Err(ConnectCode::Unavailable)
            }
        },
    }
}
