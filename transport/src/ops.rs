//! The operations endpoints of a node, on their own plain-HTTP listener meant for the host or pod network
//! (never the public one): `GET /healthz` (the process answers), `GET /readyz` (it can do its work: 200,
//! or 503 with the reason) and `GET /metrics` (Prometheus text format, version 0.0.4). They carry no
//! customer data and no key: identities, counts, times and versions only.
//!
//! A service implements [`OpsState`]; [`MetricsText`] writes the exposition format.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::TransportError;

/// Why a node cannot do its work yet (`/readyz` answers 503 with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(pub String);

/// What a node reports on its operations endpoints.
pub trait OpsState: Send + Sync + 'static {
    /// `Ok` when the node can do its work; otherwise why not.
    fn readiness(&self) -> Result<(), NotReady>;
    /// Every metric, in the Prometheus text format ([`MetricsText::finish`]).
    fn metrics(&self) -> String;
}

/// Prometheus text exposition, built one sample at a time; each family's HELP and TYPE are written once,
/// before its first sample.
#[derive(Debug, Default)]
pub struct MetricsText {
    out: String,
    declared: BTreeSet<String>,
}

impl MetricsText {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// A gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, "gauge", help, labels, value);
    }

    /// A counter sample (`name` should end in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, "counter", help, labels, value);
    }

    /// A histogram of `values` over the upper bounds `bounds` (ascending; `+Inf` is added): cumulative
    /// `_bucket` samples, then `_sum` and `_count`.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        values: &[f64],
    ) {
        self.declare(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for le in bounds.iter().copied().chain(std::iter::once(f64::INFINITY)) {
            let n = values.iter().filter(|v| **v <= le).count();
            let le = fmt_value(le);
            let mut with_le = labels.to_vec();
            with_le.push(("le", le.as_str()));
            self.line(&bucket, &with_le, n as f64);
        }
        self.line(&format!("{name}_sum"), labels, values.iter().sum());
        self.line(&format!("{name}_count"), labels, values.len() as f64);
    }

    fn declare(&mut self, name: &str, kind: &str, help: &str) {
        if self.declared.insert(name.to_string()) {
            let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
            let _ = writeln!(self.out, "# TYPE {name} {kind}");
        }
    }

    fn sample(&mut self, name: &str, kind: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.declare(name, kind, help);
        self.line(name, labels, value);
    }

    fn line(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", fmt_value(value));
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A histogram with fixed bucket bounds, filled as events happen (for request latencies).
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bound, observations at most that bound (not cumulative); the last slot is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0 }
    }

    /// Counts one observation.
    pub fn observe(&mut self, v: f64) {
        let slot = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        self.counts[slot] += 1;
        self.sum += v;
    }
}

impl MetricsText {
    /// A histogram filled with [`Histogram::observe`].
    pub fn histogram_of(&mut self, name: &str, help: &str, labels: &[(&str, &str)], h: &Histogram) {
        self.declare(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            let le = fmt_value(h.bounds.get(i).copied().unwrap_or(f64::INFINITY));
            let mut with_le = labels.to_vec();
            with_le.push(("le", le.as_str()));
            self.line(&bucket, &with_le, cumulative as f64);
        }
        self.line(&format!("{name}_sum"), labels, h.sum);
        self.line(&format!("{name}_count"), labels, cumulative as f64);
    }
}

/// Most (route, method, status) label sets kept before new ones are counted as `other`.
const MAX_ROUTES: usize = 256;

/// Bucket bounds (seconds) of request latencies.
pub const LATENCY_BOUNDS: [f64; 12] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Requests served, by route (its template, never the concrete path: no identifier reaches a label),
/// method and status class, with their latency.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    by: std::sync::Mutex<std::collections::BTreeMap<(String, String, &'static str), Histogram>>,
}

impl RequestMetrics {
    /// Writes `hearth_connections_refused_total` (this process's refusals by reason) and
    /// `hearth_request_duration_seconds` (its `_count` is the number of requests).
    pub fn render(&self, m: &mut MetricsText) {
        for (reason, n) in crate::refusals() {
            m.counter(
                "hearth_connections_refused_total",
                "Connections refused at the handshake since the start, by reason (revoked: a certificate on the revocation list).",
                &[("reason", reason)],
                n as f64,
            );
        }
        let by = self.by.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((route, method, status), h) in by.iter() {
            let labels = [("route", route.as_str()), ("method", method.as_str()), ("status", *status)];
            m.histogram_of(
                "hearth_request_duration_seconds",
                "Time to answer requests, by route.",
                &labels,
                h,
            );
        }
    }
}

