//! One webhook call: an HTTP/1.1 `POST` of a JSON body with an `Idempotency-Key` header, over hyper's
//! client connection, under a deadline covering connect, TLS handshake, send and the whole answer.
//!
//! `http://` and `https://` targets. An `https://` receiver must present a certificate for the URL's
//! host that chains to the configured CA file (`[service] webhook_ca_file`) or, without one, to the
//! system's bundle ([`SYSTEM_CA_BUNDLE`]); the connection is TLS 1.3, as every other Hearth link. A
//! receiver that fails the handshake (a certificate not trusted or not for that host, no TLS 1.3) is
//! not retried: a repeat would fail the same way, and the run goes to the dead letters saying why.
//!
//! What is worth retrying ([`CallError::retryable`]): a timeout, a connection that failed, and the
//! answers that say "later" (408, 429 and 5xx); any other non-2xx answer (a 400, a 404, a 401) is the
//! receiver refusing the call, which a repeat would not change. A `Retry-After` on the answer (seconds
//! or an HTTP date) says when. The idempotency key lets the receiver recognise a repeat of a call it
//! already applied.
//!
//! With a secret configured, every call is signed as Standard Webhooks specify, so that the receiver
//! can check it came from this desk and was not altered or replayed: `webhook-id` (the idempotency
//! key: the same on every retry), `webhook-timestamp` (Unix seconds of the attempt) and
//! `webhook-signature` (`v1,` and the base64 of HMAC-SHA256 over `id.timestamp.body` under the secret's
//! bytes). Standard Webhooks fix the algorithm, so it is the same under either algorithm suite.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};

use crate::error::{CaError, SecretError, UrlError};

/// The system's trusted CAs, as Debian's `ca-certificates` installs them: `https://` receivers are
/// checked against it when no `webhook_ca_file` is set.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Largest answer body read from a webhook (it is not kept, only drained).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A parsed webhook URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to connect to.
    pub authority: String,
    /// The host the receiver's certificate must name (`https://`), without an IPv6 literal's brackets.
    pub host: String,
    /// `https://`: the call goes over TLS.
    pub tls: bool,
    /// The path and query.
    pub path: String,
}

impl Target {
    /// Parses `http://host[:port]/path` or `https://host[:port]/path`.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| UrlError::Malformed {
            url: url.into(),
            message: e.to_string(),
        })?;
        let (tls, default_port) = match uri.scheme_str() {
            Some("http") => (false, 80),
            Some("https") => (true, 443),
            _ => return Err(UrlError::Scheme(url.into())),
        };
        let auth = uri.authority().ok_or_else(|| UrlError::NoHost(url.into()))?;
        let host = auth.host().trim_start_matches('[').trim_end_matches(']').to_string();
        if tls && rustls::pki_types::ServerName::try_from(host.as_str()).is_err() {
            return Err(UrlError::NoHost(url.into()));
        }
        let port = auth.port_u16().unwrap_or(default_port);
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Ok(Self { authority: format!("{}:{port}", auth.host()), host, tls, path })
    }
}

/// What `https://` receivers are checked against: a TLS 1.3 client configuration trusting the CA file's
/// certificates, or why there is none.
#[derive(Clone)]
pub struct WebhookTls(Result<Arc<rustls::ClientConfig>, NoRoots>);

/// Why there are no roots to check `https://` receivers against: the system's bundle is unusable and no
/// `webhook_ca_file` is set.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "no webhook_ca_file is set and the system's CA bundle {SYSTEM_CA_BUNDLE} is not usable ({0}): install \
     Debian's ca-certificates or set [service] webhook_ca_file"
)]
pub struct NoRoots(CaError);

impl std::fmt::Debug for WebhookTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(_) => f.write_str("WebhookTls(ready)"),
            Err(why) => write!(f, "WebhookTls({why})"),
        }
    }
}

impl WebhookTls {
    /// Trusts the certificates of `ca_file`, which must hold at least one. Without it, those of
    /// [`SYSTEM_CA_BUNDLE`]; a system without the bundle is not refused here (a desk that calls no
    /// `https://` receiver needs none), but every `https://` call fails saying so.
    pub fn load(ca_file: Option<&Path>) -> Result<Self, CaError> {
        match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| CaError::Unreadable(e.to_string()))?;
                Ok(Self(Ok(client_config(roots_from_pem(&pem)?))))
            }
            None => Ok(Self(
                std::fs::read(SYSTEM_CA_BUNDLE)
                    .map_err(|e| CaError::Unreadable(e.to_string()))
                    .and_then(|pem| roots_from_pem(&pem))
                    .map(client_config)
                    .map_err(NoRoots),
            )),
        }
    }
}

