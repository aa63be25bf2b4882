//! MQTT 3.1.1 and 5.0 on the wire, through rumqttc's codecs (already in the
//! tree for the external broker's client), turned into the one set of
//! packets the broker speaks: [`In`] from a client, [`Out`] to it. The
//! protocol version is read from the CONNECT and fixed for the connection;
//! what 3.1.1 cannot say (reason codes on PUBACK, DISCONNECT from the
//! server) is left out when writing it.
//!
//! Why one file of this size: it is the one translation between the two
//! protocol versions' packets and the broker's own; a third of it is the
//! round-trip tests of that translation.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

/// The protocol a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.0.
    V5,
}

/// Quality of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    /// At most once.
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// From its number.
    pub fn from_u8(n: u8) -> Option<QoS> {
        match n {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A message: what PUBLISH carries and wills are made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// Its QoS as published.
    pub qos: QoS,
    /// Whether it is to be retained (on publish) or was (on delivery).
    pub retain: bool,
}

/// A CONNECT, whichever version.
#[derive(Clone, Debug)]
pub struct Connect {
    /// Its version.
    pub version: Version,
    /// The client id (may be empty).
    pub client_id: String,
    /// Clean session (3.1.1) or clean start (5.0).
    pub clean_start: bool,
    /// Seconds; 0 is none.
    pub keep_alive: u16,
    /// How long the session outlives the connection, seconds: 3.1.1's
    /// persistent session is forever, a clean one 0.
    pub session_expiry: u32,
    /// The most QoS 1 messages the client takes unacknowledged.
    pub receive_maximum: u16,
    /// The largest packet the client takes.
    pub max_packet_size: Option<u32>,
    /// Its last will.
    pub will: Option<Message>,
    /// Username and password.
    pub login: Option<(String, String)>,
}

/// One filter of a SUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// The filter.
    pub filter: String,
    /// The QoS asked for.
    pub qos: QoS,
    /// 5.0: not the subscriber's own messages.
    pub no_local: bool,
}

/// What a client sends once connected.
#[derive(Clone, Debug)]
pub enum In {
    /// A PUBLISH.
    Publish {
        /// Its packet id (0 for QoS 0).
        pkid: u16,
        /// Sent again.
        dup: bool,
        /// The message.
        message: Message,
    },
    /// PUBACK of a delivery.
    PubAck(u16),
    /// PUBREC of a delivery (the broker delivers at most QoS 1, so only a
    /// confused client sends it).
    PubRec(u16),
    /// PUBREL of a QoS 2 publish.
    PubRel(u16),
    /// PUBCOMP (as PUBREC).
    PubComp(u16),
    /// A SUBSCRIBE.
    Subscribe {
        /// Its packet id.
        pkid: u16,
        /// The filters.
        filters: Vec<Filter>,
    },
    /// An UNSUBSCRIBE.
    Unsubscribe {
        /// Its packet id.
        pkid: u16,
        /// The filters.
        filters: Vec<String>,
    },
    /// PINGREQ.
    PingReq,
    /// DISCONNECT.
    Disconnect {
        /// 5.0's "disconnect with will message".
        with_will: bool,
        /// 5.0 may change the session's expiry as it leaves.
        session_expiry: Option<u32>,
    },
    /// A second CONNECT, or a packet only a server sends.
    Unexpected(&'static str),
}

/// Why a CONNECT is refused (or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectCode {
    /// Accepted.
    Accepted,
    /// Username or password wrong.
    BadCredentials,
    /// Not allowed to connect.
    NotAuthorized,
    /// The client id is not acceptable.
    BadClientId,
    /// The broker cannot serve now.
    Unavailable,
}

/// How a SUBSCRIBE's filter was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubCode {
    /// Subscribed at this QoS.
    Granted(QoS),
    /// Outside the client's rights.
    NotAuthorized,
    /// Not a valid filter.
    Invalid,
    /// `$share/…`: not supported.
    SharedUnsupported,
}

/// How a PUBLISH was taken (5.0 says; 3.1.1 only acknowledges).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PubCode {
    /// Taken, and someone gets it.
    Success,
    /// Taken; nobody subscribed.
    NoSubscribers,
    /// Outside the client's rights: dropped.
    NotAuthorized,
    /// Not a valid topic: dropped.
    TopicInvalid,
}

