//! The link between the kernel and a service on another host: TLS 1.3,
//! the join key proven by both ends, and bounded frames.
//!
//! - The kernel has a self-signed certificate ([`KernelIdentity`]), kept in
//!   its data directory. The join key names it by its SHA-256, so a joining
//!   service accepts no other server: a host cannot be lured to a fake
//!   kernel even by someone who can redirect its traffic.
//! - Both ends then prove that they hold the key's secret: each sends an
//!   HMAC-SHA256 of its role and of a value exported from this TLS session
//!   (RFC 5705). The secret itself never crosses the wire, and a proof is
//!   worthless on any other connection. The joining host also says which
//!   protocol version it speaks, so a host with another ISMS version is
//!   told so instead of being dropped without a word.
//! - After that the link carries the kernel's messages as ZMTP frames
//!   through the bounded decoder of [`crate::zmtp`]: no peer makes the other
//!   end reserve more than [`Limits::max_message`].
//! - Until the peer has proven the key, a link takes messages of at most
//!   [`HANDSHAKE_LIMITS`]: an unauthenticated peer cannot make the kernel
//!   reserve more than that.
//! - Each end sends a keep-alive every [`KEEPALIVE`] and drops the link after
//!   [`SILENCE`] without a byte, so a cut cable is noticed on both sides
//!   even when TCP itself would wait for minutes.

use crate::message::PROTOCOL_VERSION;
use crate::zmtp::{AsyncLink, Limits, LinkError, LinkReader};
use bytes::Bytes;
use ring::hmac;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;

/// How often each end of an idle link says it is there.
pub const KEEPALIVE: Duration = Duration::from_secs(1);

/// Silence after which a link is dropped.
pub const SILENCE: Duration = Duration::from_secs(5);

/// How long the TLS handshake and the proofs may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a link takes before the peer has proven the key: the hello and the
/// answer are two short frames.
pub const HANDSHAKE_LIMITS: Limits = Limits {
    max_message: 1024,
    max_frames: 4,
};

/// The message that only says "still here": one empty frame.
const KEEPALIVE_FRAME: &[u8] = b"";

/// The name the certificate is issued to; never checked, the pin is.
const SERVER_NAME: &str = "isms-kernel";

/// The label of the TLS exporter the proofs are bound to.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-isms-join-1";

const KEY_PREFIX: &str = "isms-join-1";

/// The secret a host needs to join, and the kernel it belongs to.
///
/// Written `isms-join-1:<secret, 64 hex>:<kernel certificate's sha256, 64 hex>`.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinKey {
    secret: [u8; 32],
    kernel: [u8; 32],
}

impl fmt::Debug for JoinKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinKey(kernel {}…)", &hex(&self.kernel)[..12])
    }
}

impl JoinKey {
    /// A new random secret for the kernel with this certificate.
    pub fn generate(identity: &KernelIdentity) -> JoinKey {
        let mut secret = [0u8; 32];
        // The operating system's generator failing is not recoverable.
        getrandom::fill(&mut secret).unwrap_or_else(|e| panic!("no randomness: {e}"));
        JoinKey {
            secret,
            kernel: identity.fingerprint(),
        }
    }

    /// The key as it is written in a key file.
    pub fn to_text(&self) -> String {
        format!("{KEY_PREFIX}:{}:{}", hex(&self.secret), hex(&self.kernel))
    }

    /// Whether this key was made for the kernel with this certificate.
    pub fn belongs_to(&self, identity: &KernelIdentity) -> bool {
        self.kernel == identity.fingerprint()
    }

    fn proof(&self, role: &[u8], binding: &[u8]) -> hmac::Tag {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.secret);
        let mut context = hmac::Context::with_key(&key);
        context.update(role);
        context.update(binding);
        context.sign()
    }

    fn verify(&self, role: &[u8], binding: &[u8], proof: &[u8]) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.secret);
        let mut message = role.to_vec();
        message.extend_from_slice(binding);
        hmac::verify(&key, &message, proof).is_ok()
    }
}

