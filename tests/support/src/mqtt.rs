//! A raw MQTT client for the tests, as a device would be but with every
//! byte under the test's control: no automatic acknowledgements, resends or
//! reconnections, any keep-alive (0 too), any client id (empty too), MQTT
//! 3.1.1 or 5.0, and packets of any size. It speaks through rumqttc's
//! codecs, so it is a real client's wire format.
//!
//! Why one file of this size: one client, every packet it can send or
//! expect, kept together so a test's bytes are all defined in one place.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// 3.1.1 or 5.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1.
    V4,
    /// MQTT 5.0.
    V5,
}

/// What a client asks for when it connects.
#[derive(Clone, Debug)]
pub struct Connect {
    /// The protocol.
    pub version: Version,
    /// The client id (may be empty).
    pub client_id: String,
    /// Clean session (3.1.1) / clean start (5.0).
    pub clean: bool,
    /// Seconds; 0 is none.
    pub keep_alive: u16,
    /// 5.0: seconds the session outlives the connection.
    pub session_expiry: Option<u32>,
    /// Username and password.
    pub login: Option<(String, String)>,
    /// The last will: topic, payload, QoS, retain.
    pub will: Option<(String, Vec<u8>, u8, bool)>,
}

impl Connect {
    /// A 3.1.1 client named `id` with a clean session and keep-alive 30 s.
    pub fn v4(id: &str) -> Connect {
        Connect {
            version: Version::V4,
            client_id: id.into(),
            clean: true,
            keep_alive: 30,
            session_expiry: None,
            login: None,
            will: None,
        }
    }

    /// The same as 5.0.
    pub fn v5(id: &str) -> Connect {
        Connect {
            version: Version::V5,
            ..Connect::v4(id)
        }
    }
}

/// What the broker sent, version aside. Codes are the wire's: 3.1.1's
/// return codes, 5.0's reason codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// CONNACK.
    ConnAck {
        /// Session present.
        session_present: bool,
        /// Return or reason code (0 accepted).
        code: u8,
    },
    /// A delivery.
    Publish {
        /// Topic.
        topic: String,
        /// Payload.
        payload: Vec<u8>,
        /// QoS.
        qos: u8,
        /// Retain flag.
        retain: bool,
        /// DUP flag.
        dup: bool,
        /// Packet id.
        pkid: u16,
    },
    /// PUBACK (5.0 reason code; 0 for 3.1.1).
    PubAck {
        /// Packet id.
        pkid: u16,
        /// Reason code.
        code: u8,
    },
    /// PUBREC.
    PubRec {
        /// Packet id.
        pkid: u16,
        /// Reason code.
        code: u8,
    },
    /// PUBCOMP.
    PubComp(u16),
    /// SUBACK.
    SubAck {
        /// Packet id.
        pkid: u16,
        /// One code per filter.
        codes: Vec<u8>,
    },
    /// UNSUBACK.
    UnsubAck(u16),
    /// PINGRESP.
    PingResp,
    /// DISCONNECT (5.0) with its reason code.
    Disconnect(u8),
    /// Anything else.
    Other(String),
}

/// A connected raw client.
pub struct RawClient {
    stream: TcpStream,
    version: Version,
    buffer: BytesMut,
    closed: bool,
}

fn qos4(qos: u8) -> rumqttc::mqttbytes::QoS {
    match qos {
        0 => rumqttc::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::mqttbytes::QoS::ExactlyOnce,
    }
}

