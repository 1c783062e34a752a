//! One webhook call: an HTTP/1.1 `POST` of a JSON body with an `Idempotency-Key` header, over hyper's
//! client connection, under a deadline covering connect, send and the whole answer.
//!
//! Only `http://` targets: workflows call the institution's own systems (order, payment, CRM) from
//! inside its network, typically through a local gateway; TLS towards them is the gateway's job. A
//! non-2xx answer, a timeout and a connection error are all failures the caller may retry: the
//! idempotency key lets the receiver recognise a repeat of a call it already applied.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};

use crate::error::UrlError;

/// Largest answer body read from a webhook (it is not kept, only drained).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A parsed webhook URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to connect to.
    pub authority: String,
    /// The path and query.
    pub path: String,
}

impl Target {
    /// Parses `http://host[:port]/path`.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| UrlError::Malformed {
            url: url.into(),
            message: e.to_string(),
        })?;
        if uri.scheme_str() != Some("http") {
            return Err(UrlError::Scheme(url.into()));
        }
        let auth = uri.authority().ok_or_else(|| UrlError::NoHost(url.into()))?;
        let port = auth.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Ok(Self { authority: format!("{}:{port}", auth.host()), path })
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The answer was not 2xx.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// The deadline passed.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// Connecting or exchanging failed.
    #[error("{0}")]
    Io(String),
}

/// POSTs `body` to `target` with `idempotency_key`; `Ok(status)` for a 2xx answer.
pub async fn post(
    target: &Target,
    idempotency_key: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<u16, CallError> {
    let ms = timeout.as_millis() as u64;
    tokio::time::timeout(timeout, call(target, idempotency_key, body))
        .await
        .map_err(|_| CallError::Timeout(ms))?
}

async fn call(target: &Target, key: &str, body: Vec<u8>) -> Result<u16, CallError> {
    let io = |e: &dyn std::fmt::Display| CallError::Io(e.to_string());
    let tcp = tokio::net::TcpStream::connect(&target.authority).await.map_err(|e| io(&e))?;
    let _ = tcp.set_nodelay(true);
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.map_err(|e| io(&e))?;
    let driver = tokio::spawn(conn);
    let req = http::Request::post(target.path.as_str())
        .header(http::header::HOST, target.authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| io(&e))?;
    let resp = send.send_request(req).await.map_err(|e| io(&e));
    let out = match resp {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // Drain (bounded) so the server sees a complete exchange; the content is not used.
            let _ = Limited::new(resp.into_body(), MAX_ANSWER_BYTES).collect().await;
            if (200..300).contains(&status) {
                Ok(status)
            } else {
                Err(CallError::Status(status))
            }
        }
        Err(e) => Err(e),
    };
    driver.abort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_other_schemes_are_refused() {
        let t = Target::parse("http://127.0.0.1:9900/orders/check?x=1").unwrap();
        assert_eq!(t, Target { authority: "127.0.0.1:9900".into(), path: "/orders/check?x=1".into() });
        assert_eq!(Target::parse("http://crm.local/notes").unwrap().authority, "crm.local:80");
        assert!(matches!(Target::parse("https://x/"), Err(UrlError::Scheme(_))));
        assert!(Target::parse("not a url").is_err());
    }
}
