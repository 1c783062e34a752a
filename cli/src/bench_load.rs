//! The benchmarks' HTTP load generator: `connections` keep-alive HTTP/1.1 connections to a participant,
//! each sending its next request as soon as the previous answer is read (closed loop), for a fixed time.
//! A connection reaches the participant one of two ways ([`Via`]): over mutual TLS as the institution's
//! app certificate (the path apps use) or in plain HTTP to the loopback API-key listener. Every request's
//! latency, from sending it to the last byte of its answer, goes into an HDR histogram (microseconds,
//! three significant digits), so percentiles are those of every request, not of a sample.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

/// How the connections reach the participant.
#[derive(Clone)]
pub enum Via {
    /// Mutual TLS 1.3 to `addr` (the participant's port), presenting the client certificate `tls` holds;
    /// the server must be named `localhost` in its certificate.
    Mtls {
        /// `host:port`.
        addr: String,
        /// The client configuration (ALPN `http/1.1`).
        tls: Arc<rustls::ClientConfig>,
    },
    /// Plain HTTP to the loopback API-key listener at `addr`, with `Authorization: Bearer <key>`.
    ApiKey {
        /// `host:port`.
        addr: String,
        /// The API key.
        key: String,
    },
}

impl Via {
    /// Mutual TLS as `app`'s certificate to `addr`.
    pub fn mtls(addr: &str, app: &hearth_transport::TlsMaterial) -> anyhow::Result<Self> {
        let mut cfg = (*hearth_transport::client_config(app)?).clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self::Mtls { addr: addr.to_string(), tls: Arc::new(cfg) })
    }

    /// `mtls` or `api-key`: the row's `path`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mtls { .. } => "mtls",
            Self::ApiKey { .. } => "api-key",
        }
    }

    fn addr(&self) -> &str {
        match self {
            Self::Mtls { addr, .. } | Self::ApiKey { addr, .. } => addr,
        }
    }
}

/// The body of request number `n`.
pub type Bodies = Arc<dyn Fn(usize) -> Bytes + Send + Sync>;

/// One load: what to send, where, how hard and how long.
#[derive(Clone)]
pub struct Load {
    /// How the connections reach the participant.
    pub via: Via,
    /// The path every request is `POST`ed to.
    pub path: &'static str,
    /// Request `n`'s JSON body.
    pub bodies: Bodies,
    /// Open connections.
    pub connections: usize,
    /// How long to load.
    pub duration: Duration,
}

/// What one load saw.
pub struct Outcome {
    /// Every answered request's latency, in microseconds.
    pub latency_us: Histogram<u64>,
    /// From the first connection until every connection stopped (the deadline, and the requests in
    /// flight at it).
    pub elapsed: Duration,
    /// Answers that were not 2xx.
    pub non_2xx: u64,
    /// Connections that failed to open and requests that got no answer.
    pub errors: u64,
    /// 2xx answers the fast tier's model gave (`"tier":"fast"` in the body).
    pub fast: u64,
}

impl Outcome {
    /// Requests answered per second.
    pub fn rps(&self) -> f64 {
        self.latency_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A latency histogram from 1 µs to 10 minutes, three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|e| unreachable!("fixed bounds: {e}"))
}

/// One connection's tally.
struct Tally {
    latency_us: Histogram<u64>,
    non_2xx: u64,
    errors: u64,
    fast: u64,
}

/// Runs `load` on the current runtime and returns what it saw.
pub async fn run(load: Load) -> anyhow::Result<Outcome> {
    let load = Arc::new(load);
    let started = Instant::now();
    let deadline = started + load.duration.max(Duration::from_millis(100));
    let mut tasks = Vec::new();
    for c in 0..load.connections.max(1) {
        let load = Arc::clone(&load);
        tasks.push(tokio::spawn(async move { connection(&load, c.wrapping_mul(7919), deadline).await }));
    }
    let mut all =
        Outcome { latency_us: histogram(), elapsed: Duration::ZERO, non_2xx: 0, errors: 0, fast: 0 };
    for t in tasks {
        let t = t.await?;
        all.latency_us.add(&t.latency_us)?;
        all.non_2xx += t.non_2xx;
        all.errors += t.errors;
        all.fast += t.fast;
    }
    all.elapsed = started.elapsed();
    Ok(all)
}

