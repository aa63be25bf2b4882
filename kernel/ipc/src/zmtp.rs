//! A bounded ZMTP 3.0 peer (the ZeroMQ wire protocol, NULL mechanism, DEALER
//! socket type) for the link between the Doer and its Workers.
//!
//! Why not the `zeromq` crate here: its decoder reserves whatever frame length
//! the peer declares, and the peer of this link runs user code. A Doee could
//! write a frame header claiming 2^62 bytes and abort the Doer. This peer
//! refuses any frame, message or frame count beyond [`Limits`] before
//! allocating for it. It interoperates with any ZeroMQ DEALER; a test talks
//! to the `zeromq` crate.
//!
//! The codec is a plain state machine over bytes; [`BlockingLink`] (inside
//! the Worker, no async runtime) and [`AsyncLink`] (in the Doer) only move
//! bytes in and out of it.

use bytes::{Buf, Bytes, BytesMut};
use std::io::{self, Read, Write};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GREETING_LEN: usize = 64;
const FLAG_MORE: u8 = 0b001;
const FLAG_LONG: u8 = 0b010;
const FLAG_COMMAND: u8 = 0b100;

/// Upper bounds on what a peer may send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes in one message, all frames together.
    pub max_message: usize,
    /// Frames in one message.
    pub max_frames: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 64 << 20,
            max_frames: 8,
        }
    }
}

/// Why a link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The socket failed or closed.
    #[error("link I/O: {0}")]
    Io(#[from] io::Error),
    /// The peer broke the protocol or a limit.
    #[error("peer violated ZMTP: {0}")]
    Protocol(String),
}

fn violation(what: impl Into<String>) -> LinkError {
    LinkError::Protocol(what.into())
}

/// Our greeting: ZMTP 3.0, NULL mechanism, not a server.
fn greeting() -> [u8; GREETING_LEN] {
    let mut g = [0u8; GREETING_LEN];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3; // major
    g[11] = 0; // minor
    g[12..16].copy_from_slice(b"NULL");
    g
}

fn check_greeting(g: &[u8]) -> Result<(), LinkError> {
    if g[0] != 0xff || g[9] & 1 != 1 {
        return Err(violation("bad greeting signature"));
    }
    if g[10] < 3 {
        return Err(violation(format!("ZMTP {}.x is too old", g[10])));
    }
    if &g[12..16] != b"NULL" || g[16..32].iter().any(|&b| b != 0) {
        return Err(violation("only the NULL mechanism is supported"));
    }
    Ok(())
}

/// The READY command announcing a DEALER socket.
fn ready_command() -> Vec<u8> {
    let mut body = Vec::with_capacity(32);
    body.push(5);
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&6u32.to_be_bytes());
    body.extend_from_slice(b"DEALER");
    let mut out = Vec::new();
    encode_frame(&mut out, FLAG_COMMAND, &body);
    out
}

fn check_ready(body: &[u8]) -> Result<(), LinkError> {
    let mut b = body;
    let name_len = *b.first().ok_or_else(|| violation("empty command"))? as usize;
    if b.len() < 1 + name_len || &b[1..1 + name_len] != b"READY" {
        return Err(violation("expected the READY command"));
    }
    b = &b[1 + name_len..];
    while !b.is_empty() {
        let n = b[0] as usize;
        if b.len() < 1 + n + 4 {
            return Err(violation("truncated READY property"));
        }
        let name = &b[1..1 + n];
        let vlen = u32::from_be_bytes([b[1 + n], b[2 + n], b[3 + n], b[4 + n]]) as usize;
        let rest = &b[5 + n..];
        if rest.len() < vlen {
            return Err(violation("truncated READY property value"));
        }
        if name.eq_ignore_ascii_case(b"Socket-Type")
            && !matches!(&rest[..vlen], b"DEALER" | b"ROUTER")
        {
            return Err(violation("the peer is not a DEALER or ROUTER"));
        }
        b = &rest[vlen..];
    }
    Ok(())
}

fn encode_frame(out: &mut Vec<u8>, flags: u8, data: &[u8]) {
    if data.len() > 255 {
        out.push(flags | FLAG_LONG);
        out.extend_from_slice(&(data.len() as u64).to_be_bytes());
    } else {
        out.push(flags);
        out.push(data.len() as u8);
    }
    out.extend_from_slice(data);
}

/// Encodes a message of one or more frames.
pub fn encode_message(frames: &[&[u8]]) -> Vec<u8> {
    let total: usize = frames.iter().map(|f| f.len() + 9).sum();
    let mut out = Vec::with_capacity(total);
    for (i, frame) in frames.iter().enumerate() {
        let more = if i + 1 < frames.len() { FLAG_MORE } else { 0 };
        encode_frame(&mut out, more, frame);
    }
    out
}

/// What the decoder produced.
#[derive(Debug, PartialEq)]
enum Item {
    Command(Bytes),
    Message(Vec<Bytes>),
}