/// Why the broker ends a connection (5.0 says so in a DISCONNECT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goodbye {
    /// Another connection took the session.
    SessionTakenOver,
    /// Nothing heard for 1.5 keep-alives.
    KeepAliveTimeout,
    /// A packet past the size limit.
    PacketTooLarge,
    /// Against the protocol.
    ProtocolError,
    /// The device's credentials were revoked.
    NotAuthorized,
    /// Too many messages waiting for it.
    QuotaExceeded,
    /// The broker stops.
    ShuttingDown,
}

/// What the broker sends a client.
#[derive(Clone, Debug)]
pub enum Out {
    /// CONNACK.
    ConnAck {
        /// Whether a session was resumed.
        session_present: bool,
        /// The verdict.
        code: ConnectCode,
        /// 5.0: the id given to a client that sent none.
        assigned_id: Option<String>,
        /// 5.0: the largest packet the broker takes.
        max_packet_size: u32,
    },
    /// A delivery.
    Publish {
        /// Its packet id (0 for QoS 0).
        pkid: u16,
        /// Sent again.
        dup: bool,
        /// The message, at the QoS it is delivered with.
        message: Message,
    },
    /// PUBACK.
    PubAck(u16, PubCode),
    /// PUBREC.
    PubRec(u16, PubCode),
    /// PUBCOMP.
    PubComp(u16),
    /// SUBACK.
    SubAck(u16, Vec<SubCode>),
    /// UNSUBACK.
    UnsubAck(u16, usize),
    /// PINGRESP.
    PingResp,
    /// DISCONNECT (5.0 only; 3.1.1 just closes).
    Disconnect(Goodbye),
}

/// A decoding failure that ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Past the packet size limit.
    #[error("a packet of {0} bytes is past the limit")]
    TooLarge(usize),
    /// The first packet was not a CONNECT of 3.1.1 or 5.0.
    #[error("not an MQTT 3.1.1 or 5.0 CONNECT: {0}")]
    NotConnect(String),
    /// Malformed.
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// Reads the CONNECT at the head of `buffer`: `Ok(None)` until it is whole.
pub fn read_connect(buffer: &mut BytesMut, max: usize) -> Result<Option<Connect>, Error> {
    // The protocol level: after the fixed header, "MQTT" (2 + 4 bytes).
    let Some(header) = fixed_header_len(buffer) else {
        return Ok(None);
    };
    let Some(&level) = buffer.get(header + 6) else {
        return Ok(None);
    };
    match level {
        4 => match v4::Packet::read(buffer, max) {
            Ok(v4::Packet::Connect(c)) => Ok(Some(Connect {
                version: Version::V4,
                session_expiry: if c.clean_session { 0 } else { u32::MAX },
                client_id: c.client_id,
                clean_start: c.clean_session,
                keep_alive: c.keep_alive,
                receive_maximum: u16::MAX,
                max_packet_size: None,
                will: c.last_will.map(|w| Message {
                    topic: w.topic,
                    payload: w.message,
                    qos: qos4(w.qos),
                    retain: w.retain,
                }),
                login: c.login.map(|l| (l.username, l.password)),
            })),
            Ok(other) => Err(Error::NotConnect(format!("{other:?}"))),
            Err(err) => incomplete(err, max),
        },
        5 => match v5::Packet::read(buffer, Some(max as u32)) {
            Ok(v5::Packet::Connect(c, will, login)) => {
                let properties = c.properties.unwrap_or_default();
                Ok(Some(Connect {
                    version: Version::V5,
                    client_id: c.client_id,
                    clean_start: c.clean_start,
                    keep_alive: c.keep_alive,
                    session_expiry: properties.session_expiry_interval.unwrap_or(0),
                    receive_maximum: properties.receive_maximum.unwrap_or(u16::MAX).max(1),
                    max_packet_size: properties.max_packet_size,
                    will: will.map(|w| Message {
                        topic: String::from_utf8_lossy(&w.topic).into_owned(),
                        payload: w.message,
                        qos: qos5(w.qos),
                        retain: w.retain,
                    }),
                    login: login.map(|l| (l.username, l.password)),
                }))
            }
            Ok(other) => Err(Error::NotConnect(format!("{other:?}"))),
            Err(err) => incomplete(err, max),
        },
        other => Err(Error::NotConnect(format!("protocol level {other}"))),
    }
}