/// One connection's life: (re)connect, then requests back to back until `deadline`. A connection that
/// fails is counted and opened again after a pause, not in a spin.
async fn connection(load: &Load, mut n: usize, deadline: Instant) -> Tally {
    let mut tally = Tally { latency_us: histogram(), non_2xx: 0, errors: 0, fast: 0 };
    let authorization = match &load.via {
        Via::ApiKey { key, .. } => http::HeaderValue::from_str(&format!("Bearer {key}")).ok(),
        Via::Mtls { .. } => None,
    };
    while Instant::now() < deadline {
        let open = async {
            let tcp = tokio::net::TcpStream::connect(load.via.addr()).await.ok()?;
            let _ = tcp.set_nodelay(true);
            Some(tcp)
        };
        let Some(tcp) = open.await else {
            tally.errors += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let finished = match &load.via {
            Via::ApiKey { .. } => {
                exchange(tcp, load, authorization.as_ref(), &mut n, &mut tally, deadline).await
            }
            Via::Mtls { tls, .. } => {
                let name = rustls::pki_types::ServerName::from(
                    rustls::pki_types::DnsName::try_from("localhost").unwrap_or_else(|e| unreachable!("{e}")),
                );
                match tokio_rustls::TlsConnector::from(Arc::clone(tls)).connect(name, tcp).await {
                    Ok(stream) => exchange(stream, load, None, &mut n, &mut tally, deadline).await,
                    Err(_) => {
                        tally.errors += 1;
                        false
                    }
                }
            }
        };
        if !finished {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tally
}

/// Requests back to back on an open connection until `deadline` (`true`) or until it fails (`false`).
async fn exchange<S>(
    io: S,
    load: &Load,
    authorization: Option<&http::HeaderValue>,
    n: &mut usize,
    tally: &mut Tally,
    deadline: Instant,
) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await
    else {
        tally.errors += 1;
        return false;
    };
    let driver = tokio::spawn(conn);
    let mut finished = true;
    while Instant::now() < deadline {
        *n = n.wrapping_add(1);
        let mut req = http::Request::post(load.path)
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(a) = authorization {
            req = req.header(http::header::AUTHORIZATION, a.clone());
        }
        let Ok(req) = req.body(Full::new((load.bodies)(*n))) else {
            tally.errors += 1;
            continue;
        };
        let t = Instant::now();
        let answered = match send.send_request(req).await {
            Ok(resp) => {
                let ok = resp.status().is_success();
                resp.into_body().collect().await.ok().map(|b| (ok, b.to_bytes()))
            }
            Err(_) => None,
        };
        let Some((ok, body)) = answered else {
            tally.errors += 1;
            finished = false;
            break;
        };
        tally.latency_us.saturating_record(t.elapsed().as_micros().max(1) as u64);
        tally.non_2xx += u64::from(!ok);
        tally.fast += u64::from(ok && body.windows(13).any(|w| w == b"\"tier\":\"fast\""));
    }
    driver.abort();
    finished
}

/// Several loads of one kind summarised: the median run's requests/s and the range over runs, the
/// percentiles of every request of every run.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Runs summarised.
    pub runs: usize,
    /// Requests answered, over all runs.
    pub requests: u64,
    /// The median run's requests/s.
    pub rps: f64,
    /// The slowest run's.
    pub rps_min: f64,
    /// The fastest run's.
    pub rps_max: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub non_2xx: u64,
    /// Connections that failed to open and requests that got no answer.
    pub socket_errors: u64,
}

/// The median of `v` (the mean of the middle two for an even count); 0 for none.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `outcomes` summarised.
pub fn summarise(outcomes: &[Outcome]) -> Measured {
    let mut all = histogram();
    for o in outcomes {
        // Same bounds on both sides: adding cannot fail.
        let _ = all.add(&o.latency_us);
    }
    let rps: Vec<f64> = outcomes.iter().map(Outcome::rps).collect();
    let ms = |q: f64| if all.is_empty() { 0.0 } else { all.value_at_quantile(q) as f64 / 1e3 };
    Measured {
        runs: outcomes.len(),
        requests: all.len(),
        rps: median(&rps),
        rps_min: if rps.is_empty() { 0.0 } else { rps.iter().copied().fold(f64::INFINITY, f64::min) },
        rps_max: rps.iter().copied().fold(0.0, f64::max),
        p50_ms: ms(0.50),
        p90_ms: ms(0.90),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: if all.is_empty() { 0.0 } else { all.max() as f64 / 1e3 },
        non_2xx: outcomes.iter().map(|o| o.non_2xx).sum(),
        socket_errors: outcomes.iter().map(|o| o.errors).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(latencies_us: &[u64], secs: u64) -> Outcome {
        let mut h = histogram();
        for &l in latencies_us {
            h.record(l).unwrap();
        }
        Outcome { latency_us: h, elapsed: Duration::from_secs(secs), non_2xx: 1, errors: 2, fast: 0 }
    }

    #[test]
    fn runs_summarise_as_the_median_rate_its_range_and_every_requests_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        // 100 requests in 10 s, 300 in 10 s, 200 in 10 s: 10, 30 and 20 requests/s.
        let runs = [
            outcome(&[1_000; 100], 10),
            outcome(&[2_000; 300], 10),
            outcome(&[[1_000; 199].as_slice(), &[50_000]].concat(), 10),
        ];
        let m = summarise(&runs);
        assert_eq!((m.runs, m.requests, m.non_2xx, m.socket_errors), (3, 600, 3, 6));
        assert_eq!((m.rps, m.rps_min, m.rps_max), (20.0, 10.0, 30.0));
        // 299 of 600 at 1 ms, 300 at 2 ms, one at 50 ms (within the histogram's 3 digits).
        assert!((m.p50_ms - 2.0).abs() < 0.01, "{m:?}");
        assert!((m.p99_ms - 2.0).abs() < 0.01 && (m.max_ms - 50.0).abs() < 0.05, "{m:?}");
        assert_eq!(summarise(&[]).rps, 0.0);
    }
}
