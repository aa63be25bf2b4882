//! Links from services on other hosts: the TLS listener, the join key
//! (read again when it is rotated), and one task per link that moves its
//! frames to and from the run loop.
//!
//! A link is a peer like a ZeroMQ connection: the run loop hands its frames
//! to [`crate::Kernel`] under a peer identity that starts with a zero byte
//! ([`is_link`]). libzmq reserves that byte; the `zeromq` crate does not, so
//! the run loop drops any ZeroMQ peer whose identity starts with it, and a
//! local service cannot pose as a link (nor a link's late frames as local).

use bytes::Bytes;
use isms_ipc::Registration;
use isms_ipc::link::{self, Acceptor, JoinKey};
use isms_ipc::zmtp::Limits;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

pub use isms_ipc::link::host_name;

/// How often the join key's file is read for a rotation.
const KEY_CHECK: Duration = Duration::from_secs(1);

/// Handshakes in progress at once; more connections wait in the backlog.
const MAX_HANDSHAKES: usize = 64;

/// Messages waiting to be sent on one link; beyond, messages are dropped
/// rather than stall the kernel (as for a local peer that stops reading).
const LINK_QUEUE: usize = 4096;

/// Where and how the kernel listens for other hosts.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// `host:port` to listen on.
    pub address: String,
    /// The directory of the kernel's certificate and join key.
    pub credentials: PathBuf,
    /// The largest message a link may carry.
    pub max_message: usize,
}

/// Whether `peer` is (or was) a link from another host.
pub fn is_link(peer: &[u8]) -> bool {
    peer.first() == Some(&0)
}

/// Handshakes in progress at once from one address.
const MAX_HANDSHAKES_PER_ADDRESS: usize = 4;

/// Whether a registration that came over a link may stand.
pub fn admissible(registration: &Registration) -> Result<(), String> {
    let service = registration.service;
    if !service.may_join_from_another_host() {
        return Err(format!(
            "a {service} may not join from another host: only Doers and CommServers may"
        ));
    }
    if !registration.instance.starts_with(&format!("{service}@")) {
        return Err(format!(
            "an instance on another host is named {service}@<name>, not `{}`",
            registration.instance
        ));
    }
    Ok(())
}

/// What happened on the links.
#[derive(Debug)]
pub enum Event {
    /// A link proved the join key.
    Joined {
        /// Its peer identity.
        peer: Bytes,
        /// Its address.
        address: String,
    },
    /// A message arrived on a link.
    Message {
        /// From whom.
        peer: Bytes,
        /// Its frames.
        frames: Vec<Bytes>,
    },
    /// A link closed.
    Left {
        /// Whose.
        peer: Bytes,
    },
}

enum Internal {
    Joined {
        peer: Bytes,
        address: String,
        outbound: mpsc::Sender<Vec<Bytes>>,
        generation: u64,
    },
    Message {
        peer: Bytes,
        frames: Vec<Bytes>,
    },
    Left {
        peer: Bytes,
    },
    Rotated {
        generation: u64,
    },
}

struct Link {
    outbound: mpsc::Sender<Vec<Bytes>>,
    generation: u64,
}

/// The kernel's links from other hosts.
pub struct Links {
    events: mpsc::Receiver<Internal>,
    peers: HashMap<Bytes, Link>,
    ready: VecDeque<Event>,
    /// The newest key's generation seen: a link made with an older key
    /// (its handshake began before the rotation) is closed as it arrives.
    generation: u64,
}

/// The current join key and how many times it was replaced.
type CurrentKey = Arc<RwLock<(JoinKey, u64)>>;

impl Links {
    /// Listens on `config.address`, making the kernel's identity and join
    /// key first if this data directory has none.
    pub async fn listen(config: &RemoteConfig) -> anyhow::Result<Links> {
        use anyhow::Context as _;
        let (identity, key) = link::kernel_credentials(&config.credentials).with_context(|| {
            format!(
                "cannot read or make the kernel's join key in {}",
                config.credentials.display()
            )
        })?;
        let limits = Limits {
            max_message: config.max_message,
            ..Limits::default()
        };
        let acceptor = Acceptor::new(&identity, limits).map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(&config.address)
            .await
            .with_context(|| format!("cannot listen for other hosts on {}", config.address))?;
        tracing::info!(address = %config.address, "kernel listening for other hosts (TLS 1.3, join key)");
        let current: CurrentKey = Arc::new(RwLock::new((key, 0)));
        let (events, events_rx) = mpsc::channel(1024);
        tokio::spawn(accept_loop(
            listener,
            acceptor,
            current.clone(),
            events.clone(),
        ));
        tokio::spawn(watch_key(
            config.credentials.join(link::KEY_FILE),
            current,
            events,
        ));
        Ok(Links {
            events: events_rx,
            peers: HashMap::new(),
            ready: VecDeque::new(),
            generation: 0,
        })
    }

    /// Whether `peer` is one of the links.
    pub fn has(&self, peer: &Bytes) -> bool {
        self.peers.contains_key(peer)
    }