/// The incremental, bounded decoder of frames after the greeting.
struct Decoder {
    limits: Limits,
    partial: Vec<Bytes>,
    partial_bytes: usize,
}

impl Decoder {
    fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            partial: Vec::new(),
            partial_bytes: 0,
        }
    }

    /// Takes one complete item from `buf`, or `None` if more bytes are
    /// needed; `Err` as soon as a header announces more than the limits allow.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, LinkError> {
        loop {
            let Some(&flags) = buf.first() else {
                return Ok(None);
            };
            if flags & !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND) != 0 {
                return Err(violation(format!("reserved frame flags {flags:#04x}")));
            }
            let (header_len, len) = if flags & FLAG_LONG != 0 {
                if buf.len() < 9 {
                    return Ok(None);
                }
                let mut raw = [0u8; 8];
                raw.copy_from_slice(&buf[1..9]);
                (9, u64::from_be_bytes(raw))
            } else {
                if buf.len() < 2 {
                    return Ok(None);
                }
                (2, u64::from(buf[1]))
            };
            let room = self.limits.max_message.saturating_sub(self.partial_bytes);
            if len > room as u64 {
                return Err(violation(format!(
                    "a frame of {len} bytes exceeds the {} byte message limit",
                    self.limits.max_message
                )));
            }
            let len = len as usize;
            if buf.len() < header_len + len {
                // Safe to reserve: `len` is within the limit.
                buf.reserve(header_len + len - buf.len());
                return Ok(None);
            }
            buf.advance(header_len);
            let data = buf.split_to(len).freeze();
            if flags & FLAG_COMMAND != 0 {
                if flags & FLAG_MORE != 0 || !self.partial.is_empty() {
                    return Err(violation("a command inside a message"));
                }
                return Ok(Some(Item::Command(data)));
            }
            self.partial_bytes += len;
            self.partial.push(data);
            if flags & FLAG_MORE == 0 {
                self.partial_bytes = 0;
                return Ok(Some(Item::Message(std::mem::take(&mut self.partial))));
            }
            if self.partial.len() >= self.limits.max_frames {
                return Err(violation(format!(
                    "more than {} frames in one message",
                    self.limits.max_frames
                )));
            }
        }
    }
}

/// Our side of the handshake as bytes: the greeting and READY.
pub(crate) fn handshake_bytes() -> Vec<u8> {
    let mut out = greeting().to_vec();
    out.extend(ready_command());
    out
}

/// A ZMTP link over a blocking stream (used inside the Worker).
pub struct BlockingLink<S> {
    stream: S,
    buf: BytesMut,
    decoder: Decoder,
}

impl<S: Read + Write> BlockingLink<S> {
    /// Performs the handshake on a connected stream.
    pub fn handshake(mut stream: S, limits: Limits) -> Result<Self, LinkError> {
        stream.write_all(&handshake_bytes())?;
        let mut g = [0u8; GREETING_LEN];
        stream.read_exact(&mut g)?;
        check_greeting(&g)?;
        let mut link = BlockingLink {
            stream,
            buf: BytesMut::with_capacity(8192),
            decoder: Decoder::new(limits),
        };
        match link.next_item()? {
            Item::Command(body) => check_ready(&body)?,
            Item::Message(_) => return Err(violation("a message before READY")),
        }
        Ok(link)
    }