/// Reads the next packet at the head of `buffer`: `Ok(None)` until whole.
pub fn read(buffer: &mut BytesMut, version: Version, max: usize) -> Result<Option<In>, Error> {
    if buffer.is_empty() {
        return Ok(None);
    }
    match version {
        Version::V4 => match v4::Packet::read(buffer, max) {
            Ok(packet) => Ok(Some(from_v4(packet))),
            Err(err) => incomplete(err, max),
        },
        Version::V5 => match v5::Packet::read(buffer, Some(max as u32)) {
            Ok(packet) => Ok(Some(from_v5(packet))),
            Err(err) => incomplete(err, max),
        },
    }
}

/// The fixed header's length, once its remaining-length bytes are there.
fn fixed_header_len(buffer: &[u8]) -> Option<usize> {
    for (i, byte) in buffer.iter().enumerate().skip(1).take(4) {
        if byte & 0x80 == 0 {
            return Some(i + 1);
        }
    }
    None
}

fn incomplete<T, E: Into<ReadError>>(err: E, max: usize) -> Result<Option<T>, Error> {
    match err.into() {
        ReadError::Insufficient => Ok(None),
        ReadError::TooLarge(size) => Err(Error::TooLarge(size.max(max + 1))),
        ReadError::Other(why) => Err(Error::Malformed(why)),
    }
}

enum ReadError {
    Insufficient,
    TooLarge(usize),
    Other(String),
}

impl From<rumqttc::mqttbytes::Error> for ReadError {
    fn from(err: rumqttc::mqttbytes::Error) -> Self {
        use rumqttc::mqttbytes::Error as E;
        match err {
            E::InsufficientBytes(_) => ReadError::Insufficient,
            E::PayloadSizeLimitExceeded(size) => ReadError::TooLarge(size),
            other => ReadError::Other(other.to_string()),
        }
    }
}

impl From<rumqttc::v5::mqttbytes::Error> for ReadError {
    fn from(err: rumqttc::v5::mqttbytes::Error) -> Self {
        use rumqttc::v5::mqttbytes::Error as E;
        match err {
            E::InsufficientBytes(_) => ReadError::Insufficient,
            E::PayloadSizeLimitExceeded { pkt_size, .. } => ReadError::TooLarge(pkt_size),
            other => ReadError::Other(other.to_string()),
        }
    }
}

fn qos4(qos: rumqttc::mqttbytes::QoS) -> QoS {
    match qos {
        rumqttc::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn qos5(qos: rumqttc::v5::mqttbytes::QoS) -> QoS {
    match qos {
        rumqttc::v5::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::v5::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn to_qos4(qos: QoS) -> rumqttc::mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => rumqttc::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::mqttbytes::QoS::ExactlyOnce,
    }
}

fn to_qos5(qos: QoS) -> rumqttc::v5::mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn from_v4(packet: v4::Packet) -> In {
    match packet {
        v4::Packet::Publish(p) => In::Publish {
            pkid: p.pkid,
            dup: p.dup,
            message: Message {
                topic: p.topic,
                payload: p.payload,
                qos: qos4(p.qos),
                retain: p.retain,
            },
        },
        v4::Packet::PubAck(a) => In::PubAck(a.pkid),
        v4::Packet::PubRec(a) => In::PubRec(a.pkid),
        v4::Packet::PubRel(a) => In::PubRel(a.pkid),
        v4::Packet::PubComp(a) => In::PubComp(a.pkid),
        v4::Packet::Subscribe(s) => In::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| Filter {
                    filter: f.path,
                    qos: qos4(f.qos),
                    no_local: false,
                })
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => In::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => In::PingReq,
        v4::Packet::Disconnect => In::Disconnect {
            with_will: false,
            session_expiry: None,
        },
        v4::Packet::Connect(_) => In::Unexpected("a second CONNECT"),
        _ => In::Unexpected("a packet only a server sends"),
    }
}

fn from_v5(packet: v5::Packet) -> In {
    match packet {
        v5::Packet::Publish(p) => In::Publish {
            pkid: p.pkid,
            dup: p.dup,
            message: Message {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload,
                qos: qos5(p.qos),
                retain: p.retain,
            },
        },
        v5::Packet::PubAck(a) => In::PubAck(a.pkid),
        v5::Packet::PubRec(a) => In::PubRec(a.pkid),
        v5::Packet::PubRel(a) => In::PubRel(a.pkid),
        v5::Packet::PubComp(a) => In::PubComp(a.pkid),
        v5::Packet::Subscribe(s) => In::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| Filter {
                    filter: f.path,
                    qos: qos5(f.qos),
                    no_local: f.nolocal,
                })
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => In::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => In::PingReq,
        v5::Packet::Disconnect(d) => In::Disconnect {
            with_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
            session_expiry: d.properties.and_then(|p| p.session_expiry_interval),
        },
        v5::Packet::Connect(..) => In::Unexpected("a second CONNECT"),
        v5::Packet::Auth(_) => In::Unexpected("AUTH (extended authentication is not supported)"),
        _ => In::Unexpected("a packet only a server sends"),
    }
}