impl FromStr for JoinKey {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "not a join key: expected `{KEY_PREFIX}:<64 hex>:<64 hex>` as `isms join-key` prints it"
            )
        };
        let mut parts = text.trim().split(':');
        if parts.next() != Some(KEY_PREFIX) {
            return Err(bad());
        }
        let secret = parts.next().and_then(unhex32).ok_or_else(bad)?;
        let kernel = parts.next().and_then(unhex32).ok_or_else(bad)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(JoinKey { secret, kernel })
    }
}

use crate::hex::{decode32 as unhex32, encode as hex};

/// The kernel's certificate and private key for links from other hosts.
pub struct KernelIdentity {
    certificate: Vec<u8>,
    private_key: Vec<u8>,
}

impl KernelIdentity {
    /// Loads the identity kept in `dir`, or makes one and keeps it there
    /// (both files 0600).
    pub fn load_or_create(dir: &Path) -> std::io::Result<KernelIdentity> {
        let cert_path = dir.join("kernel-cert.der");
        let key_path = dir.join("kernel-key.der");
        match (std::fs::read(&cert_path), std::fs::read(&key_path)) {
            (Ok(certificate), Ok(private_key)) => {
                return Ok(KernelIdentity {
                    certificate,
                    private_key,
                });
            }
            // None yet (or a crash between the two writes, key first): make one.
            (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Anything else: making a new one would silently invalidate every
            // host's key.
            (Err(e), _) | (_, Err(e)) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot read the kernel's certificate or key in {}: {e}",
                        dir.display()
                    ),
                ));
            }
        }
        let failed =
            |e: rcgen::Error| std::io::Error::other(format!("cannot make a certificate: {e}"));
        let key = rcgen::KeyPair::generate().map_err(failed)?;
        let certificate = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
            .map_err(failed)?
            .self_signed(&key)
            .map_err(failed)?;
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        // The key first: a crash between the two leaves no certificate,
        // and both are made again.
        crate::secret_file::write(&key_path, &key.serialize_der())?;
        crate::secret_file::write(&cert_path, certificate.der())?;
        Ok(KernelIdentity {
            certificate: certificate.der().to_vec(),
            private_key: key.serialize_der(),
        })
    }

    /// The SHA-256 of the certificate, which join keys name.
    pub fn fingerprint(&self) -> [u8; 32] {
        sha256(&self.certificate)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a link could not be made.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The TCP connection or the TLS handshake failed.
    #[error("cannot reach the kernel at {address}: {cause}")]
    Unreachable {
        /// Where.
        address: String,
        /// Why.
        cause: String,
    },
    /// The server's certificate is not the one the key names.
    #[error(
        "the server at {0} is not the kernel this join key belongs to (its certificate differs); \
         get the key again with `isms join-key` on the kernel's host"
    )]
    WrongKernel(String),
    /// The kernel did not accept the key.
    #[error("the kernel at {address} refused to let this host join: {reason}")]
    Refused {
        /// Where.
        address: String,
        /// What the kernel said.
        reason: String,
    },
    /// The kernel did not prove that it holds the key.
    #[error("the kernel at {0} did not prove that it holds the join key")]
    Unproven(String),
    /// The link broke during the handshake.
    #[error("the link to the kernel at {address} failed: {cause}")]
    Link {
        /// Where.
        address: String,
        /// Why.
        cause: LinkError,
    },
}

/// A certificate verifier that accepts exactly one certificate.
#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