/// Middleware (`axum::middleware::from_fn_with_state`, as a route layer) timing each request into
/// `metrics`.
pub async fn track(
    State(metrics): State<Arc<RequestMetrics>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // The route's template; for a gRPC service (mounted under a wildcard) its method, which the protocol
    // fixes: never a concrete path with an identifier in it.
    let route = match req.extensions().get::<axum::extract::MatchedPath>() {
        Some(p) if p.as_str().contains("{*") => req.uri().path().to_string(),
        Some(p) => p.as_str().to_string(),
        None => "unmatched".to_string(),
    };
    let method = req.method().to_string();
    let started = std::time::Instant::now();
    // Everything logged while the request is handled carries this span (`--log-format json`: "span").
    let span = tracing::info_span!("request", %method, route = %route);
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let status = match resp.status().as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    let took = started.elapsed().as_secs_f64();
    tracing::debug!(parent: &span, status = resp.status().as_u16(), seconds = took, "request answered");
    let mut by = metrics.by.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Bounded: past MAX_ROUTES label sets, new ones are counted together (a peer calling made-up
    // methods cannot grow the map).
    let key = (route, method, status);
    let key =
        if by.len() >= MAX_ROUTES && !by.contains_key(&key) { ("other".into(), key.1, status) } else { key };
    by.entry(key).or_insert_with(|| Histogram::new(&LATENCY_BOUNDS)).observe(took);
    resp
}

/// The operations router over `state`.
pub fn ops_router(state: Arc<dyn OpsState>) -> axum::Router {
    async fn healthz() -> &'static str {
        "ok\n"
    }
    async fn readyz(State(s): State<Arc<dyn OpsState>>) -> impl IntoResponse {
        match s.readiness() {
            Ok(()) => (StatusCode::OK, "ready\n".to_string()),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
        }
    }
    async fn metrics(State(s): State<Arc<dyn OpsState>>) -> impl IntoResponse {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics())
    }
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Binds `at` and serves the operations endpoints there in a task of their own (until the process
/// ends or the task is aborted); returns the bound address and the task.
pub async fn spawn_ops(
    at: std::net::SocketAddr,
    state: Arc<dyn OpsState>,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), TransportError> {
    let listener = TcpListener::bind(at).await.map_err(|e| {
        TransportError::Tls(format!("operations endpoints: listening on {at} (ops_listen): {e}"))
    })?;
    let bound =
        listener.local_addr().map_err(|e| TransportError::Tls(format!("operations endpoints: {e}")))?;
    tracing::info!(ops_addr = %bound, "operations endpoints listening (plain HTTP: /healthz, /readyz, /metrics)");
    let task = tokio::spawn(async move {
        if let Err(e) = serve_ops(listener, state, std::future::pending()).await {
            tracing::error!(error = %e, "operations endpoints failed");
        }
    });
    Ok((bound, task))
}

/// Serves the operations endpoints on `listener` (plain HTTP) until `shutdown` resolves.
pub async fn serve_ops(
    listener: TcpListener,
    state: Arc<dyn OpsState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), TransportError> {
    axum::serve(listener, ops_router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| TransportError::Tls(format!("operations endpoints: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_declare_their_family_once_and_escape_label_values() {
        let mut m = MetricsText::new();
        m.gauge("hearth_x", "An x.", &[("who", "a\"b\\c\nd")], 1.0);
        m.gauge("hearth_x", "An x.", &[("who", "e")], 2.5);
        m.counter("hearth_y_total", "Ys.", &[], 3.0);
        let text = m.finish();
        assert_eq!(
            text,
            "# HELP hearth_x An x.\n# TYPE hearth_x gauge\nhearth_x{who=\"a\\\"b\\\\c\\nd\"} 1\nhearth_x{who=\"e\"} 2.5\n\
             # HELP hearth_y_total Ys.\n# TYPE hearth_y_total counter\nhearth_y_total 3\n"
        );
    }

    /// A writer the JSON subscriber appends to.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn what_a_handler_logs_carries_its_request_span_in_json_logs() {
        use tower::ServiceExt;
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::INFO)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        async fn handler(axum::extract::Path(id): axum::extract::Path<String>) -> &'static str {
            tracing::info!(len = id.len(), "handling");
            "ok"
        }
        let metrics = Arc::new(RequestMetrics::default());
        let app = axum::Router::new()
            .route("/v1/customers/{id}", get(handler))
            .route_layer(axum::middleware::from_fn_with_state(metrics, track));
        let req = http::Request::get("/v1/customers/c-123").body(axum::body::Body::empty()).unwrap();
        assert_eq!(app.oneshot(req).await.unwrap().status(), 200);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value =
            serde_json::from_str(text.lines().find(|l| l.contains("handling")).expect("logged")).unwrap();
        assert_eq!(line["span"]["name"], "request", "{text}");
        assert_eq!(line["span"]["route"], "/v1/customers/{id}", "the template, never the id: {text}");
        assert_eq!(line["span"]["method"], "GET", "{text}");
        assert!(!text.contains("c-123"), "{text}");
    }

    #[test]
    fn an_observed_histogram_renders_like_one_built_from_its_values() {
        static BOUNDS: [f64; 2] = [0.5, 1.0];
        let mut h = Histogram::new(&BOUNDS);
        for v in [0.2, 0.7, 3.0] {
            h.observe(v);
        }
        let mut a = MetricsText::new();
        a.histogram_of("hearth_d_seconds", "D.", &[("phase", "1")], &h);
        let mut b = MetricsText::new();
        b.histogram("hearth_d_seconds", "D.", &[("phase", "1")], &BOUNDS, &[0.2, 0.7, 3.0]);
        assert_eq!(a.finish(), b.finish());
    }

    #[test]
    fn histograms_count_cumulatively_and_end_with_inf_sum_and_count() {
        let mut m = MetricsText::new();
        m.histogram("hearth_d_seconds", "D.", &[("phase", "1")], &[0.5, 1.0], &[0.2, 0.7, 3.0]);
        assert_eq!(
            m.finish(),
            "# HELP hearth_d_seconds D.\n# TYPE hearth_d_seconds histogram\n\
             hearth_d_seconds_bucket{phase=\"1\",le=\"0.5\"} 1\n\
             hearth_d_seconds_bucket{phase=\"1\",le=\"1\"} 2\n\
             hearth_d_seconds_bucket{phase=\"1\",le=\"+Inf\"} 3\n\
             hearth_d_seconds_sum{phase=\"1\"} 3.9\n\
             hearth_d_seconds_count{phase=\"1\"} 3\n"
        );
    }
}