/// Writes `out` for a client speaking `version`.
pub fn write(out: &Out, version: Version, buffer: &mut BytesMut) {
    // Sizes are bounded by the broker before a packet is written, so the
    // codecs' own limit is only a backstop.
    const NO_LIMIT: usize = usize::MAX;
    let result = match version {
        Version::V4 => match to_v4(out) {
            Some(packet) => packet
                .write(buffer, NO_LIMIT)
                .map(drop)
                .map_err(|e| e.to_string()),
            None => Ok(()),
        },
        // rumqttc 0.25 writes a reason-coded DISCONNECT one byte longer
        // than its remaining length says: written here, with an empty
        // property list (which its reader, unlike MQTT, requires).
        Version::V5 if let Out::Disconnect(why) = out => {
            buffer.extend_from_slice(&[0xE0, 0x02, goodbye_code(*why), 0x00]);
            Ok(())
        }
        Version::V5 => to_v5(out)
            .write(buffer, None)
            .map(drop)
            .map_err(|e| e.to_string()),
    };
    if let Err(err) = result {
        tracing::warn!(cause = %err, packet = ?out, "cannot encode an MQTT packet");
    }
}

fn goodbye_code(why: Goodbye) -> u8 {
    match why {
        Goodbye::SessionTakenOver => 0x8E,
        Goodbye::KeepAliveTimeout => 0x8D,
        Goodbye::PacketTooLarge => 0x95,
        Goodbye::ProtocolError => 0x82,
        Goodbye::NotAuthorized => 0x87,
        Goodbye::QuotaExceeded => 0x97,
        Goodbye::ShuttingDown => 0x8B,
    }
}

