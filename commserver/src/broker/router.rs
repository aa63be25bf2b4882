//! The broker's state, owned by one task: connections, sessions and their
//! subscriptions, in-flight and queued deliveries, retained messages, wills.
//! Connections send it what their clients say; it answers through each
//! connection's bounded outbox.
//!
//! A message that must outlive a crash — one a trigger runs, one queued for
//! a persistent session, a retained one — is written to the store first and
//! acknowledged to its publisher (PUBACK, PUBREC, or the platform's own
//! publish returning) only once the commit is on disk. Commits answer in
//! order, and a message needing none waits behind those in flight, so
//! deliveries keep each publisher's order.
//!
//! Why one file of this size: it is the broker's one state machine;
//! sessions, deliveries, retained messages and wills are changed together by
//! each packet (its behaviour is tested beside Mosquitto in tests/e2e/broker.rs).

use super::codec::{
    ConnectCode, Filter, Goodbye, In, Message, Out, PubCode, QoS, SubCode, Version,
};
use super::{Connected, Identity, Stats};
use crate::mqtt::jobs_for;
use crate::mqtt::queue::JobQueue;
use crate::routes::Routes;
use crate::store::{SessionRow, Store, Write, Written};
use isms_ipc::topic;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A connection's number.
pub type ConnId = u64;

/// What the router is told.
pub enum Input {
    /// A client connected and proved who it is.
    Connect(Connected),
    /// A packet from a connected client.
    Packet(ConnId, In),
    /// A connection ended.
    Closed(ConnId),
    /// The platform publishes (Doees, replies): answered once durable.
    Publish(Message, oneshot::Sender<Result<(), String>>),
    /// A commit the router waited for, in order.
    Committed(Box<Pending>, anyhow::Result<Written>),
    /// A device's credentials were revoked (`None`: every device of the project).
    Revoke(isms_ipc::ProjectName, Option<String>),
    /// The triggers or the namespaces changed.
    RoutesChanged,
    /// The trigger queue has room again.
    Room,
    /// Time passed: expire sessions.
    Tick,
}

/// What waits for a commit, with what to do once it is on disk.
pub enum Pending {
    /// A publish.
    Publish {
        /// Who published it.
        from: From,
        /// Sessions to deliver it to, and whether each copy was stored.
        targets: Vec<(String, QoS, bool)>,
        /// The message.
        message: Message,
    },
    /// A SUBSCRIBE, answered once its session is saved.
    Subscribed {
        /// The connection.
        conn: ConnId,
        /// The SUBACK.
        ack: Out,
        /// Retained messages to send after it.
        retained: Vec<(Message, QoS)>,
    },
}

/// Who a publish came from.
pub enum From {
    /// A client, with the packet id to acknowledge.
    Client {
        /// The connection.
        conn: ConnId,
        /// The packet id.
        pkid: u16,
        /// Its QoS.
        qos: QoS,
        /// The session's key (for no-local).
        key: String,
    },
    /// The platform.
    Platform(Option<oneshot::Sender<Result<(), String>>>),
}

/// A delivery waiting for, or in, a client's window.
#[derive(Clone, Debug)]
struct Delivery {
    message: Message,
    /// Its row in the store, for a persistent session.
    row: Option<u64>,
    dup: bool,
}

struct Session {
    identity: Identity,
    expiry: u32,
    subscriptions: BTreeMap<String, (QoS, bool)>,
    conn: Option<ConnId>,
    inflight: BTreeMap<u16, Delivery>,
    queue: VecDeque<Delivery>,
    next_pkid: u16,
    gone_since: Option<Instant>,
}

impl Session {
    fn new(identity: Identity, expiry: u32) -> Session {
        Session {
            identity,
            expiry,
            subscriptions: BTreeMap::new(),
            conn: None,
            inflight: BTreeMap::new(),
            queue: VecDeque::new(),
            next_pkid: 0,
            gone_since: None,
        }
    }

    fn persistent(&self) -> bool {
        self.expiry > 0
    }