    fn next_item(&mut self) -> Result<Item, LinkError> {
        loop {
            if let Some(item) = self.decoder.decode(&mut self.buf)? {
                return Ok(item);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(LinkError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Receives the next message, skipping commands (such as PING).
    pub fn recv(&mut self) -> Result<Vec<Bytes>, LinkError> {
        loop {
            if let Item::Message(frames) = self.next_item()? {
                return Ok(frames);
            }
        }
    }

    /// Sends a message.
    pub fn send(&mut self, frames: &[&[u8]]) -> Result<(), LinkError> {
        self.stream.write_all(&encode_message(frames))?;
        Ok(())
    }
}

/// A ZMTP link over a tokio stream (used by the Doer, and under TLS between
/// hosts).
pub struct AsyncLink<S> {
    reader: LinkReader<S>,
}

/// The receiving side of a link.
pub struct LinkReader<R> {
    stream: R,
    buf: BytesMut,
    decoder: Decoder,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> AsyncLink<S> {
    /// Performs the handshake on a connected stream.
    pub async fn handshake(mut stream: S, limits: Limits) -> Result<Self, LinkError> {
        stream.write_all(&handshake_bytes()).await?;
        let mut g = [0u8; GREETING_LEN];
        stream.read_exact(&mut g).await?;
        check_greeting(&g)?;
        let mut reader = LinkReader {
            stream,
            buf: BytesMut::with_capacity(8192),
            decoder: Decoder::new(limits),
        };
        match reader.next_item(None).await? {
            Item::Command(body) => check_ready(&body)?,
            Item::Message(_) => return Err(violation("a message before READY")),
        }
        Ok(AsyncLink { reader })
    }

    /// Receives the next message, skipping commands.
    ///
    /// Cancel-safe: bytes already read stay buffered for the next call.
    pub async fn recv(&mut self) -> Result<Vec<Bytes>, LinkError> {
        self.reader.recv().await
    }

    /// Sends a message.
    pub async fn send(&mut self, frames: &[&[u8]]) -> Result<(), LinkError> {
        self.reader
            .stream
            .write_all(&encode_message(frames))
            .await?;
        Ok(())
    }

    /// Replaces the bounds on what the peer may send from now on (a link
    /// starts with small ones until the peer has proven who it is).
    pub fn set_limits(&mut self, limits: Limits) {
        self.reader.decoder.limits = limits;
    }

    /// Separates the receiving side from the stream's write half, keeping
    /// whatever was already read.
    pub fn into_split(self) -> (LinkReader<tokio::io::ReadHalf<S>>, tokio::io::WriteHalf<S>) {
        let LinkReader {
            stream,
            buf,
            decoder,
        } = self.reader;
        let (read, write) = tokio::io::split(stream);
        (
            LinkReader {
                stream: read,
                buf,
                decoder,
            },
            write,
        )
    }
}

impl<R: tokio::io::AsyncRead + Unpin> LinkReader<R> {
    async fn next_item(&mut self, idle: Option<std::time::Duration>) -> Result<Item, LinkError> {
        loop {
            if let Some(item) = self.decoder.decode(&mut self.buf)? {
                return Ok(item);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let read = self.stream.read_buf(&mut self.buf);
            let n = match idle {
                Some(idle) => tokio::time::timeout(idle, read).await.map_err(|_| {
                    LinkError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("nothing heard for {} s", idle.as_secs()),
                    ))
                })??,
                None => read.await?,
            };
            if n == 0 {
                return Err(LinkError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Receives the next message, skipping commands.
    ///
    /// Cancel-safe: bytes already read stay buffered for the next call.
    pub async fn recv(&mut self) -> Result<Vec<Bytes>, LinkError> {
        loop {
            if let Item::Message(frames) = self.next_item(None).await? {
                return Ok(frames);
            }
        }
    }

    /// As [`LinkReader::recv`], failing when no byte at all arrives for
    /// `idle`: a message that takes long to arrive is fine while it flows.
    pub async fn recv_or_idle(
        &mut self,
        idle: std::time::Duration,
    ) -> Result<Vec<Bytes>, LinkError> {
        loop {
            if let Item::Message(frames) = self.next_item(Some(idle)).await? {
                return Ok(frames);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], limits: Limits) -> Result<Vec<Item>, LinkError> {
        let mut buf = BytesMut::from(bytes);
        let mut decoder = Decoder::new(limits);
        let mut items = Vec::new();
        while let Some(item) = decoder.decode(&mut buf)? {
            items.push(item);
        }
        Ok(items)
    }

    #[test]
    fn messages_round_trip_short_and_long() {
        let big = vec![7u8; 300];
        let bytes = encode_message(&[b"a", &big, b""]);
        let items = decode_all(&bytes, Limits::default()).unwrap();
        assert_eq!(
            items,
            vec![Item::Message(vec![
                Bytes::from_static(b"a"),
                Bytes::from(big),
                Bytes::new()
            ])]
        );
    }

    #[test]
    fn a_huge_declared_frame_is_refused_before_allocating() {
        let mut bytes = vec![FLAG_LONG];
        bytes.extend_from_slice(&(1u64 << 62).to_be_bytes());
        let err = decode_all(&bytes, Limits::default()).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }

    #[test]
    fn the_limit_counts_every_frame_of_a_message() {
        let limits = Limits {
            max_message: 1000,
            max_frames: 8,
        };
        let part = vec![0u8; 600];
        assert!(decode_all(&encode_message(&[&part, &part]), limits).is_err());
        assert!(decode_all(&encode_message(&[&part]), limits).is_ok());
    }

    #[test]
    fn too_many_frames_are_refused() {
        let frames: Vec<&[u8]> = vec![b"x"; 20];
        let limits = Limits {
            max_message: 1000,
            max_frames: 8,
        };
        assert!(decode_all(&encode_message(&frames), limits).is_err());
    }

    #[test]
    fn reserved_flags_are_refused() {
        assert!(decode_all(&[0x80, 0], Limits::default()).is_err());
    }

    #[test]
    fn partial_input_waits_for_more() {
        let bytes = encode_message(&[b"hello world"]);
        let mut decoder = Decoder::new(Limits::default());
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let item = decoder.decode(&mut buf).unwrap();
            assert_eq!(item.is_some(), i + 1 == bytes.len());
        }
    }
}