fn to_v4(out: &Out) -> Option<v4::Packet> {
    Some(match out {
        Out::ConnAck {
            session_present,
            code,
            ..
        } => v4::Packet::ConnAck(v4::ConnAck::new(
            match code {
                ConnectCode::Accepted => v4::ConnectReturnCode::Success,
                ConnectCode::BadCredentials => v4::ConnectReturnCode::BadUserNamePassword,
                ConnectCode::NotAuthorized => v4::ConnectReturnCode::NotAuthorized,
                ConnectCode::BadClientId => v4::ConnectReturnCode::BadClientId,
                ConnectCode::Unavailable => v4::ConnectReturnCode::ServiceUnavailable,
            },
            *session_present && *code == ConnectCode::Accepted,
        )),
        Out::Publish { pkid, dup, message } => {
            let mut publish = v4::Publish::from_bytes(
                &message.topic,
                to_qos4(message.qos),
                message.payload.clone(),
            );
            publish.pkid = *pkid;
            publish.dup = *dup;
            publish.retain = message.retain;
            v4::Packet::Publish(publish)
        }
        Out::PubAck(pkid, _) => v4::Packet::PubAck(v4::PubAck::new(*pkid)),
        Out::PubRec(pkid, _) => v4::Packet::PubRec(v4::PubRec::new(*pkid)),
        Out::PubComp(pkid) => v4::Packet::PubComp(v4::PubComp::new(*pkid)),
        Out::SubAck(pkid, codes) => v4::Packet::SubAck(v4::SubAck::new(
            *pkid,
            codes
                .iter()
                .map(|code| match code {
                    SubCode::Granted(qos) => v4::SubscribeReasonCode::Success(to_qos4(*qos)),
                    _ => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )),
        Out::UnsubAck(pkid, _) => v4::Packet::UnsubAck(v4::UnsubAck::new(*pkid)),
        Out::PingResp => v4::Packet::PingResp,
        Out::Disconnect(_) => return None,
    })
}

fn to_v5(out: &Out) -> v5::Packet {
    match out {
        Out::ConnAck {
            session_present,
            code,
            assigned_id,
            max_packet_size,
        } => {
            let accepted = *code == ConnectCode::Accepted;
            v5::Packet::ConnAck(v5::ConnAck {
                session_present: *session_present && accepted,
                code: match code {
                    ConnectCode::Accepted => v5::ConnectReturnCode::Success,
                    ConnectCode::BadCredentials => v5::ConnectReturnCode::BadUserNamePassword,
                    ConnectCode::NotAuthorized => v5::ConnectReturnCode::NotAuthorized,
                    ConnectCode::BadClientId => v5::ConnectReturnCode::ClientIdentifierNotValid,
                    ConnectCode::Unavailable => v5::ConnectReturnCode::ServerUnavailable,
                },
                properties: accepted.then(|| v5::ConnAckProperties {
                    session_expiry_interval: None,
                    receive_max: None,
                    // The broker delivers at QoS 1 at most.
                    max_qos: Some(1),
                    retain_available: None,
                    max_packet_size: Some(*max_packet_size),
                    assigned_client_identifier: assigned_id.clone(),
                    topic_alias_max: None,
                    reason_string: None,
                    user_properties: Vec::new(),
                    wildcard_subscription_available: None,
                    subscription_identifiers_available: Some(0),
                    shared_subscription_available: Some(0),
                    server_keep_alive: None,
                    response_information: None,
                    server_reference: None,
                    authentication_method: None,
                    authentication_data: None,
                }),
            })
        }
        Out::Publish { pkid, dup, message } => {
            let mut publish = v5::Publish::new(
                message.topic.as_str(),
                to_qos5(message.qos),
                message.payload.clone(),
                None,
            );
            publish.pkid = *pkid;
            publish.dup = *dup;
            publish.retain = message.retain;
            v5::Packet::Publish(publish)
        }
        Out::PubAck(pkid, code) => v5::Packet::PubAck(v5::PubAck {
            pkid: *pkid,
            reason: match code {
                PubCode::Success => v5::PubAckReason::Success,
                PubCode::NoSubscribers => v5::PubAckReason::NoMatchingSubscribers,
                PubCode::NotAuthorized => v5::PubAckReason::NotAuthorized,
                PubCode::TopicInvalid => v5::PubAckReason::TopicNameInvalid,
            },
            properties: None,
        }),
        Out::PubRec(pkid, code) => v5::Packet::PubRec(v5::PubRec {
            pkid: *pkid,
            reason: match code {
                PubCode::Success => v5::PubRecReason::Success,
                PubCode::NoSubscribers => v5::PubRecReason::NoMatchingSubscribers,
                PubCode::NotAuthorized => v5::PubRecReason::NotAuthorized,
                PubCode::TopicInvalid => v5::PubRecReason::TopicNameInvalid,
            },
            properties: None,
        }),
        Out::PubComp(pkid) => v5::Packet::PubComp(v5::PubComp::new(*pkid, None)),
        Out::SubAck(pkid, codes) => v5::Packet::SubAck(v5::SubAck {
            pkid: *pkid,
            return_codes: codes
                .iter()
                .map(|code| match code {
                    SubCode::Granted(qos) => v5::SubscribeReasonCode::Success(to_qos5(*qos)),
                    SubCode::NotAuthorized => v5::SubscribeReasonCode::NotAuthorized,
                    SubCode::Invalid => v5::SubscribeReasonCode::TopicFilterInvalid,
                    SubCode::SharedUnsupported => {
                        v5::SubscribeReasonCode::SharedSubscriptionsNotSupported
                    }
                })
                .collect(),
            properties: None,
        }),
        Out::UnsubAck(pkid, count) => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid: *pkid,
            reasons: vec![v5::UnsubAckReason::Success; *count],
            properties: None,
        }),
        Out::PingResp => v5::Packet::PingResp(v5::PingResp),
        // Written by `write` itself.
        Out::Disconnect(_) => v5::Packet::PingResp(v5::PingResp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_connect(keep_alive: u16, id: &str) -> BytesMut {
        let mut connect = v4::Connect::new(id);
        connect.keep_alive = keep_alive;
        connect.clean_session = false;
        let mut buffer = BytesMut::new();
        v4::Packet::Connect(connect)
            .write(&mut buffer, usize::MAX)
            .unwrap();
        buffer
    }

    #[test]
    fn a_connect_is_read_whole_or_not_at_all_and_says_its_version() {
        let whole = v4_connect(0, "dev");
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert!(
                read_connect(&mut part, 1024).unwrap().is_none(),
                "cut at {cut}"
            );
        }
        let mut buffer = whole.clone();
        let connect = read_connect(&mut buffer, 1024).unwrap().unwrap();
        assert_eq!(connect.version, Version::V4);
        assert_eq!(
            connect.keep_alive, 0,
            "keep-alive 0 is valid: no keep-alive"
        );
        assert_eq!(
            connect.session_expiry,
            u32::MAX,
            "3.1.1's persistent session"
        );
        assert!(buffer.is_empty());

        let connect5 = v5::Connect {
            keep_alive: 30,
            client_id: "dev5".into(),
            clean_start: true,
            properties: Some(v5::ConnectProperties {
                session_expiry_interval: Some(60),
                ..Default::default()
            }),
        };
        let mut buffer = BytesMut::new();
        v5::Packet::Connect(connect5, None, Some(v5::Login::new("a/b", "secret")))
            .write(&mut buffer, None)
            .unwrap();
        let connect = read_connect(&mut buffer, 1024).unwrap().unwrap();
        assert_eq!(connect.version, Version::V5);
        assert_eq!(connect.session_expiry, 60);
        assert_eq!(connect.login, Some(("a/b".into(), "secret".into())));
    }

    #[test]
    fn oversized_and_foreign_packets_are_refused_before_reading_them() {
        let mut huge = BytesMut::from(&[0x30u8, 0xff, 0xff, 0xff, 0x7f][..]);
        assert!(matches!(
            read(&mut huge, Version::V4, 1 << 20),
            Err(Error::TooLarge(_))
        ));
        let mut http = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert!(read_connect(&mut http, 1024).is_err());
        let mut level3 = v4_connect(10, "old");
        let level_at = fixed_header_len(&level3).unwrap() + 6;
        level3[level_at] = 3;
        assert!(matches!(
            read_connect(&mut level3, 1024),
            Err(Error::NotConnect(_))
        ));
    }

    #[test]
    fn every_answer_reads_back_as_what_was_written() {
        let answers = [
            Out::Disconnect(Goodbye::NotAuthorized),
            Out::PubAck(3, PubCode::NotAuthorized),
            Out::PubAck(4, PubCode::Success),
            Out::PubRec(5, PubCode::Success),
            Out::PubComp(5),
            Out::SubAck(
                6,
                vec![SubCode::Granted(QoS::AtLeastOnce), SubCode::NotAuthorized],
            ),
            Out::UnsubAck(7, 2),
            Out::PingResp,
            Out::ConnAck {
                session_present: true,
                code: ConnectCode::Accepted,
                assigned_id: Some("isms-1".into()),
                max_packet_size: 1 << 20,
            },
        ];
        for out in answers {
            let mut buffer = BytesMut::new();
            write(&out, Version::V5, &mut buffer);
            let read = v5::Packet::read(&mut buffer, None);
            assert!(read.is_ok() && buffer.is_empty(), "{out:?}: {read:?}");
            let mut buffer = BytesMut::new();
            write(&out, Version::V4, &mut buffer);
            if !buffer.is_empty() {
                let read = v4::Packet::read(&mut buffer, usize::MAX);
                assert!(read.is_ok() && buffer.is_empty(), "{out:?}: {read:?}");
            }
        }
    }

    #[test]
    fn what_3_1_1_cannot_say_is_left_out() {
        let mut buffer = BytesMut::new();
        write(
            &Out::Disconnect(Goodbye::SessionTakenOver),
            Version::V4,
            &mut buffer,
        );
        assert!(buffer.is_empty());
        write(
            &Out::Disconnect(Goodbye::SessionTakenOver),
            Version::V5,
            &mut buffer,
        );
        assert_eq!(buffer[0], 0xe0);
        buffer.clear();
        write(
            &Out::SubAck(
                7,
                vec![SubCode::Granted(QoS::AtLeastOnce), SubCode::NotAuthorized],
            ),
            Version::V4,
            &mut buffer,
        );
        assert_eq!(&buffer[..], &[0x90, 4, 0, 7, 1, 0x80]);
    }
}