/// The certificates of a PEM text as trust anchors; those that cannot serve as one are skipped, and a
/// text left with none is refused.
fn roots_from_pem(pem: &[u8]) -> Result<rustls::RootCertStore, CaError> {
    let mut reader = pem;
    let certs = rustls_pemfile::certs(&mut reader).filter_map(Result::ok);
    let mut roots = rustls::RootCertStore::empty();
    let (added, _skipped) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(CaError::NoCertificates);
    }
    Ok(roots)
}

/// TLS 1.3 over the ring provider, the given roots, no client certificate, ALPN `http/1.1`.
fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let mut cfg =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap_or_else(|e| unreachable!("the ring provider offers TLS 1.3: {e}"))
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// What every webhook call is made with: the signing secret, if any, and the TLS client for `https://`.
#[derive(Debug)]
pub struct Client {
    /// Signs every call, when the desk has a signing secret.
    pub signer: Option<Signer>,
    /// Checks `https://` receivers.
    pub tls: WebhookTls,
}

/// The secret workflow webhooks are signed with.
pub struct Signer {
    key: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// Reads a secret in Standard Webhooks' form: `whsec_` and the base64 of 24 to 64 bytes (surrounding
    /// whitespace ignored). The error says what is wrong, never the secret.
    pub fn from_secret(secret: &str) -> Result<Self, SecretError> {
        use base64::Engine as _;
        let b64 = secret.trim().strip_prefix("whsec_").ok_or(SecretError::Prefix)?;
        let key = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| SecretError::Base64)?,
        );
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Self { key })
    }

    /// `webhook-signature`'s value for message `id` sent at `timestamp` with `body`.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        use base64::Engine as _;
        let suite = hearth_crypto::SuiteId::International.suite(); // HMAC-SHA256, as the standard fixes
        let ts = timestamp.to_string();
        let mac = suite.mac(&self.key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac))
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The answer was not 2xx.
    #[error("answered HTTP {status}")]
    Status {
        /// The answer's status.
        status: u16,
        /// When the answer's `Retry-After` asks to be called again, from when it arrived.
        retry_after: Option<Duration>,
    },
    /// The deadline passed.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// Connecting or exchanging failed.
    #[error("{0}")]
    Io(String),
    /// The request could not be built (a header value it cannot carry): no attempt can succeed.
    #[error("the request cannot be built: {0}")]
    Request(String),
    /// An `https://` receiver failed the TLS handshake (its certificate is not trusted or not for the
    /// host, it offers no TLS 1.3), or there is no CA to check it against.
    #[error("TLS: {0}")]
    Tls(String),
}

impl CallError {
    /// Whether a repeat of the call may succeed: a timeout, a failed connection, or an answer of 408,
    /// 429 or 5xx.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Io(_) => true,
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            Self::Request(_) | Self::Tls(_) => false,
        }
    }

    /// The wait the receiver asked for with `Retry-After`, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A `Retry-After` value: delay-seconds, or an HTTP date (a date already past is no wait). `None` for
/// anything else, which the caller treats as no advice.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // More seconds than a u64 holds is as long as can be said.
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

impl Client {
    /// POSTs `body` to `target` with `idempotency_key`, signed when there is a signer; `Ok(status)` for a
    /// 2xx answer.
    pub async fn post(
        &self,
        target: &Target,
        idempotency_key: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<u16, CallError> {
        let ms = timeout.as_millis() as u64;
        tokio::time::timeout(timeout, self.call(target, idempotency_key, body))
            .await
            .map_err(|_| CallError::Timeout(ms))?
    }

    async fn call(&self, target: &Target, key: &str, body: Vec<u8>) -> Result<u16, CallError> {
        let tcp = tokio::net::TcpStream::connect(&target.authority)
            .await
            .map_err(|e| CallError::Io(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        if !target.tls {
            return self.exchange(tcp, target, key, body).await;
        }
        let config = self.tls.0.clone().map_err(|e| CallError::Tls(e.to_string()))?;
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| CallError::Request(format!("{}: {e}", target.host)))?;
        let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| {
            // The handshake's own refusals (a certificate not trusted, an alert) say so; anything else is
            // the connection failing, worth a retry.
            match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(tls) => CallError::Tls(format!("the handshake with {} failed: {tls}", target.host)),
                None => CallError::Io(e.to_string()),
            }
        })?;
        self.exchange(stream, target, key, body).await
    }