    fn row(&self, key: &str) -> SessionRow {
        SessionRow {
            key: key.to_string(),
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(f, (q, n))| (f.clone(), *q, *n))
                .collect(),
            expiry: self.expiry,
        }
    }

    fn pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if !self.inflight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }
}

struct Conn {
    key: String,
    version: Version,
    outbox: mpsc::Sender<Out>,
    will: Option<Message>,
    window: usize,
    max_packet: usize,
    /// QoS 2 publishes received (PUBREC sent), waiting for PUBREL.
    received: HashSet<u16>,
}

/// Bounds and choices of the router.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The largest packet taken.
    pub max_packet: usize,
    /// QoS 1 deliveries unacknowledged per client at most.
    pub max_inflight: usize,
    /// Deliveries queued per session at most; later ones are dropped.
    pub max_queued: usize,
}

/// The router's state.
pub struct Router {
    limits: Limits,
    store: Store,
    routes: Arc<Routes>,
    jobs: Arc<JobQueue>,
    stats: Arc<Stats>,
    sessions: HashMap<String, Session>,
    conns: HashMap<ConnId, Conn>,
    retained: BTreeMap<String, Message>,
    /// Commits in flight, in order, to the task that waits for them.
    commits: mpsc::UnboundedSender<(oneshot::Receiver<anyhow::Result<Written>>, Box<Pending>)>,
    in_flight_commits: usize,
    /// Publishes for triggers held back while the trigger queue is full.
    parked: VecDeque<(Write, Box<Pending>)>,
}

impl Router {
    /// The router, with what the store kept.
    pub fn new(
        limits: Limits,
        store: Store,
        routes: Arc<Routes>,
        jobs: Arc<JobQueue>,
        stats: Arc<Stats>,
        saved: crate::store::Saved,
        input: mpsc::UnboundedSender<Input>,
    ) -> Router {
        let (commits, waiting) = mpsc::unbounded_channel();
        tokio::spawn(forward_commits(waiting, input));
        let mut sessions = HashMap::new();
        for row in saved.sessions {
            let Some(identity) = Identity::from_key(&row.key) else {
                continue;
            };
            let mut session = Session::new(identity, row.expiry);
            session.subscriptions = row
                .subscriptions
                .into_iter()
                .map(|(f, q, n)| (f, (q, n)))
                .collect();
            session.gone_since = Some(Instant::now());
            sessions.insert(row.key, session);
        }
        for (key, row, message) in saved.queued {
            match sessions.get_mut(&key) {
                Some(session) => session.queue.push_back(Delivery {
                    message,
                    row: Some(row),
                    dup: false,
                }),
                None => store.delivered(vec![row]),
            }
        }
        let retained = saved
            .retained
            .into_iter()
            .map(|m| (m.topic.clone(), m))
            .collect();
        Router {
            limits,
            store,
            routes,
            jobs,
            stats,
            sessions,
            conns: HashMap::new(),
            retained,
            commits,
            in_flight_commits: 0,
            parked: VecDeque::new(),
        }
    }

    /// Handles one input.
    pub fn handle(&mut self, input: Input) {
        match input {
            Input::Connect(connected) => self.connect(connected),
            Input::Packet(conn, packet) => self.packet(conn, packet),
            Input::Closed(conn) => self.closed(conn),
            Input::Publish(message, reply) => {
                self.publish(From::Platform(Some(reply)), message);
            }
            Input::Committed(pending, result) => {
                self.in_flight_commits -= 1;
                self.committed(*pending, result);
            }
            Input::Revoke(project, device) => self.revoke(&project, device.as_deref()),
            Input::RoutesChanged => self.recheck_rights(),
            Input::Room => self.unpark(),
            Input::Tick => self.expire(),
        }
        self.stats
            .clients
            .store(self.conns.len() as u64, Ordering::Relaxed);
        self.stats
            .sessions
            .store(self.sessions.len() as u64, Ordering::Relaxed);
        self.stats
            .retained
            .store(self.retained.len() as u64, Ordering::Relaxed);
    }

