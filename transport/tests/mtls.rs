//! The accept loop over real sockets: who gets in, who does not, and that a bad peer cannot stop the
//! server from serving the next good one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::{Extension, Router};
use hearth_crypto::pki::{ConsortiumCa, Role};
use hearth_transport::{
    client_config, client_config_to, serve, server_config, PeerIdentity, ServeOptions, TlsMaterial,
};
use http_body_util::{BodyExt, Empty};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

fn material(ca: &ConsortiumCa, role: Role, id: &str) -> TlsMaterial {
    let c = ca.issue(role, id, &["localhost".into()], &[[127, 0, 0, 1].into()]).unwrap();
    TlsMaterial::from_pem(ca.cert_pem(), c.cert_pem, c.key_pem)
}

struct Server {
    addr: String,
    refusals: Arc<Mutex<Vec<String>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(ca: &ConsortiumCa) -> Server {
    start_as(ca, Role::Coordinator, "coordinator").await
}

async fn start_as(ca: &ConsortiumCa, role: Role, id: &str) -> Server {
    let m = material(ca, role, id);
    let app = Router::new()
        .route("/whoami", get(|Extension(p): Extension<PeerIdentity>| async move { p.0.to_string() }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let refusals = Arc::new(Mutex::new(Vec::new()));
    let r2 = Arc::clone(&refusals);
    let opts = ServeOptions {
        handshake_timeout: Duration::from_millis(500),
        on_refused: Some(Arc::new(move |_, reason: &str| r2.lock().unwrap().push(reason.to_string()))),
        ..ServeOptions::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, server_config(&m).unwrap(), app, opts, async move {
        let _ = rx.await;
    }));
    Server { addr, refusals, _stop: tx }
}

/// GET /whoami over HTTP/1.1 or HTTP/2 with the given client config.
async fn whoami(addr: &str, cfg: rustls::ClientConfig, h2: bool) -> Result<String, String> {
    let mut cfg = cfg;
    cfg.alpn_protocols = vec![if h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let io = hyper_util::rt::TokioIo::new(tls);
    let req = http::Request::get("https://localhost/whoami").body(Empty::<bytes::Bytes>::new()).unwrap();
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    };
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn config_of(m: &TlsMaterial) -> rustls::ClientConfig {
    (*client_config(m).unwrap()).clone()
}

#[tokio::test]
async fn a_consortium_peer_is_served_over_http1_and_http2_with_its_identity() {
    let ca = ConsortiumCa::generate("c").unwrap();
    let s = start(&ca).await;
    let cfg = config_of(&material(&ca, Role::Participant, "bank-a"));
    assert_eq!(whoami(&s.addr, cfg.clone(), false).await.unwrap(), "participant:bank-a");
    assert_eq!(whoami(&s.addr, cfg, true).await.unwrap(), "participant:bank-a");
}

#[tokio::test]
async fn peers_without_a_consortium_certificate_are_refused() {
    let ca = ConsortiumCa::generate("c").unwrap();
    let s = start(&ca).await;
    let good = material(&ca, Role::App, "app");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.cert_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }

    // (b) no client certificate at all.
    let no_cert = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    assert!(whoami(&s.addr, no_cert, false).await.is_err());

    // (c) a certificate from another CA.
    let other = ConsortiumCa::generate("other").unwrap();
    let mut foreign = material(&other, Role::Operator, "operator");
    foreign.ca_pem = ca.cert_pem();
    assert!(whoami(&s.addr, config_of(&foreign), false).await.is_err());

    // (d) a client that speaks only TLS 1.2.
    let certs: Vec<_> = rustls_pemfile::certs(&mut good.cert_pem.as_bytes()).map(|c| c.unwrap()).collect();
    let key = rustls_pemfile::private_key(&mut good.key_pem.as_bytes()).unwrap().unwrap();
    let tls12 = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(certs, key)
        .unwrap();
    assert!(whoami(&s.addr, tls12, false).await.is_err());

    // (e) a consortium-signed certificate without a Hearth identity: not possible through `issue`, so
    // sign one directly with the CA key.
    let ca_key = rcgen::KeyPair::from_pem(&ca.key_pem()).unwrap();
    let ca_der = rustls_pemfile::certs(&mut ca.cert_pem().as_bytes()).next().unwrap().unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca_der, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
    let anonymous =
        TlsMaterial::from_pem(ca.cert_pem(), leaf.pem(), zeroize::Zeroizing::new(leaf_key.serialize_pem()));
    assert!(whoami(&s.addr, config_of(&anonymous), false).await.is_err());

    // Every refusal was reported, with a reason.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refusals = s.refusals.lock().unwrap().clone();
    assert!(refusals.len() >= 4, "{refusals:?}");
    assert!(refusals.iter().any(|r| r.contains("Hearth identity")), "{refusals:?}");

    // And the server still serves a good peer.
    assert_eq!(whoami(&s.addr, config_of(&good), false).await.unwrap(), "app:app");
}

#[tokio::test]
async fn garbage_and_stalled_handshakes_do_not_block_good_peers() {
    let ca = ConsortiumCa::generate("c").unwrap();
    let s = start(&ca).await;
    let mut garbage = TcpStream::connect(&s.addr).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\xfe").await.unwrap();
    // A peer that connects and says nothing: held only until the handshake deadline.
    let _stalled = TcpStream::connect(&s.addr).await.unwrap();
    let cfg = config_of(&material(&ca, Role::Operator, "op"));
    assert_eq!(whoami(&s.addr, cfg, true).await.unwrap(), "operator:op");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let refusals = s.refusals.lock().unwrap().clone();
    assert!(refusals.iter().any(|r| r.contains("timed out")), "{refusals:?}");
}

#[tokio::test]
async fn tls_material_errors_name_the_file() {
    let err = TlsMaterial::load("/nonexistent/ca.pem".as_ref(), "/x".as_ref(), "/y".as_ref()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    let ca = ConsortiumCa::generate("c").unwrap();
    let mut m = material(&ca, Role::App, "app");
    m.key_pem = zeroize::Zeroizing::new("not a key".into());
    assert!(server_config(&m).is_err());
}

#[tokio::test]
async fn a_participant_key_cannot_pose_as_the_coordinator() {
    let ca = ConsortiumCa::generate("c").unwrap();
    let me = material(&ca, Role::Participant, "bank-a");
    let to_coordinator = (*client_config_to(&me, Role::Coordinator).unwrap()).clone();
    // The real coordinator is accepted.
    let real = start(&ca).await;
    assert_eq!(whoami(&real.addr, to_coordinator.clone(), true).await.unwrap(), "participant:bank-a");
    // Another participant's certificate, from the same CA and naming the same host, is not.
    let impostor = start_as(&ca, Role::Participant, "airline-b").await;
    let e = whoami(&impostor.addr, to_coordinator, true).await.unwrap_err();
    assert!(e.contains("participant:airline-b") && e.contains("not a coordinator"), "{e}");
}