    /// The request and its answer over an open connection.
    async fn exchange<S>(&self, io: S, target: &Target, key: &str, body: Vec<u8>) -> Result<u16, CallError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let io_err = |e: &dyn std::fmt::Display| CallError::Io(e.to_string());
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| io_err(&e))?;
        let driver = tokio::spawn(conn);
        let mut req = http::Request::post(target.path.as_str())
            .header(http::header::HOST, target.authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key);
        if let Some(signer) = &self.signer {
            let now = crate::unix_now();
            req = req
                .header("webhook-id", key)
                .header("webhook-timestamp", now)
                .header("webhook-signature", signer.sign(key, now, &body));
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| CallError::Request(e.to_string()))?;
        let resp = send.send_request(req).await.map_err(|e| io_err(&e));
        let out = match resp {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                // Drain (bounded) so the server sees a complete exchange; the content is not used.
                let _ = Limited::new(resp.into_body(), MAX_ANSWER_BYTES).collect().await;
                if (200..300).contains(&status) {
                    Ok(status)
                } else {
                    Err(CallError::Status { status, retry_after })
                }
            }
            Err(e) => Err(e),
        };
        driver.abort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_other_schemes_are_refused() {
        let t = Target::parse("http://127.0.0.1:9900/orders/check?x=1").unwrap();
        let expected = Target {
            authority: "127.0.0.1:9900".into(),
            host: "127.0.0.1".into(),
            tls: false,
            path: "/orders/check?x=1".into(),
        };
        assert_eq!(t, expected);
        assert_eq!(Target::parse("http://crm.local/notes").unwrap().authority, "crm.local:80");
        let t = Target::parse("https://crm.bank.example/notes").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.host.as_str(), t.tls),
            ("crm.bank.example:443", "crm.bank.example", true)
        );
        let t = Target::parse("https://[::1]:8443/x").unwrap();
        assert_eq!((t.authority.as_str(), t.host.as_str()), ("[::1]:8443", "::1"));
        assert!(matches!(Target::parse("ftp://x/"), Err(UrlError::Scheme(_))));
        for bad in ["ftp://x/", "file:///etc/passwd", "/relative"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert!(Target::parse("not a url").is_err());
    }

    #[test]
    fn ca_files_must_hold_a_certificate_and_the_system_bundle_is_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert_eq!(WebhookTls::load(Some(&empty)).unwrap_err(), CaError::NoCertificates);
        let missing = dir.path().join("missing.pem");
        assert!(matches!(WebhookTls::load(Some(&missing)), Err(CaError::Unreadable(_))));
        // Without a file, the system's bundle (the test command installs Debian's ca-certificates).
        assert!(WebhookTls::load(None).unwrap().0.is_ok(), "{SYSTEM_CA_BUNDLE}");
    }

    #[test]
    fn signatures_match_the_standards_published_example() {
        // The Standard Webhooks libraries' own test of signing.
        let s = Signer::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            s.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        for (bad, says) in [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with whsec_"),
            ("whsec_not base64!", "not valid base64"),
            ("whsec_c2hvcnQ=", "5 bytes; it must be 24 to 64"),
        ] {
            let e = Signer::from_secret(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains('!'), "the error shows none of the secret: {e}");
        }
    }

    #[test]
    fn only_answers_that_say_later_are_retried() {
        let answer = |status| CallError::Status { status, retry_after: None };
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(answer(s).retryable(), "{s}");
        }
        for s in [301, 400, 401, 403, 404, 409, 410, 422] {
            assert!(!answer(s).retryable(), "{s}");
        }
        assert!(CallError::Timeout(100).retryable() && CallError::Io("refused".into()).retryable());
        assert!(!CallError::Request("bad header".into()).retryable());
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO), "past");
        assert_eq!(parse_retry_after("99999999999999999999999", now), Some(Duration::from_secs(u64::MAX)));
        for junk in ["", "-5", "1.5", "soon"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
        }
    }
}
