//! Hearth transport: the TLS 1.3 mutual-authentication plumbing that the coordinator and the participants
//! share, so that neither service depends on the other.
//!
//! - [`TlsMaterial`], [`TlsPaths`]: a node's CA, certificate and key.
//! - [`server_config`] / [`client_config`]: rustls configurations that speak TLS 1.3 only and require a
//!   client certificate issued by the consortium CA.
//! - [`serve`]: the accept loop. It completes the TLS handshake (with a deadline), reads the peer's Hearth
//!   identity from its certificate, and serves an axum `Router` over HTTP/1.1 and HTTP/2 on one port, so
//!   JSON endpoints and gRPC services (mounted with `tonic::service::Routes::into_axum_router`) share it.
//!   Every request carries the peer's [`PeerIdentity`] in its extensions.
//! - [`connect`]: a tonic `Channel` over the same TLS client configuration.
//! - [`ops`]: the plain-HTTP operations endpoints (`/healthz`, `/readyz`, `/metrics`) on their own
//!   listener.
//!
//! Identity comes from the certificate only; nothing here reads a caller's claim about itself.
//!
//! # The TLS stack is a configuration value ([`TlsProvider`])
//!
//! Every TLS configuration is built by [`server_config_for`] / [`client_config_for`] from the
//! `[tls] provider` a node's configuration names. Only `rustls` exists today, and rustls offers no
//! ShangMi cipher suites (RFC 8998: `TLS_SM4_GCM_SM3`, `TLS_SM4_CCM_SM3`, `sm2sig_sm3` signatures), so a
//! consortium on the national suite gets SM2, SM3 and SM4 everywhere except the TLS channel itself:
//! protocol signatures, audit-log tree heads, at-rest encryption, identity hashing and the secure-
//! aggregation channel are national; the TLS 1.3 handshake and record layer are ECDHE P-256/X25519,
//! ECDSA P-256 certificates and AES-GCM/ChaCha20-Poly1305. See README.md, "National suite", for the
//! path to an RFC 8998 stack and what it has to provide.
#![forbid(unsafe_code)]

mod keystore_key;
pub mod ops;

pub use keystore_key::KeystoreTlsKey;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hearth_crypto::pki::{identity_from_cert_der, NodeIdentity, Role};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::{Channel, Endpoint};
use zeroize::Zeroizing;

/// HTTP/2 flow-control windows: large enough that a multi-megabyte model streams without stalling on
/// window updates over a fast link.
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;

/// Errors of the transport.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A TLS file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// PEM input held no usable certificate or key.
    #[error("{what}: {reason}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// Connecting to a peer failed.
    #[error("connecting to {addr}: {reason}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The listener failed.
    #[error("accepting connections: {0}")]
    Accept(std::io::Error),
}

/// Which TLS implementation carries a node's connections: the seam where an RFC 8998 (TLS 1.3 with
/// ShangMi cipher suites) stack plugs in.
///
/// Only [`TlsProvider::Rustls`] is implemented. A national-suite stack would be a second variant whose
/// [`server_config_for`] / [`client_config_for`] build that library's configuration from the same
/// [`TlsMaterial`] (SM2 certificates), and whose accept loop hands [`serve`] a stream plus the peer's
/// certificate in DER (the only two things `serve` takes from rustls). Candidates: a rustls
/// `CryptoProvider` carrying SM cipher suites and the `sm2sig_sm3` scheme, should a trustworthy one
/// appear; or a binding to a TLS library implementing RFC 8998 (e.g. Tongsuo). Until then the TLS
/// channel of a national-suite consortium is international cryptography.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsProvider {
    /// rustls with the ring provider: TLS 1.3 only, client certificates required.
    #[default]
    Rustls,
}

/// Paths of a node's TLS material, as written in configuration files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The consortium CA certificate (PEM): peers must present certificates it issued.
    pub ca: PathBuf,
    /// This node's certificate (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
    /// The TLS implementation (`rustls`, the only one today); see [`TlsProvider`].
    #[serde(default)]
    pub provider: TlsProvider,
}

impl TlsPaths {
    /// The layout `hearth pki init` writes: `DIR/ca.pem`, `DIR/NAME.pem`, `DIR/NAME.key`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            provider: TlsProvider::default(),
        }
    }
}

/// Why a text is not a [`HostPort`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not host:port ({why}), e.g. \"coordinator.example:7700\"")]
pub struct HostPortError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// A peer's address as configuration files give it: `host:port`, where the host is a DNS name, an IPv4
/// address or a bracketed IPv6 address. Checked when the file is loaded; [`connect`] takes its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort(String);