fn qos5(qos: u8) -> rumqttc::v5::mqttbytes::QoS {
    match qos {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

impl RawClient {
    /// Opens the TCP connection and sends CONNECT; the CONNACK is the
    /// first [`RawClient::recv`].
    pub fn open(port: u16, connect: &Connect) -> std::io::Result<RawClient> {
        RawClient::open_at(&format!("127.0.0.1:{port}"), connect)
    }

    /// As [`RawClient::open`], to a broker at `address` (`host:port`).
    pub fn open_at(address: &str, connect: &Connect) -> std::io::Result<RawClient> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        let mut client = RawClient {
            stream,
            version: connect.version,
            buffer: BytesMut::new(),
            closed: false,
        };
        let mut out = BytesMut::new();
        match connect.version {
            Version::V4 => {
                let mut packet = v4::Connect::new(connect.client_id.clone());
                packet.keep_alive = connect.keep_alive;
                packet.clean_session = connect.clean;
                packet.login = connect
                    .login
                    .as_ref()
                    .map(|(u, p)| v4::Login::new(u.clone(), p.clone()));
                packet.last_will = connect
                    .will
                    .as_ref()
                    .map(|(t, p, q, r)| v4::LastWill::new(t.clone(), p.clone(), qos4(*q), *r));
                v4::Packet::Connect(packet)
                    .write(&mut out, usize::MAX)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Version::V5 => {
                let properties = connect.session_expiry.map(|expiry| v5::ConnectProperties {
                    session_expiry_interval: Some(expiry),
                    ..Default::default()
                });
                let packet = v5::Connect {
                    keep_alive: connect.keep_alive,
                    client_id: connect.client_id.clone(),
                    clean_start: connect.clean,
                    properties,
                };
                let will = connect.will.as_ref().map(|(t, p, q, r)| {
                    v5::LastWill::new(t.clone(), p.clone(), qos5(*q), *r, None)
                });
                let login = connect
                    .login
                    .as_ref()
                    .map(|(u, p)| v5::Login::new(u.clone(), p.clone()));
                v5::Packet::Connect(packet, will, login)
                    .write(&mut out, None)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
        .map_err(std::io::Error::other)?;
        client.write_raw(&out)?;
        Ok(client)
    }

    /// Connects and expects CONNACK: its session-present flag and code.
    pub fn connect(port: u16, connect: &Connect) -> Result<(RawClient, bool, u8), String> {
        let mut client = RawClient::open(port, connect).map_err(|e| e.to_string())?;
        match client.recv(Duration::from_secs(20)) {
            Some(Received::ConnAck {
                session_present,
                code,
            }) => Ok((client, session_present, code)),
            other => Err(format!("no CONNACK: {other:?}")),
        }
    }

    /// Writes bytes as they are.
    pub fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn send4(&mut self, packet: v4::Packet) {
        let mut out = BytesMut::new();
        let _ = packet.write(&mut out, usize::MAX);
        let _ = self.write_raw(&out);
    }

    fn send5(&mut self, packet: v5::Packet) {
        let mut out = BytesMut::new();
        let _ = packet.write(&mut out, None);
        let _ = self.write_raw(&out);
    }

    /// PUBLISH (`pkid` ignored at QoS 0).
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
        pkid: u16,
        dup: bool,
    ) {
        let payload = Bytes::copy_from_slice(payload);
        match self.version {
            Version::V4 => {
                let mut p = v4::Publish::from_bytes(topic, qos4(qos), payload);
                p.retain = retain;
                p.pkid = if qos == 0 { 0 } else { pkid };
                p.dup = dup;
                self.send4(v4::Packet::Publish(p));
            }
            Version::V5 => {
                let mut p = v5::Publish::new(topic, qos5(qos), payload, None);
                p.retain = retain;
                p.pkid = if qos == 0 { 0 } else { pkid };
                p.dup = dup;
                self.send5(v5::Packet::Publish(p));
            }
        }
    }

    /// PUBACK of a delivery.
    pub fn puback(&mut self, pkid: u16) {
        match self.version {
            Version::V4 => self.send4(v4::Packet::PubAck(v4::PubAck::new(pkid))),
            Version::V5 => self.send5(v5::Packet::PubAck(v5::PubAck::new(pkid, None))),
        }
    }

    /// PUBREL (QoS 2, second step).
    pub fn pubrel(&mut self, pkid: u16) {
        match self.version {
            Version::V4 => self.send4(v4::Packet::PubRel(v4::PubRel::new(pkid))),
            Version::V5 => self.send5(v5::Packet::PubRel(v5::PubRel::new(pkid, None))),
        }
    }

    /// SUBSCRIBE to filters at QoS each, and wait for its SUBACK: the codes.
    pub fn subscribe(&mut self, pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
        match self.version {
            Version::V4 => {
                let mut s = v4::Subscribe::new_many(
                    filters
                        .iter()
                        .map(|(f, q)| v4::SubscribeFilter::new((*f).to_string(), qos4(*q))),
                );
                s.pkid = pkid;
                self.send4(v4::Packet::Subscribe(s));
            }
            Version::V5 => {
                let mut s = v5::Subscribe::new_many(
                    filters.iter().map(|(f, q)| v5::Filter::new(*f, qos5(*q))),
                    None,
                );
                s.pkid = pkid;
                self.send5(v5::Packet::Subscribe(s));
            }
        }
        match self.expect(Duration::from_secs(10), |r| {
            matches!(r, Received::SubAck { .. })
        }) {
            Some(Received::SubAck { codes, .. }) => codes,
            other => panic!("no SUBACK: {other:?}"),
        }
    }

    /// UNSUBSCRIBE, waiting for its UNSUBACK.
    pub fn unsubscribe(&mut self, pkid: u16, filter: &str) {
        match self.version {
            Version::V4 => {
                let mut u = v4::Unsubscribe::new(filter);
                u.pkid = pkid;
                self.send4(v4::Packet::Unsubscribe(u));
            }
            Version::V5 => {
                let mut u = v5::Unsubscribe::new(filter, None);
                u.pkid = pkid;
                self.send5(v5::Packet::Unsubscribe(u));
            }
        }
        assert!(
            self.expect(Duration::from_secs(10), |r| matches!(
                r,
                Received::UnsubAck(_)
            ))
            .is_some(),
            "no UNSUBACK"
        );
    }

    /// PINGREQ.
    pub fn ping(&mut self) {
        match self.version {
            Version::V4 => self.send4(v4::Packet::PingReq),
            Version::V5 => self.send5(v5::Packet::PingReq(v5::PingReq)),
        }
    }

    /// DISCONNECT (normal: the will is not sent) and close.
    pub fn disconnect(mut self) {
        match self.version {
            Version::V4 => self.send4(v4::Packet::Disconnect),
            Version::V5 => self.send5(v5::Packet::Disconnect(v5::Disconnect {
                reason_code: v5::DisconnectReasonCode::NormalDisconnection,
                properties: None,
            })),
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Closes the socket without DISCONNECT, as a device losing power would.
    pub fn drop_connection(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// The next packet within `timeout`; `None` on timeout or a closed
    /// connection.
    pub fn recv(&mut self, timeout: Duration) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(packet) = self.parse() {
                return Some(packet);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = self.stream.set_read_timeout(Some(left));
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    return None;
                }
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(_) => {
                    self.closed = true;
                    return None;
                }
            }
        }
    }

    /// Whether the connection was found closed by a read.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether the broker closed the connection within `timeout` (other
    /// packets before the close are skipped).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = self.stream.set_read_timeout(Some(left));
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }

    /// Waits for a packet `wanted` accepts, skipping others (and
    /// acknowledging QoS 1 deliveries skipped on the way).
    pub fn expect(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&Received) -> bool,
    ) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let packet = self.recv(left)?;
            if wanted(&packet) {
                return Some(packet);
            }
            if let Received::Publish { qos: 1, pkid, .. } = packet {
                self.puback(pkid);
            }
        }
    }

    /// Deliveries within `timeout` (each QoS 1 one acknowledged): topic and payload.
    pub fn deliveries(&mut self, timeout: Duration) -> Vec<(String, String)> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while let Some(packet) = self.recv(deadline.saturating_duration_since(Instant::now())) {
            if let Received::Publish {
                topic,
                payload,
                qos,
                pkid,
                ..
            } = packet
            {
                if qos == 1 {
                    self.puback(pkid);
                }
                got.push((topic, String::from_utf8_lossy(&payload).into_owned()));
            }
        }
        got
    }

    fn parse(&mut self) -> Option<Received> {
        match self.version {
            Version::V4 => match v4::Packet::read(&mut self.buffer, usize::MAX) {
                Ok(packet) => Some(from4(packet)),
                Err(_) => None,
            },
            Version::V5 => match v5::Packet::read(&mut self.buffer, None) {
                Ok(packet) => Some(from5(packet)),
                Err(_) => None,
            },
        }
    }
}