    fn send(&mut self, conn: ConnId, packet: Out) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.outbox.try_send(packet).is_err() {
            // A client that does not read its messages: let it go rather
            // than hold more for it (its session keeps what is queued).
            tracing::debug!(conn, "an MQTT client is not reading; disconnecting it");
            self.stats.slow.fetch_add(1, Ordering::Relaxed);
            self.detach(conn, true);
        }
    }

    fn connect(&mut self, connected: Connected) {
        let Connected {
            id,
            connect,
            identity,
            outbox,
        } = connected;
        let max_packet = self.limits.max_packet;
        let refuse = |code: ConnectCode| {
            let _ = outbox.try_send(Out::ConnAck {
                session_present: false,
                code,
                assigned_id: None,
                max_packet_size: max_packet as u32,
            });
            let _ = outbox.try_send(Out::Disconnect(Goodbye::NotAuthorized));
        };
        if let Some(will) = &connect.will
            && (!valid(&will.topic, false) || !self.may_publish(&identity, &will.topic))
        {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return refuse(ConnectCode::NotAuthorized);
        }
        let mut assigned_id = None;
        let client_id = if connect.client_id.is_empty() {
            if connect.version == Version::V4 && !connect.clean_start {
                // 3.1.1 §3.1.3-8: a zero-byte id needs a clean session.
                return refuse(ConnectCode::BadClientId);
            }
            let id = format!("isms-{}", isms_ipc::InvocationId::generate());
            if connect.version == Version::V5 {
                assigned_id = Some(id.clone());
            }
            id
        } else {
            connect.client_id.clone()
        };
        let key = identity.session_key(&client_id);
        // One connection per session: a newer one takes it over.
        if let Some(old) = self.sessions.get(&key).and_then(|s| s.conn) {
            self.send(old, Out::Disconnect(Goodbye::SessionTakenOver));
            if let Some(c) = self.conns.get_mut(&old) {
                // Taken over: the will stays unsent, as 3.1.1 and 5.0 allow.
                c.will = None;
            }
            self.detach(old, false);
        }
        let resumed = !connect.clean_start && self.sessions.contains_key(&key);
        if !resumed && let Some(old) = self.sessions.remove(&key) {
            self.forget(&key, old);
        }
        let session = self
            .sessions
            .entry(key.clone())
            .or_insert_with(|| Session::new(identity.clone(), connect.session_expiry));
        session.expiry = connect.session_expiry;
        session.identity = identity;
        session.conn = Some(id);
        session.gone_since = None;
        if session.persistent() {
            self.store.save_session(session.row(&key));
        }
        let window = usize::from(connect.receive_maximum)
            .min(self.limits.max_inflight)
            .max(1);
        self.conns.insert(
            id,
            Conn {
                key: key.clone(),
                version: connect.version,
                outbox,
                will: connect.will,
                window,
                max_packet: connect
                    .max_packet_size
                    .map_or(usize::MAX, |m| m as usize)
                    .min(self.limits.max_packet + 8),
                received: HashSet::new(),
            },
        );
        self.send(
            id,
            Out::ConnAck {
                session_present: resumed,
                code: ConnectCode::Accepted,
                assigned_id,
                max_packet_size: self.limits.max_packet as u32,
            },
        );
        // What was in flight goes again, marked as such, then the queue.
        if let Some(session) = self.sessions.get_mut(&key) {
            let again: Vec<(u16, Delivery)> = session
                .inflight
                .iter_mut()
                .map(|(pkid, d)| {
                    d.dup = true;
                    (*pkid, d.clone())
                })
                .collect();
            for (pkid, delivery) in again {
                self.send(
                    id,
                    Out::Publish {
                        pkid,
                        dup: true,
                        message: delivery.message,
                    },
                );
            }
        }
        self.pump(&key);
    }

    fn packet(&mut self, conn: ConnId, packet: In) {
        let Some(key) = self.conns.get(&conn).map(|c| c.key.clone()) else {
            return;
        };
        match packet {
            In::Publish { pkid, dup, message } => {
                let repeated = self
                    .conns
                    .get(&conn)
                    .is_some_and(|c| c.received.contains(&pkid));
                if dup && message.qos == QoS::ExactlyOnce && repeated {
                    return self.send(conn, Out::PubRec(pkid, PubCode::Success));
                }
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                if !valid(&message.topic, false) || message.topic.starts_with('$') {
                    return self.refuse_publish(conn, pkid, message.qos, PubCode::TopicInvalid);
                }
                let allowed = self
                    .sessions
                    .get(&key)
                    .is_some_and(|s| self.may_publish(&s.identity, &message.topic));
                if !allowed {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    return self.refuse_publish(conn, pkid, message.qos, PubCode::NotAuthorized);
                }
                let qos = message.qos;
                self.publish(
                    From::Client {
                        conn,
                        pkid,
                        qos,
                        key,
                    },
                    message,
                );
            }
            In::PubAck(pkid) | In::PubComp(pkid) => {
                let delivered = self
                    .sessions
                    .get_mut(&key)
                    .and_then(|s| s.inflight.remove(&pkid))
                    .and_then(|d| d.row);
                if let Some(row) = delivered {
                    self.store.delivered(vec![row]);
                }
                self.pump(&key);
            }
            In::PubRec(pkid) => {
                // Deliveries are QoS 1 at most; answer so the client moves on.
                self.send(conn, Out::PubComp(pkid));
            }
            In::PubRel(pkid) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.received.remove(&pkid);
                }
                self.send(conn, Out::PubComp(pkid));
            }
            In::Subscribe { pkid, filters } => self.subscribe(conn, &key, pkid, filters),
            In::Unsubscribe { pkid, filters } => {
                let count = filters.len();
                if let Some(session) = self.sessions.get_mut(&key) {
                    for filter in &filters {
                        session.subscriptions.remove(filter);
                    }
                    if session.persistent() {
                        self.store.save_session(session.row(&key));
                    }
                }
                self.send(conn, Out::UnsubAck(pkid, count));
            }
            In::PingReq => self.send(conn, Out::PingResp),
            In::Disconnect {
                with_will,
                session_expiry,
            } => {
                if !with_will && let Some(c) = self.conns.get_mut(&conn) {
                    c.will = None;
                }
                if let Some(expiry) = session_expiry
                    && let Some(session) = self.sessions.get_mut(&key)
                {
                    session.expiry = expiry;
                }
            }
            In::Unexpected(what) => {
                tracing::debug!(conn, what, "an MQTT client broke the protocol");
                self.send(conn, Out::Disconnect(Goodbye::ProtocolError));
            }
        }
    }

    fn refuse_publish(&mut self, conn: ConnId, pkid: u16, qos: QoS, code: PubCode) {
        let version = self.conns.get(&conn).map(|c| c.version);
        match (qos, version) {
            // 3.1.1 cannot say why: a topic it may not use is acknowledged
            // and dropped (as Mosquitto does); an invalid one ends the connection.
            (_, Some(Version::V4)) if code == PubCode::TopicInvalid => {
                self.send(conn, Out::Disconnect(Goodbye::ProtocolError));
            }
            (QoS::AtMostOnce, _) => {}
            (QoS::AtLeastOnce, _) => self.send(conn, Out::PubAck(pkid, code)),
            (QoS::ExactlyOnce, _) => self.send(conn, Out::PubRec(pkid, code)),
        }
    }

    fn subscribe(&mut self, conn: ConnId, key: &str, pkid: u16, filters: Vec<Filter>) {
        let Some(identity) = self.sessions.get(key).map(|s| s.identity.clone()) else {
            return;
        };
        let mut codes = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        for filter in filters {
            let code = if filter.filter.starts_with("$share/") {
                SubCode::SharedUnsupported
            } else if !valid(&filter.filter, true) {
                SubCode::Invalid
            } else if !self.may_subscribe(&identity, &filter.filter) {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                SubCode::NotAuthorized
            } else {
                let qos = filter.qos.min(QoS::AtLeastOnce);
                if let Some(session) = self.sessions.get_mut(key) {
                    session
                        .subscriptions
                        .insert(filter.filter.clone(), (qos, filter.no_local));
                }
                retained.extend(
                    self.retained
                        .values()
                        .filter(|m| topic::matches(&filter.filter, &m.topic))
                        .map(|m| (m.clone(), qos)),
                );
                SubCode::Granted(qos)
            };
            codes.push(code);
        }
        let pending = Pending::Subscribed {
            conn,
            ack: Out::SubAck(pkid, codes),
            retained,
        };
        match self.sessions.get(key).filter(|s| s.persistent()) {
            // A persistent session's subscriptions are on disk before the SUBACK.
            Some(session) => {
                self.store.save_session(session.row(key));
                self.commit(Write::default(), pending);
            }
            None => self.after_commits(pending),
        }
    }

    /// Routes a message: to the triggers, to the sessions subscribed, and
    /// to the retained set; durable first where it must be.
    fn publish(&mut self, from: From, message: Message) {
        let own = match &from {
            From::Client { key, .. } => Some(key.clone()),
            From::Platform(_) => None,
        };
        let jobs = jobs_for(&self.routes, &message.topic, &message.payload);
        let mut targets = Vec::new();
        let mut copies = Vec::new();
        for (key, session) in &self.sessions {
            let mut granted: Option<QoS> = None;
            for (filter, (qos, no_local)) in &session.subscriptions {
                if *no_local && own.as_deref() == Some(key.as_str()) {
                    continue;
                }
                if topic::matches(filter, &message.topic) {
                    granted = Some(granted.map_or(*qos, |g| g.max(*qos)));
                }
            }
            let Some(granted) = granted else { continue };
            let qos = granted.min(message.qos);
            let stored = session.persistent() && qos == QoS::AtLeastOnce;
            if stored {
                copies.push((
                    key.clone(),
                    Message {
                        qos,
                        retain: false,
                        ..message.clone()
                    },
                ));
            }
            targets.push((key.clone(), qos, stored));
        }
        let retained = message.retain.then(|| {
            (
                message.topic.clone(),
                (!message.payload.is_empty()).then(|| message.clone()),
            )
        });
        let has_jobs = !jobs.is_empty();
        let write = Write {
            jobs,
            copies,
            retained,
        };
        let pending = Pending::Publish {
            from,
            targets,
            message,
        };
        if write.jobs.is_empty() && write.copies.is_empty() && write.retained.is_none() {
            self.after_commits(pending);
        } else if has_jobs && (!self.parked.is_empty() || !self.jobs.has_room()) {
            // Backpressure: unacknowledged until the triggers catch up.
            self.parked.push_back((write, Box::new(pending)));
        } else {
            self.commit(write, pending);
        }
    }

    fn commit(&mut self, write: Write, pending: Pending) {
        let (tx, rx) = oneshot::channel();
        self.store.write_then(write, tx);
        self.in_flight_commits += 1;
        let _ = self.commits.send((rx, Box::new(pending)));
    }

    /// Runs `pending` now, or after the commits in flight (keeping order).
    fn after_commits(&mut self, pending: Pending) {
        if self.in_flight_commits == 0 {
            return self.committed(
                pending,
                Ok(Written {
                    jobs: Vec::new(),
                    copies: Vec::new(),
                }),
            );
        }
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(Written {
            jobs: Vec::new(),
            copies: Vec::new(),
        }));
        self.in_flight_commits += 1;
        let _ = self.commits.send((rx, Box::new(pending)));
    }

    fn unpark(&mut self) {
        while self.jobs.has_room()
            && let Some((write, pending)) = self.parked.pop_front()
        {
            self.commit(write, *pending);
        }
    }

    fn committed(&mut self, pending: Pending, result: anyhow::Result<Written>) {
        match pending {
            Pending::Subscribed {
                conn,
                ack,
                retained,
            } => {
                self.send(conn, ack);
                let Some(key) = self.conns.get(&conn).map(|c| c.key.clone()) else {
                    return;
                };
                for (message, qos) in retained {
                    self.deliver(&key, Message { qos, ..message }, None);
                }
            }
            Pending::Publish {
                from,
                targets,
                message,
            } => {
                let written = match result {
                    Ok(written) => written,
                    Err(err) => {
                        // Unacknowledged: the client sends it again.
                        tracing::error!(cause = %err, topic = %message.topic, "cannot record an MQTT message");
                        if let From::Platform(Some(reply)) = from {
                            let _ = reply.send(Err(err.to_string()));
                        }
                        return;
                    }
                };
                let code = if targets.is_empty() && written.jobs.is_empty() {
                    PubCode::NoSubscribers
                } else {
                    PubCode::Success
                };
                match from {
                    From::Client {
                        conn, pkid, qos, ..
                    } => match qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => {
                            self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                            self.send(conn, Out::PubAck(pkid, code));
                        }
                        QoS::ExactlyOnce => {
                            self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                            if let Some(c) = self.conns.get_mut(&conn) {
                                c.received.insert(pkid);
                            }
                            self.send(conn, Out::PubRec(pkid, code));
                        }
                    },
                    From::Platform(reply) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(Ok(()));
                        }
                    }
                }
                if message.retain {
                    if message.payload.is_empty() {
                        self.retained.remove(&message.topic);
                    } else {
                        self.retained.insert(message.topic.clone(), message.clone());
                    }
                }
                self.jobs.recorded(written.jobs);
                let mut rows = written.copies.into_iter();
                for (key, qos, stored) in targets {
                    let row = if stored { rows.next() } else { None };
                    let copy = Message {
                        qos,
                        retain: false,
                        ..message.clone()
                    };
                    self.deliver(&key, copy, row);
                }
            }
        }
    }

    /// Hands a message to a session: sent now if its window has room, else
    /// queued (QoS 1, bounded) or dropped (QoS 0 while away).
    fn deliver(&mut self, key: &str, message: Message, row: Option<u64>) {
        // A stored copy no one will get is done with.
        let forget = |store: &Store, row: Option<u64>| {
            if let Some(row) = row {
                store.delivered(vec![row]);
            }
        };
        let Some(session) = self.sessions.get_mut(key) else {
            return forget(&self.store, row);
        };
        // 5.0: a client says what it takes; what is larger is not sent.
        let max_packet = session
            .conn
            .and_then(|conn| self.conns.get(&conn))
            .map_or(usize::MAX, |c| c.max_packet);
        let too_large = message.payload.len() + message.topic.len() + 16 > max_packet;
        let full = session.queue.len() >= self.limits.max_queued;
        match (session.conn, message.qos) {
            (None, QoS::AtMostOnce) => return,
            _ if too_large => {}
            (Some(conn), QoS::AtMostOnce) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                let packet = Out::Publish {
                    pkid: 0,
                    dup: false,
                    message,
                };
                return self.send(conn, packet);
            }
            _ if full => {}
            (conn, _) => {
                session.queue.push_back(Delivery {
                    message,
                    row,
                    dup: false,
                });
                if conn.is_some() {
                    self.pump(key);
                }
                return;
            }
        }
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        forget(&self.store, row);
    }

    /// Sends queued QoS 1 deliveries while the client's window has room.
    fn pump(&mut self, key: &str) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let Some(conn) = session.conn else { return };
        let Some(window) = self.conns.get(&conn).map(|c| c.window) else {
            return;
        };
        let mut out = Vec::new();
        while session.inflight.len() < window
            && let Some(delivery) = session.queue.pop_front()
        {
            let pkid = session.pkid();
            out.push(Out::Publish {
                pkid,
                dup: delivery.dup,
                message: delivery.message.clone(),
            });
            session.inflight.insert(pkid, delivery);
        }
        self.stats
            .delivered
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        for packet in out {
            self.send(conn, packet);
        }
    }

    fn closed(&mut self, conn: ConnId) {
        self.detach(conn, true);
    }

    /// A connection ends: its will goes out unless cleared, its session
    /// stays (persistent) or goes.
    fn detach(&mut self, conn: ConnId, with_will: bool) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&c.key) else {
            return;
        };
        if session.conn == Some(conn) {
            session.conn = None;
            session.gone_since = Some(Instant::now());
            // What was in flight goes again on the next connection.
            let inflight = std::mem::take(&mut session.inflight);
            for (_, mut delivery) in inflight.into_iter().rev() {
                delivery.dup = true;
                session.queue.push_front(delivery);
            }
            if !session.persistent()
                && let Some(session) = self.sessions.remove(&c.key)
            {
                self.forget(&c.key, session);
            }
        }
        if with_will && let Some(will) = c.will {
            self.publish(From::Platform(None), will);
        }
    }

    /// Drops a session's stored state.
    fn forget(&mut self, key: &str, session: Session) {
        let rows: Vec<u64> = session
            .inflight
            .values()
            .chain(session.queue.iter())
            .filter_map(|d| d.row)
            .collect();
        self.store.delivered(rows);
        if session.persistent() {
            self.store.drop_session(key.to_string());
        }
    }

    fn revoke(&mut self, project: &isms_ipc::ProjectName, device: Option<&str>) {
        let revoked = |identity: &Identity| match identity {
            Identity::Device {
                project: p,
                device: d,
            } => p == project && device.is_none_or(|device| device == d.as_str()),
            _ => false,
        };
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                self.sessions
                    .get(&c.key)
                    .is_some_and(|s| revoked(&s.identity))
            })
            .map(|(&id, _)| id)
            .collect();
        for conn in conns {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.will = None;
            }
            self.send(conn, Out::Disconnect(Goodbye::NotAuthorized));
            self.detach(conn, false);
        }
        let keys: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| revoked(&s.identity))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(session) = self.sessions.remove(&key) {
                self.forget(&key, session);
            }
        }
    }

    /// Grants changed: subscriptions outside a device's namespaces now go.
    fn recheck_rights(&mut self) {
        let mut changed = Vec::new();
        let routes = self.routes.clone();
        for (key, session) in &mut self.sessions {
            let identity = session.identity.clone();
            let before = session.subscriptions.len();
            session
                .subscriptions
                .retain(|filter, _| identity.may_subscribe(&routes, filter));
            if session.subscriptions.len() != before && session.persistent() {
                changed.push(session.row(key));
            }
        }
        for row in changed {
            self.store.save_session(row);
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.conn.is_none()
                    && s.expiry != u32::MAX
                    && s.gone_since.is_some_and(|since| {
                        now.duration_since(since) >= Duration::from_secs(u64::from(s.expiry))
                    })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            if let Some(session) = self.sessions.remove(&key) {
                self.forget(&key, session);
            }
        }
    }

    fn may_publish(&self, identity: &Identity, topic: &str) -> bool {
        identity.may_publish(&self.routes, topic)
    }

    fn may_subscribe(&self, identity: &Identity, filter: &str) -> bool {
        identity.may_subscribe(&self.routes, filter)
    }
}

/// A valid topic (`filter: false`) or filter: the `$` of the broker's own
/// topics aside, as the triggers' own check.
fn valid(topic: &str, filter: bool) -> bool {
    let rest = topic.strip_prefix('$').unwrap_or(topic);
    !rest.is_empty() && topic::check(rest, filter).is_ok()
}

/// Waits for each commit in turn and hands it back to the router, so
/// results arrive in the order the commits were made.
async fn forward_commits(
    mut waiting: mpsc::UnboundedReceiver<(
        oneshot::Receiver<anyhow::Result<Written>>,
        Box<Pending>,
    )>,
    router: mpsc::UnboundedSender<Input>,
) {
    while let Some((rx, pending)) = waiting.recv().await {
        let result = rx
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the MQTT store's writer stopped")));
        if router.send(Input::Committed(pending, result)).is_err() {
            return;
        }
    }
}