impl HostPort {
    /// `text` if it is `host:port` with a non-empty host and a port number.
    pub fn new(text: &str) -> Result<Self, HostPortError> {
        let bad = |why| HostPortError { text: text.chars().take(200).collect(), why };
        let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        port.parse::<u16>().map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        };
        if !host_ok {
            return Err(bad("the host is not a name or an address"));
        }
        Ok(Self(text.to_string()))
    }

    /// `127.0.0.1:port`.
    pub fn loopback(port: u16) -> Self {
        Self(format!("127.0.0.1:{port}"))
    }

    /// The address as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host part, without the brackets of an IPv6 address.
    pub fn host(&self) -> &str {
        let host = self.0.rsplit_once(':').map_or(self.0.as_str(), |(h, _)| h);
        host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for HostPort {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HostPort::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A node's TLS material in memory.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The consortium CA certificate.
    pub ca_pem: String,
    /// This node's certificate chain.
    pub cert_pem: String,
    /// This node's private key, wiped on drop; empty when `signer` holds the key.
    pub key_pem: Zeroizing<String>,
    /// A private key that stays in the keystore (a PKCS#11 token): when set, handshakes are signed by it
    /// and `key_pem` is not used.
    pub signer: Option<Arc<dyn rustls::sign::SigningKey>>,
    /// The consortium's revocation list as this node currently holds it: a peer whose certificate it
    /// lists fails the handshake, in both directions. Consulted at every handshake, so a newer list takes
    /// effect without rebuilding the configuration.
    pub revocations: Option<Arc<dyn Revocations>>,
}

/// What a TLS configuration asks at each handshake: is this peer certificate revoked?
pub trait Revocations: Send + Sync + std::fmt::Debug {
    /// Whether the consortium CA revoked `cert_der`.
    fn is_revoked(&self, cert_der: &[u8]) -> bool;
}

fn revoked_err() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
}

/// WebPKI's client certificate checks, then the revocation list.
#[derive(Debug)]
struct RevocationChecked {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    revocations: Arc<dyn Revocations>,
}

impl rustls::server::danger::ClientCertVerifier for RevocationChecked {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        if self.revocations.is_revoked(end_entity) {
            return Err(revoked_err());
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").field("key_pem", &"[redacted]").finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Reads the three PEM files; errors name the file.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TransportError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|source| TransportError::Read { path: p.to_path_buf(), source })
        };
        Ok(Self {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: Zeroizing::new(read(key)?),
            signer: None,
            revocations: None,
        })
    }

    /// The CA and certificate files, with a private key held by `signer` (no key file).
    pub fn load_with_signer(
        ca: &Path,
        cert: &Path,
        signer: Arc<dyn rustls::sign::SigningKey>,
    ) -> Result<Self, TransportError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|source| TransportError::Read { path: p.to_path_buf(), source })
        };
        Ok(Self {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: Zeroizing::default(),
            signer: Some(signer),
            revocations: None,
        })
    }

    /// Material from PEM text: the CA, the node's certificate and its private key.
    pub fn from_pem(ca_pem: String, cert_pem: String, key_pem: Zeroizing<String>) -> Self {
        Self { ca_pem, cert_pem, key_pem, signer: None, revocations: None }
    }

    /// The node's certificate with the key that signs for it: the keystore's signer, or the PEM key.
    fn certified(
        &self,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Arc<rustls::sign::CertifiedKey>, TransportError> {
        let key = match &self.signer {
            Some(s) => Arc::clone(s),
            None => provider.key_provider.load_private_key(self.key()?).map_err(tls_err)?,
        };
        Ok(Arc::new(rustls::sign::CertifiedKey::new(self.certs()?, key)))
    }

    /// [`TlsMaterial::load`] from configured paths.
    pub fn from_paths(p: &TlsPaths) -> Result<Self, TransportError> {
        Self::load(&p.ca, &p.cert, &p.key)
    }

    fn certs(&self) -> Result<Vec<CertificateDer<'static>>, TransportError> {
        parse_certs(&self.cert_pem, "node certificate")
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TransportError> {
        rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .map_err(|e| TransportError::Pem { what: "private key", reason: e.to_string() })?
            .ok_or(TransportError::Pem { what: "private key", reason: "no private key in PEM".into() })
    }

    fn roots(&self) -> Result<RootCertStore, TransportError> {
        let mut roots = RootCertStore::empty();
        for c in parse_certs(&self.ca_pem, "CA certificate")? {
            roots
                .add(c)
                .map_err(|e| TransportError::Pem { what: "CA certificate", reason: e.to_string() })?;
        }
        Ok(roots)
    }
}