fn from4(packet: v4::Packet) -> Received {
    match packet {
        v4::Packet::ConnAck(a) => Received::ConnAck {
            session_present: a.session_present,
            code: a.code as u8,
        },
        v4::Packet::Publish(p) => Received::Publish {
            topic: p.topic,
            payload: p.payload.to_vec(),
            qos: p.qos as u8,
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
        },
        v4::Packet::PubAck(a) => Received::PubAck {
            pkid: a.pkid,
            code: 0,
        },
        v4::Packet::PubRec(a) => Received::PubRec {
            pkid: a.pkid,
            code: 0,
        },
        v4::Packet::PubComp(a) => Received::PubComp(a.pkid),
        v4::Packet::SubAck(s) => Received::SubAck {
            pkid: s.pkid,
            codes: s
                .return_codes
                .iter()
                .map(|c| match c {
                    v4::SubscribeReasonCode::Success(q) => *q as u8,
                    v4::SubscribeReasonCode::Failure => 0x80,
                })
                .collect(),
        },
        v4::Packet::UnsubAck(u) => Received::UnsubAck(u.pkid),
        v4::Packet::PingResp => Received::PingResp,
        other => Received::Other(format!("{other:?}")),
    }
}

fn from5(packet: v5::Packet) -> Received {
    match packet {
        v5::Packet::ConnAck(a) => Received::ConnAck {
            session_present: a.session_present,
            code: connack5(a.code),
        },
        v5::Packet::Publish(p) => Received::Publish {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload.to_vec(),
            qos: p.qos as u8,
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
        },
        v5::Packet::PubAck(a) => Received::PubAck {
            pkid: a.pkid,
            code: puback5(a.reason),
        },
        v5::Packet::PubRec(a) => Received::PubRec {
            pkid: a.pkid,
            code: 0,
        },
        v5::Packet::PubComp(a) => Received::PubComp(a.pkid),
        v5::Packet::SubAck(s) => Received::SubAck {
            pkid: s.pkid,
            codes: s.return_codes.iter().map(|c| suback5(*c)).collect(),
        },
        v5::Packet::UnsubAck(u) => Received::UnsubAck(u.pkid),
        v5::Packet::PingResp(_) => Received::PingResp,
        v5::Packet::Disconnect(d) => Received::Disconnect(d.reason_code as u8),
        other => Received::Other(format!("{other:?}")),
    }
}

fn connack5(code: v5::ConnectReturnCode) -> u8 {
    use v5::ConnectReturnCode as C;
    match code {
        C::Success => 0x00,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::ClientIdentifierNotValid => 0x85,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServerUnavailable => 0x88,
        C::ServerBusy => 0x89,
        C::Banned => 0x8A,
        C::PacketTooLarge => 0x95,
        C::QuotaExceeded => 0x97,
        _ => 0xFF,
    }
}

fn puback5(reason: v5::PubAckReason) -> u8 {
    use v5::PubAckReason as R;
    match reason {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    }
}

fn suback5(code: v5::SubscribeReasonCode) -> u8 {
    use v5::SubscribeReasonCode as S;
    match code {
        S::Success(q) => q as u8,
        S::Failure | S::Unspecified => 0x80,
        S::ImplementationSpecific => 0x83,
        S::NotAuthorized => 0x87,
        S::TopicFilterInvalid => 0x8F,
        S::PkidInUse => 0x91,
        S::QuotaExceeded => 0x97,
        S::SharedSubscriptionsNotSupported => 0x9E,
        S::SubscriptionIdNotSupported => 0xA1,
        S::WildcardSubscriptionsNotSupported => 0xA2,
    }
}