const WRONG_CERTIFICATE: &str = "certificate differs from the join key's";

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if sha256(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(WRONG_CERTIFICATE.into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// One end of an established link. Splits into a reader and a writer.
pub struct Link<S> {
    reader: LinkReader<tokio::io::ReadHalf<S>>,
    writer: WriteHalf<S>,
    /// The peer's address.
    pub peer: String,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Link<S> {
    /// Moves messages between the link and two channels until either end
    /// goes away or the peer falls silent: what arrives goes to `inbound`,
    /// what `outbound` yields is sent. Keep-alives are sent and swallowed
    /// here. Returns why the link ended.
    pub async fn pump(
        self,
        inbound: tokio::sync::mpsc::Sender<Vec<Bytes>>,
        mut outbound: tokio::sync::mpsc::Receiver<Vec<Bytes>>,
    ) -> String {
        let Link {
            mut reader,
            mut writer,
            ..
        } = self;
        let sending = async move {
            let mut keepalive = tokio::time::interval(KEEPALIVE);
            loop {
                let bytes = tokio::select! {
                    message = outbound.recv() => match message {
                        Some(frames) => {
                            let frames: Vec<&[u8]> = frames.iter().map(|f| f.as_ref()).collect();
                            crate::zmtp::encode_message(&frames)
                        }
                        None => return "closed by this end".to_string(),
                    },
                    _ = keepalive.tick() => crate::zmtp::encode_message(&[KEEPALIVE_FRAME]),
                };
                if let Err(err) = writer.write_all(&bytes).await {
                    return format!("cannot send: {err}");
                }
            }
        };
        let receiving = async move {
            loop {
                match reader.recv_or_idle(SILENCE).await {
                    Err(err) => return err.to_string(),
                    Ok(frames) if frames.len() == 1 && frames[0].is_empty() => {}
                    Ok(frames) => {
                        if inbound.send(frames).await.is_err() {
                            return "closed by this end".to_string();
                        }
                    }
                }
            }
        };
        tokio::select! {
            why = sending => why,
            why = receiving => why,
        }
    }
}

fn split<S: AsyncRead + AsyncWrite + Unpin>(link: AsyncLink<S>, peer: String) -> Link<S> {
    let (reader, writer) = link.into_split();
    Link {
        reader,
        writer,
        peer,
    }
}

/// A link from a joining service to the kernel.
pub type ClientLink = Link<tokio_rustls::client::TlsStream<TcpStream>>;

/// A link the kernel accepted.
pub type ServerLink = Link<tokio_rustls::server::TlsStream<TcpStream>>;

/// Connects to the kernel at `address` (`host:port`), checks that it is the
/// kernel `key` names and that it holds the key, and proves the key in turn.
pub async fn connect(
    address: &str,
    key: &JoinKey,
    limits: Limits,
) -> Result<ClientLink, JoinError> {
    let unreachable = |cause: String| JoinError::Unreachable {
        address: address.to_string(),
        cause,
    };
    let broken = |cause| JoinError::Link {
        address: address.to_string(),
        cause,
    };
    let config = client_config(key.kernel).map_err(|e| unreachable(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = async {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| unreachable(e.to_string()))?;
        let tls = connector.connect(name, tcp).await.map_err(|e| {
            if e.to_string().contains(WRONG_CERTIFICATE) {
                JoinError::WrongKernel(address.to_string())
            } else {
                unreachable(format!("TLS: {e}"))
            }
        })?;
        let binding = exported(tls.get_ref().1).map_err(|e| unreachable(e.to_string()))?;
        let mut link = AsyncLink::handshake(tls, HANDSHAKE_LIMITS)
            .await
            .map_err(broken)?;
        let proof = key.proof(b"service", &binding);
        link.send(&[b"join", proof.as_ref(), &[PROTOCOL_VERSION]])
            .await
            .map_err(broken)?;
        let answer = link.recv().await.map_err(broken)?;
        match answer.as_slice() {
            [word, proof] if word.as_ref() == b"welcome" => {
                if !key.verify(b"kernel", &binding, proof) {
                    return Err(JoinError::Unproven(address.to_string()));
                }
            }
            [word, reason] if word.as_ref() == b"refused" => {
                return Err(JoinError::Refused {
                    address: address.to_string(),
                    reason: String::from_utf8_lossy(reason).into_owned(),
                });
            }
            _ => return Err(JoinError::Unproven(address.to_string())),
        }
        link.set_limits(limits);
        Ok(split(link, address.to_string()))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .unwrap_or_else(|_| Err(unreachable("no answer to the handshake".into())))
}

/// TLS 1.3 to the kernel whose certificate has this SHA-256, and no other.
fn client_config(kernel: [u8; 32]) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = provider();
    let verifier = Pinned {
        fingerprint: kernel,
        algorithms: provider.signature_verification_algorithms,
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The value both proofs are bound to: keying material exported from this
/// TLS session, which no other session shares.
fn exported<D>(connection: &rustls::ConnectionCommon<D>) -> Result<[u8; 32], rustls::Error> {
    let mut out = [0u8; 32];
    connection.export_keying_material(&mut out, EXPORTER_LABEL, None)?;
    Ok(out)
}

/// The kernel's side: accepts TLS connections and admits those that prove
/// the current join key.
#[derive(Clone)]
pub struct Acceptor {
    tls: tokio_rustls::TlsAcceptor,
    limits: Limits,
}

/// Why the kernel did not admit a connection.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Not TLS 1.3, or the handshake failed (a plaintext client, a scanner).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The peer did not prove the current join key.
    #[error("wrong or missing join key")]
    WrongKey,
    /// The peer speaks another version of the protocol.
    #[error("{0}")]
    Version(String),
    /// The link broke or the peer broke the protocol.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The handshake took too long.
    #[error("no complete handshake within {} s", HANDSHAKE_TIMEOUT.as_secs())]
    Slow,
}

impl Acceptor {
    /// An acceptor presenting `identity`.
    pub fn new(identity: &KernelIdentity, limits: Limits) -> Result<Acceptor, String> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.private_key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(identity.certificate.clone())],
                key,
            )
            .map_err(|e| format!("the kernel's certificate is unusable: {e}"))?;
        Ok(Acceptor {
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            limits,
        })
    }

    /// Runs the handshake on an accepted connection and checks its proof
    /// against `key`. A refused peer is told why before the link closes.
    pub async fn accept(&self, tcp: TcpStream, key: &JoinKey) -> Result<ServerLink, AcceptError> {
        let peer = tcp
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let _ = tcp.set_nodelay(true);
        let handshake = async {
            let tls = self
                .tls
                .accept(tcp)
                .await
                .map_err(|e| AcceptError::Tls(e.to_string()))?;
            let binding = exported(tls.get_ref().1).map_err(|e| AcceptError::Tls(e.to_string()))?;
            let mut link = AsyncLink::handshake(tls, HANDSHAKE_LIMITS).await?;
            let hello = link.recv().await?;
            let (proof, version) = match hello.as_slice() {
                [word, proof, version] if word.as_ref() == b"join" => {
                    (proof.clone(), version.first().copied())
                }
                _ => (Bytes::new(), None),
            };
            if !key.verify(b"service", &binding, &proof) {
                let _ = link.send(&[b"refused", b"wrong or missing join key"]).await;
                return Err(AcceptError::WrongKey);
            }
            // Said only to a host that proved the key, and before any
            // message it could not read.
            if version != Some(PROTOCOL_VERSION) {
                let why = format!(
                    "this host speaks protocol {}, the kernel {PROTOCOL_VERSION}: run the same ISMS version on both",
                    version.map_or("?".to_string(), |v| v.to_string())
                );
                let _ = link.send(&[b"refused", why.as_bytes()]).await;
                return Err(AcceptError::Version(why));
            }
            let proof = key.proof(b"kernel", &binding);
            link.send(&[b"welcome", proof.as_ref()]).await?;
            link.set_limits(self.limits);
            Ok(split(link, peer))
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .unwrap_or(Err(AcceptError::Slow))
    }
}

/// What a service on another host needs to join the kernel.
#[derive(Clone, Debug)]
pub struct Joining {
    /// The join key.
    pub key: JoinKey,
    /// Bounds on what the kernel may send.
    pub limits: Limits,
}

/// The name of this host, as services report it and `isms status` shows it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The kernel's identity and current join key, both kept in `dir`; made
/// there on first use. A key made for another certificate (the identity was
/// deleted and made anew) is replaced.
pub fn kernel_credentials(dir: &Path) -> std::io::Result<(KernelIdentity, JoinKey)> {
    let identity = KernelIdentity::load_or_create(dir)?;
    let path = dir.join(KEY_FILE);
    match std::fs::read_to_string(&path).map(|text| text.parse::<JoinKey>()) {
        Ok(Ok(key)) if key.belongs_to(&identity) => Ok((identity, key)),
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => {
            let key = JoinKey::generate(&identity);
            write_key(dir, &key)?;
            Ok((identity, key))
        }
    }
}

fn write_key(dir: &Path, key: &JoinKey) -> std::io::Result<()> {
    let text = format!("{}\n", key.to_text());
    crate::secret_file::write(&dir.join(KEY_FILE), text.as_bytes())
}

/// Replaces the join key kept in `dir` with a new one. A running kernel
/// reads it within a second and closes every link made with the old one.
pub fn rotate_key(dir: &Path) -> std::io::Result<JoinKey> {
    let identity = KernelIdentity::load_or_create(dir)?;
    let key = JoinKey::generate(&identity);
    write_key(dir, &key)?;
    Ok(key)
}

/// The join key's file in the kernel's directory.
pub const KEY_FILE: &str = "join.key";

#[cfg(test)]
mod tests {
    use super::*;

    /// A new identity each time (made in a directory of its own).
    fn identity() -> KernelIdentity {
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("isms-link-{}-{n}", std::process::id()));
        let identity = KernelIdentity::load_or_create(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        identity
    }

    #[test]
    fn a_key_reads_back_as_written() {
        let key = JoinKey::generate(&identity());
        assert_eq!(key.to_text().parse::<JoinKey>().unwrap(), key);
        assert!("isms-join-1:00:11".parse::<JoinKey>().is_err());
        assert!(format!("{}x", key.to_text()).parse::<JoinKey>().is_err());
    }

    #[test]
    fn a_proof_holds_only_for_its_role_binding_and_secret() {
        let kernel_identity = identity();
        let key = JoinKey::generate(&kernel_identity);
        let other = JoinKey::generate(&kernel_identity);
        let proof = key.proof(b"service", b"session");
        assert!(key.verify(b"service", b"session", proof.as_ref()));
        assert!(!key.verify(b"kernel", b"session", proof.as_ref()));
        assert!(!key.verify(b"service", b"another", proof.as_ref()));
        assert!(!other.verify(b"service", b"session", proof.as_ref()));
    }

    async fn kernel(
        key: JoinKey,
        identity: &KernelIdentity,
    ) -> (
        String,
        tokio::task::JoinHandle<Result<ServerLink, AcceptError>>,
    ) {
        let acceptor = Acceptor::new(identity, Limits::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp, &key).await
        });
        (address, task)
    }

    #[tokio::test]
    async fn both_ends_prove_the_key_and_messages_flow() {
        let kernel_identity = identity();
        let key = JoinKey::generate(&kernel_identity);
        let (address, server) = kernel(key.clone(), &kernel_identity).await;
        let client = connect(&address, &key, Limits::default()).await.unwrap();
        let server = server.await.unwrap().unwrap();
        let (to_server_tx, to_server_rx) = tokio::sync::mpsc::channel(8);
        let (at_server_tx, mut at_server_rx) = tokio::sync::mpsc::channel(8);
        let (_unused_tx, from_server_rx) = tokio::sync::mpsc::channel(8);
        let (at_client_tx, _at_client_rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(client.pump(at_client_tx, to_server_rx));
        tokio::spawn(server.pump(at_server_tx, from_server_rx));
        to_server_tx
            .send(vec![
                Bytes::from_static(b"head"),
                Bytes::from_static(b"body"),
            ])
            .await
            .unwrap();
        let frames = at_server_rx.recv().await.unwrap();
        assert_eq!(
            frames,
            vec![Bytes::from_static(b"head"), Bytes::from_static(b"body")]
        );
    }

    /// What crosses the wire is ciphertext: a recording relay between the
    /// two ends sees neither the message nor the key's secret.
    #[tokio::test]
    async fn a_captured_stream_shows_nothing_of_what_it_carries() {
        let kernel_identity = identity();
        let key = JoinKey::generate(&kernel_identity);
        let (address, server) = kernel(key.clone(), &kernel_identity).await;
        let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_address = relay.local_addr().unwrap().to_string();
        let captured = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let recording = captured.clone();
        tokio::spawn(async move {
            let (inside, _) = relay.accept().await.unwrap();
            let outside = TcpStream::connect(&address).await.unwrap();
            let (in_read, in_write) = inside.into_split();
            let (out_read, out_write) = outside.into_split();
            let copy = |mut from: tokio::net::tcp::OwnedReadHalf,
                        mut to: tokio::net::tcp::OwnedWriteHalf,
                        log: Arc<std::sync::Mutex<Vec<u8>>>| async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                while let Ok(n) = from.read(&mut buf).await {
                    if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            };
            tokio::join!(
                copy(in_read, out_write, recording.clone()),
                copy(out_read, in_write, recording),
            );
        });
        let client = connect(&relay_address, &key, Limits::default())
            .await
            .unwrap();
        let server = server.await.unwrap().unwrap();
        let (to_server, to_server_rx) = tokio::sync::mpsc::channel(8);
        let (at_server, mut at_server_rx) = tokio::sync::mpsc::channel(8);
        let (_keep, from_server) = tokio::sync::mpsc::channel(8);
        let (at_client, _at_client_rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(client.pump(at_client, to_server_rx));
        tokio::spawn(server.pump(at_server, from_server));
        let marker = b"SELECT secret_reading FROM greenhouse WHERE token = 'tk-0123456789'";
        to_server
            .send(vec![Bytes::from_static(marker)])
            .await
            .unwrap();
        assert_eq!(at_server_rx.recv().await.unwrap()[0].as_ref(), marker);
        let captured = captured.lock().unwrap().clone();
        assert!(
            captured.len() > marker.len(),
            "the relay saw {} bytes",
            captured.len()
        );
        let contains = |needle: &[u8]| captured.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(b"secret_reading"), "the message crossed in clear");
        assert!(!contains(&key.secret), "the key's secret crossed");
        assert!(
            !contains(hex(&key.secret).as_bytes()),
            "the key's secret crossed"
        );
    }

    /// Even a peer that holds the key cannot make the other end reserve
    /// what a frame header declares: the link ends instead.
    #[tokio::test]
    async fn a_huge_frame_header_ends_the_link_without_allocating() {
        let kernel_identity = identity();
        let key = JoinKey::generate(&kernel_identity);
        let (address, server) = kernel(key.clone(), &kernel_identity).await;
        let mut client = connect(&address, &key, Limits::default()).await.unwrap();
        let server = server.await.unwrap().unwrap();
        let (inbound, mut arrived) = tokio::sync::mpsc::channel(8);
        let (_keep, outbound) = tokio::sync::mpsc::channel(8);
        let pump = tokio::spawn(server.pump(inbound, outbound));
        let mut header = vec![0b010u8];
        header.extend_from_slice(&(4u64 << 30).to_be_bytes());
        client.writer.write_all(&header).await.unwrap();
        let why = pump.await.unwrap();
        assert!(why.contains("exceeds"), "{why}");
        assert!(arrived.recv().await.is_none());
    }

    /// TLS to a test kernel, for a client that goes on by hand.
    async fn tls_to(
        address: &str,
        kernel: &KernelIdentity,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let config = client_config(kernel.fingerprint()).unwrap();
        let tcp = TcpStream::connect(address).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
            .await
            .unwrap()
    }

    /// A host with the key but another protocol version is told so.
    #[tokio::test]
    async fn another_protocol_version_is_refused_saying_so() {
        let kernel_identity = identity();
        let key = JoinKey::generate(&kernel_identity);
        let (address, server) = kernel(key.clone(), &kernel_identity).await;
        let tls = tls_to(&address, &kernel_identity).await;
        let binding = exported(tls.get_ref().1).unwrap();
        let mut link = AsyncLink::handshake(tls, HANDSHAKE_LIMITS).await.unwrap();
        let proof = key.proof(b"service", &binding);
        link.send(&[b"join", proof.as_ref(), &[99]]).await.unwrap();
        let answer = link.recv().await.unwrap();
        assert_eq!(answer[0].as_ref(), b"refused");
        let reason = String::from_utf8_lossy(&answer[1]).into_owned();
        assert!(reason.contains("protocol 99"), "{reason}");
        assert!(matches!(
            server.await.unwrap(),
            Err(AcceptError::Version(_))
        ));
    }

    /// Before the key is proven, the kernel takes only a short hello.
    #[tokio::test]
    async fn an_unproven_peer_cannot_make_the_kernel_reserve_memory() {
        let kernel_identity = identity();
        let key = JoinKey::generate(&kernel_identity);
        let (address, server) = kernel(key, &kernel_identity).await;
        let mut tls = tls_to(&address, &kernel_identity).await;
        // A greeting and READY, then a frame header declaring 64 MiB.
        let mut bytes = crate::zmtp::handshake_bytes();
        bytes.push(0b010);
        bytes.extend_from_slice(&(64u64 << 20).to_be_bytes());
        tls.write_all(&bytes).await.unwrap();
        let refused = server.await.unwrap();
        assert!(
            matches!(&refused, Err(AcceptError::Link(e)) if e.to_string().contains("exceeds the 1024 byte")),
            "{:?}",
            refused.err()
        );
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_on_both_ends() {
        let kernel_identity = identity();
        let key = JoinKey::generate(&kernel_identity);
        let (address, server) = kernel(key, &kernel_identity).await;
        let stolen_fingerprint_only = JoinKey::generate(&kernel_identity);
        let err = connect(&address, &stolen_fingerprint_only, Limits::default())
            .await
            .err()
            .unwrap();
        assert!(matches!(err, JoinError::Refused { .. }), "{err}");
        assert!(matches!(server.await.unwrap(), Err(AcceptError::WrongKey)));
    }

    #[tokio::test]
    async fn another_kernel_is_not_trusted() {
        let kernel_identity = identity();
        let key = JoinKey::generate(&kernel_identity);
        let impostor = identity();
        let (address, server) = kernel(key.clone(), &impostor).await;
        let err = connect(&address, &key, Limits::default())
            .await
            .err()
            .unwrap();
        assert!(matches!(err, JoinError::WrongKernel(_)), "{err}");
        assert!(server.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_plaintext_client_is_refused() {
        let kernel_identity = identity();
        let key = JoinKey::generate(&kernel_identity);
        let (address, server) = kernel(key, &kernel_identity).await;
        let mut tcp = TcpStream::connect(&address).await.unwrap();
        let mut greeting = vec![0u8; 64];
        greeting[0] = 0xff;
        greeting[9] = 0x7f;
        tcp.write_all(&greeting).await.unwrap();
        assert!(matches!(server.await.unwrap(), Err(AcceptError::Tls(_))));
    }
}