fn parse_certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TransportError::Pem { what, reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TransportError::Pem { what, reason: "no certificate in PEM".into() });
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// The server configuration of `provider` (see [`TlsProvider`]).
pub fn server_config_for(
    provider: TlsProvider,
    m: &TlsMaterial,
) -> Result<Arc<rustls::ServerConfig>, TransportError> {
    match provider {
        TlsProvider::Rustls => server_config(m),
    }
}

/// The client configuration of `provider` (see [`TlsProvider`]).
pub fn client_config_for(
    provider: TlsProvider,
    m: &TlsMaterial,
) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    match provider {
        TlsProvider::Rustls => client_config(m),
    }
}

/// Server side: TLS 1.3 only, a client certificate from the consortium CA required, ALPN h2 and
/// http/1.1.
pub fn server_config(m: &TlsMaterial) -> Result<Arc<rustls::ServerConfig>, TransportError> {
    let provider = provider();
    let certified = m.certified(&provider)?;
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(m.roots()?), Arc::clone(&provider))
            .build()
            .map_err(tls_err)?;
    if let Some(revocations) = &m.revocations {
        verifier = Arc::new(RevocationChecked { inner: verifier, revocations: Arc::clone(revocations) });
    }
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client side: TLS 1.3 only, the consortium CA as the only root, this node's certificate, ALPN h2.
/// The server may hold any role; a node that talks to one kind of server uses [`client_config_to`].
pub fn client_config(m: &TlsMaterial) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    client_config_checking(m, None)
}

/// The client configuration, requiring the server's role when `role` is given; the server's certificate
/// is checked against the revocation list when `m` carries one.
fn client_config_checking(
    m: &TlsMaterial,
    role: Option<Role>,
) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    let provider = provider();
    let certified = m.certified(&provider)?;
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(m.roots()?),
        Arc::clone(&provider),
    )
    .build()
    .map_err(tls_err)?;
    let verifier = ServerRole { inner, role, revocations: m.revocations.clone() };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// [`client_config`] that also requires the server's certificate to carry `role` (a participant
/// connects only to a `coordinator`): a certificate from the same CA with another role, say another
/// participant's, fails the handshake even when it names the right host.
pub fn client_config_to(m: &TlsMaterial, role: Role) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    client_config_checking(m, Some(role))
}

/// The client configuration of `provider` requiring the server's `role` (see [`client_config_to`]).
pub fn client_config_to_for(
    provider: TlsProvider,
    m: &TlsMaterial,
    role: Role,
) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    match provider {
        TlsProvider::Rustls => client_config_to(m, role),
    }
}

/// WebPKI's verification of the chain and the name, then the Hearth role in the certificate (when one is
/// required) and the revocation list (when the node holds one).
#[derive(Debug)]
struct ServerRole {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    role: Option<Role>,
    revocations: Option<Arc<dyn Revocations>>,
}