    /// Queues a message on a link; `false` if the link is gone.
    pub fn send(&mut self, peer: &Bytes, frames: Vec<Bytes>) -> bool {
        let Some(link) = self.peers.get(peer) else {
            return false;
        };
        match link.outbound.try_send(frames) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("a link stopped reading; dropped a message for it");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.peers.remove(peer);
                false
            }
        }
    }

    /// Closes a link.
    pub fn close(&mut self, peer: &Bytes) {
        // Its task ends when the sender is gone, and reports `Left`.
        self.peers.remove(peer);
    }

    async fn next_event(&mut self) -> Event {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return event;
            }
            let Some(internal) = self.events.recv().await else {
                return std::future::pending().await;
            };
            match internal {
                Internal::Joined { generation, .. } if generation < self.generation => {
                    // Dropping its sender closes it; its `Left` follows.
                    tracing::warn!("closed a link made with a rotated join key");
                }
                Internal::Joined {
                    peer,
                    address,
                    outbound,
                    generation,
                } => {
                    self.peers.insert(
                        peer.clone(),
                        Link {
                            outbound,
                            generation,
                        },
                    );
                    return Event::Joined { peer, address };
                }
                // Frames of a link already closed (refused, rotated) go nowhere.
                Internal::Message { peer, .. } if !self.peers.contains_key(&peer) => {}
                Internal::Message { peer, frames } => return Event::Message { peer, frames },
                Internal::Left { peer } => {
                    self.peers.remove(&peer);
                    return Event::Left { peer };
                }
                Internal::Rotated { generation } => {
                    self.generation = self.generation.max(generation);
                    let old: Vec<Bytes> = self
                        .peers
                        .iter()
                        .filter(|(_, link)| link.generation < generation)
                        .map(|(peer, _)| peer.clone())
                        .collect();
                    if !old.is_empty() {
                        tracing::warn!(
                            links = old.len(),
                            "the join key was rotated: closing the links made with the old one"
                        );
                    }
                    for peer in old {
                        self.peers.remove(&peer);
                        self.ready.push_back(Event::Left { peer });
                    }
                }
            }
        }
    }
}

/// The next event on the links; never, if there are none configured.
pub async fn next(links: &mut Option<Links>) -> Event {
    match links {
        Some(links) => links.next_event().await,
        None => std::future::pending().await,
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Acceptor,
    current: CurrentKey,
    events: mpsc::Sender<Internal>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let per_address: Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>> = Arc::default();
    let mut next_link = 0u64;
    loop {
        let (tcp, address) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(cause = %err, "cannot accept a link");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // One address cannot hold every handshake slot and keep other
        // hosts out.
        let ip = address.ip();
        {
            let mut counts = per_address.lock().unwrap_or_else(|e| e.into_inner());
            let count = counts.entry(ip).or_default();
            if *count >= MAX_HANDSHAKES_PER_ADDRESS {
                tracing::warn!(peer = %address, "refused a link: too many handshakes from this address");
                continue;
            }
            *count += 1;
        }
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        next_link += 1;
        let peer = Bytes::from(format!("\0link-{next_link}"));
        let (acceptor, current, events) = (acceptor.clone(), current.clone(), events.clone());
        let per_address = per_address.clone();
        tokio::spawn(async move {
            let (key, generation) = match current.read() {
                Ok(current) => current.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            let accepted = acceptor.accept(tcp, &key).await;
            drop(permit);
            {
                let mut counts = per_address.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(count) = counts.get_mut(&ip) {
                    *count -= 1;
                    if *count == 0 {
                        counts.remove(&ip);
                    }
                }
            }
            let link = match accepted {
                Ok(link) => link,
                Err(err) => {
                    tracing::warn!(peer = %address, cause = %err, "refused a link from another host");
                    return;
                }
            };
            tracing::info!(peer = %address, "a host joined");
            let (outbound, outbound_rx) = mpsc::channel(LINK_QUEUE);
            let (inbound, mut inbound_rx) = mpsc::channel(256);
            let joined = Internal::Joined {
                peer: peer.clone(),
                address: address.to_string(),
                outbound,
                generation,
            };
            if events.send(joined).await.is_err() {
                return;
            }
            let pump = tokio::spawn(link.pump(inbound, outbound_rx));
            while let Some(frames) = inbound_rx.recv().await {
                let message = Internal::Message {
                    peer: peer.clone(),
                    frames,
                };
                if events.send(message).await.is_err() {
                    return;
                }
            }
            let why = pump.await.unwrap_or_else(|e| e.to_string());
            tracing::warn!(peer = %address, cause = %why, "a link from another host closed");
            let _ = events.send(Internal::Left { peer }).await;
        });
    }
}

/// Reads the key file every [`KEY_CHECK`]; a new key replaces the current
/// one and closes the links made with the old.
async fn watch_key(path: PathBuf, current: CurrentKey, events: mpsc::Sender<Internal>) {
    let mut check = tokio::time::interval(KEY_CHECK);
    loop {
        check.tick().await;
        let Ok(Ok(key)) = std::fs::read_to_string(&path).map(|text| text.parse::<JoinKey>()) else {
            continue;
        };
        let generation = {
            let Ok(mut current) = current.write() else {
                return;
            };
            if current.0 == key {
                continue;
            }
            current.1 += 1;
            current.0 = key;
            current.1
        };
        tracing::warn!(file = %path.display(), "the join key changed");
        if events.send(Internal::Rotated { generation }).await.is_err() {
            return;
        }
    }
}
