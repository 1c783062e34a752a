//! OpenTelemetry trace export, an option nothing requires: with `--otlp-endpoint http://HOST:PORT` (or
//! the standard `OTEL_EXPORTER_OTLP_ENDPOINT`) every span the services open (a request, a round) is sent,
//! when it closes, to an OpenTelemetry collector as OTLP/HTTP JSON (`POST /v1/traces`). Batches leave
//! every two seconds from a thread of their own; when the collector is slow or down, spans beyond a
//! bounded queue are dropped (and counted in the log), never the service's work. Plain HTTP only: run
//! the collector beside the node (a sidecar, or on the host) and let it forward over TLS.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Spans waiting to be sent, at most.
const QUEUE: usize = 4096;
/// Spans per request, at most.
const BATCH: usize = 512;

/// Where to send: host, port and path, from an `http://` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
    path: String,
}

impl Endpoint {
    /// `http://host:port` (the collector's base: `/v1/traces` is added, as the OTLP specification says)
    /// or `http://host:port/some/path` (used as given).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!(
                "OTLP endpoint {url:?}: only http:// is supported; run the collector beside the node and let it \
                 forward over TLS"
            )
        };
        let (authority, path) = match rest.find('/') {
            Some(i) if i + 1 < rest.len() => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], "/v1/traces".to_string()),
            None => (rest, "/v1/traces".to_string()),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().with_context(|| format!("OTLP endpoint {url:?}: the port"))?),
            None => (authority, 4318),
        };
        if host.is_empty() {
            bail!("OTLP endpoint {url:?}: no host");
        }
        Ok(Self { host: host.to_string(), port, path })
    }
}

/// A finished span, as OTLP JSON.
type SpanJson = serde_json::Value;

/// What is kept about an open span.
struct Open {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    start: u64,
    attributes: BTreeMap<String, String>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The layer: keeps each span's ids and fields, and queues it as OTLP JSON when it closes.
pub struct OtlpLayer {
    queue: SyncSender<SpanJson>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl OtlpLayer {
    /// The layer, and the thread that sends its batches to `endpoint` as `service` (`service.name`).
    pub fn start(endpoint: Endpoint, service: &str) -> Self {
        let (queue, spans) = sync_channel(QUEUE);
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (service, counted) = (service.to_string(), Arc::clone(&dropped));
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || export(endpoint, &service, spans, &counted))
            .ok();
        Self { queue, dropped }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for OtlpLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent =
            span.parent().and_then(|p| p.extensions().get::<Open>().map(|o| (o.trace_id, o.span_id)));
        let trace_id = parent.map_or_else(rand::random, |(t, _)| t);
        let mut attributes = BTreeMap::new();
        attrs.record(&mut Fields(&mut attributes));
        span.extensions_mut().insert(Open {
            trace_id,
            span_id: rand::random(),
            parent: parent.map(|(_, s)| s),
            start: now_nanos(),
            attributes,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(open) = span.extensions_mut().get_mut::<Open>() {
                values.record(&mut Fields(&mut open.attributes));
            }
        }
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(open) = span.extensions_mut().remove::<Open>() else { return };
        let attributes: Vec<SpanJson> = open
            .attributes
            .iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": {"stringValue": v}}))
            .collect();
        let mut json = serde_json::json!({
            "traceId": hex::encode(open.trace_id),
            "spanId": hex::encode(open.span_id),
            "name": span.name(),
            "kind": 1,
            "startTimeUnixNano": open.start.to_string(),
            "endTimeUnixNano": now_nanos().to_string(),
            "attributes": attributes,
        });
        if let Some(parent) = open.parent {
            json["parentSpanId"] = hex::encode(parent).into();
        }
        if let Err(TrySendError::Full(_)) = self.queue.try_send(json) {
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Sends batches until the layer is gone.
fn export(
    endpoint: Endpoint,
    service: &str,
    spans: Receiver<SpanJson>,
    dropped: &std::sync::atomic::AtomicU64,
) {
    let mut reported = 0;
    loop {
        let first = match spans.recv_timeout(Duration::from_secs(2)) {
            Ok(s) => s,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        // Whatever else closes within the batch window goes with it.
        std::thread::sleep(Duration::from_millis(500));
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match spans.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        let body = serde_json::json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"scope": {"name": "hearth", "version": env!("CARGO_PKG_VERSION")}, "spans": batch}],
        }]});
        if let Err(e) = post(&endpoint, &body.to_string()) {
            // Written straight to stderr: logging it through tracing would make spans of its own.
            eprintln!("OTLP export to {}:{}{}: {e:#}", endpoint.host, endpoint.port, endpoint.path);
        }
        let lost = dropped.load(std::sync::atomic::Ordering::Relaxed);
        if lost > reported {
            eprintln!("OTLP export: {} spans dropped so far (the collector does not keep up)", lost);
            reported = lost;
        }
    }
}

/// One `POST` of `body`; an error unless the collector answers 2xx.
fn post(endpoint: &Endpoint, body: &str) -> anyhow::Result<()> {
    let addr = format!("{}:{}", endpoint.host, endpoint.port);
    let addrs: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .with_context(|| format!("resolving {addr}"))?
        .collect();
    let target = addrs.first().with_context(|| format!("{addr} resolves to nothing"))?;
    let mut tcp = std::net::TcpStream::connect_timeout(target, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        tcp,
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        endpoint.path,
        body.len()
    )?;
    let mut answer = Vec::new();
    let _ = tcp.take(64 * 1024).read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split_whitespace().nth(1).unwrap_or("none");
    if !status.starts_with('2') {
        bail!("the collector answered {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_with_the_traces_path_added_to_a_base() {
        let e = Endpoint::parse("http://collector:4318").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.path.as_str()), ("collector", 4318, "/v1/traces"));
        assert_eq!(Endpoint::parse("http://c:9/").unwrap().path, "/v1/traces");
        assert_eq!(Endpoint::parse("http://c:9/otlp/v1/traces").unwrap().path, "/otlp/v1/traces");
        assert_eq!(Endpoint::parse("http://c").unwrap().port, 4318);
        for bad in ["https://c:4318", "c:4318", "http://:4318", "http://c:x"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