impl rustls::client::danger::ServerCertVerifier for ServerRole {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verified =
            self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        if let Some(role) = self.role {
            let identity = identity_from_cert_der(end_entity).map_err(|e| {
                rustls::Error::General(format!("the server's certificate carries no Hearth identity: {e}"))
            })?;
            if identity.role != role {
                return Err(rustls::Error::General(format!(
                    "the server is {identity}, not a {role}: refusing to talk to it"
                )));
            }
        }
        if self.revocations.as_ref().is_some_and(|r| r.is_revoked(end_entity)) {
            return Err(revoked_err());
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A gRPC channel to `addr` (`host:port`) whose certificate must name `server_name`. The channel
/// reconnects by itself after the peer restarts.
pub async fn connect(
    addr: &str,
    server_name: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<Channel, TransportError> {
    let err = |reason: String| TransportError::Connect { addr: addr.to_string(), reason };
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| err(format!("server name {server_name:?}: {e}")))?;
    // The scheme is "http" because TLS is done by the connector below, not by tonic.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    let target = addr.to_string();
    let connector = tower::service_fn(move |_: http::Uri| {
        let (cfg, name, target) = (Arc::clone(&cfg), name.clone(), target.clone());
        async move {
            let tcp = TcpStream::connect(&target).await?;
            tcp.set_nodelay(true)?;
            let tls = TlsConnector::from(cfg).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    endpoint.connect_with_connector(connector).await.map_err(|e| err(format!("{e}: {}", source_chain(&e))))
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

/// The authenticated peer of a request, inserted into every request's extensions by [`serve`].
#[derive(Debug, Clone)]
pub struct PeerIdentity(pub NodeIdentity);

/// The DER certificate the peer presented (already verified against the consortium CA by the TLS
/// handshake), inserted into every request's extensions by [`serve`] beside [`PeerIdentity`].
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Arc<[u8]>);

/// The certificate of a gRPC caller, or `unauthenticated` if the request did not come through [`serve`].
pub fn peer_certificate<T>(req: &tonic::Request<T>) -> Result<Arc<[u8]>, tonic::Status> {
    req.extensions().get::<PeerCertificate>().map(|p| Arc::clone(&p.0)).ok_or_else(|| {
        tonic::Status::unauthenticated("no authenticated client certificate on this connection")
    })
}

/// The identity of a gRPC caller, or `unauthenticated` if the request did not come through [`serve`].
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Result<NodeIdentity, tonic::Status> {
    req.extensions().get::<PeerIdentity>().map(|p| p.0.clone()).ok_or_else(|| {
        tonic::Status::unauthenticated("no authenticated client certificate on this connection")
    })
}

/// Called with the peer address and the reason whenever a connection is refused (failed handshake,
/// unknown certificate, no Hearth identity), so a service can audit it.
pub type RefusalHook = Arc<dyn Fn(SocketAddr, &str) + Send + Sync>;

/// Limits of [`serve`].
#[derive(Clone)]
pub struct ServeOptions {
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Most connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// Told about every refused connection.
    pub on_refused: Option<RefusalHook>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self { handshake_timeout: Duration::from_secs(10), max_connections: 1024, on_refused: None }
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// Serves `app` on `listener` over TLS until `shutdown` resolves, then lets connections finish for up to
/// five seconds.
pub async fn serve(
    listener: TcpListener,
    cfg: Arc<rustls::ServerConfig>,
    app: axum::Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), TransportError> {
    let acceptor = TlsAcceptor::from(cfg);
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            refuse(&opts, peer, "connection_limit", "connection limit reached");
            continue;
        };
        let (acceptor, app, opts, mut stop) = (acceptor.clone(), app.clone(), opts.clone(), stop_rx.clone());
        conns.spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(opts.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    let reason = format!("TLS handshake failed: {e}");
                    // The peer's certificate is on the revocation list: counted apart from other failures.
                    let kind = if reason.contains("Revoked") { "revoked" } else { "tls_handshake_failed" };
                    return refuse(&opts, peer, kind, &reason);
                }
                Err(_) => return refuse(&opts, peer, "tls_handshake_timeout", "TLS handshake timed out"),
            };
            let cert =
                tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec());
            let Some(cert) = cert else {
                return refuse(&opts, peer, "no_client_certificate", "no client certificate");
            };
            let identity = match identity_from_cert_der(&cert) {
                Ok(id) => id,
                Err(e) => return refuse(&opts, peer, "no_identity", &format!("certificate refused: {e}")),
            };
            let cert: Arc<[u8]> = cert.into();
            tracing::debug!(%peer, %identity, "connection authenticated");
            let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(PeerIdentity(identity.clone()));
                req.extensions_mut().insert(PeerCertificate(Arc::clone(&cert)));
                tower::ServiceExt::oneshot(app.clone(), req)
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http2()
                .timer(TokioTimer::new())
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .max_frame_size(256 * 1024)
                .keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(20));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ =
        tokio::time::timeout(Duration::from_secs(6), async { while conns.join_next().await.is_some() {} })
            .await;
    conns.abort_all();
    Ok(())
}

/// Connections refused since the process started, by kind (`connection_limit`, `tls_handshake_failed`,
/// `revoked`, `tls_handshake_timeout`, `no_client_certificate`, `no_identity`): a fixed set of labels for
/// `/metrics`, whatever a peer sends.
pub fn refusals() -> Vec<(&'static str, u64)> {
    REFUSALS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().map(|(k, n)| (*k, *n)).collect()
}

static REFUSALS: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn refuse(opts: &ServeOptions, peer: SocketAddr, kind: &'static str, reason: &str) {
    *REFUSALS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(kind).or_insert(0) += 1;
    tracing::warn!(%peer, reason, "connection refused");
    if let Some(hook) = &opts.on_refused {
        hook(peer, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_takes_names_and_addresses_and_names_what_is_wrong() {
        for ok in ["coordinator.example:7700", "127.0.0.1:7700", "[::1]:7700", "localhost:0"] {
            assert_eq!(HostPort::new(ok).unwrap().as_str(), ok);
        }
        assert_eq!(HostPort::new("[::1]:7700").unwrap().host(), "::1");
        assert_eq!(HostPort::new("coordinator.example:7700").unwrap().host(), "coordinator.example");
        for (bad, says) in [
            ("coordinator.example", "no port"),
            ("host:http", "port"),
            ("host:70000", "port"),
            (":7700", "host"),
            ("[not-v6]:1", "host"),
            ("a b:1", "host"),
        ] {
            let e = HostPort::new(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
        }
    }
}
