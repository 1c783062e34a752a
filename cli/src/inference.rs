//! `hearth inference`: a stateless inference replica of one institution (hearth_inference::replica).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

/// Arguments of `hearth inference`; each has an environment variable, for container deployments.
#[derive(Debug, Args)]
pub struct InferenceArgs {
    /// The participant's gRPC address (HOST:PORT), whose served models this replica serves.
    #[arg(long, env = "HEARTH_INFERENCE_PARTICIPANT")]
    pub participant: String,
    /// The name the participant's certificate carries (default: the host of --participant).
    #[arg(long, env = "HEARTH_INFERENCE_PARTICIPANT_NAME")]
    pub participant_name: Option<String>,
    /// Where the institution's apps reach the replica (HTTPS and gRPC, client certificates required).
    #[arg(long, env = "HEARTH_INFERENCE_LISTEN", default_value = "0.0.0.0:7900")]
    pub listen: SocketAddr,
    /// The operations endpoints (/healthz, /readyz, /metrics; plain HTTP, for the pod or host network).
    #[arg(long, env = "HEARTH_INFERENCE_OPS_LISTEN")]
    pub ops_listen: Option<SocketAddr>,
    /// The consortium CA certificate (PEM).
    #[arg(long, env = "HEARTH_INFERENCE_CA", default_value = "/etc/hearth/ca.pem")]
    pub ca: PathBuf,
    /// The replica's certificate (PEM): role inference, acting for the institution, naming the host
    /// apps reach it by (`hearth pki issue --role inference --institution ID --dns NAME`).
    #[arg(long, env = "HEARTH_INFERENCE_CERT", default_value = "/etc/hearth/inference.pem")]
    pub cert: PathBuf,
    /// The replica's private key (PEM). Not with --pkcs11-module.
    #[arg(long, env = "HEARTH_INFERENCE_KEY", default_value = "/etc/hearth/inference.key")]
    pub key: PathBuf,
    /// A PKCS#11 module (the institution's HSM client library): the TLS key is the token's key
    /// labelled `tls` (made there by `hearth pki request --config` for a configuration whose
    /// [keystore] names the token) and never leaves it; --key is not read.
    #[arg(long, env = "HEARTH_INFERENCE_PKCS11_MODULE", requires = "token_label")]
    pub pkcs11_module: Option<PathBuf>,
    /// The label of the token holding the TLS key.
    #[arg(long, env = "HEARTH_INFERENCE_TOKEN_LABEL")]
    pub token_label: Option<String>,
    /// The environment variable holding the token's user PIN.
    #[arg(long, default_value = "HEARTH_PKCS11_PIN")]
    pub pin_env: String,
    /// Seconds between asking the participant whether its served models changed.
    #[arg(long, env = "HEARTH_INFERENCE_POLL_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub poll_seconds: u64,
    /// Where the encoder tier's sentence encoder is installed (`hearth model fetch-encoder --dir`), for
    /// encoder-tier intent models. Default: $HEARTH_ENCODER_DIR, else ~/.cache/hearth/models/all-MiniLM-L6-v2.
    #[arg(long, value_name = "DIR")]
    pub encoder_dir: Option<PathBuf>,
    /// The intent cascade: while an encoder-tier intent model is served, the fast-tier model answers the
    /// queries it is at least this sure of (in (0, 1]), the encoder tier's the rest.
    #[arg(long, env = "HEARTH_INFERENCE_CASCADE_CONFIDENCE", default_value_t = hearth_models::cascade::CASCADE_CONFIDENCE, value_parser = confidence)]
    pub cascade_confidence: f32,
    /// Turn the intent cascade off: an encoder-tier model answers every query (apps may still ask for
    /// `"tier": "fast"`).
    #[arg(long, env = "HEARTH_INFERENCE_NO_CASCADE")]
    pub no_cascade: bool,
    /// Write the bound address to this file once listening (the operations address beside it, `.ops`).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// Reads `--cascade-confidence`: a probability above 0, at most 1.
fn confidence(s: &str) -> Result<f32, String> {
    let c = s.parse::<f32>().map_err(|e| format!("{s:?}: {e}"))?;
    hearth_models::cascade::check_confidence(c).map(|()| c)
}

/// Runs a replica until Ctrl-C or SIGTERM.
pub async fn run(a: InferenceArgs) -> anyhow::Result<()> {
    let tls = match (&a.pkcs11_module, &a.token_label) {
        (Some(module), Some(token)) => token_tls(&a, module, token)?,
        _ => hearth_transport::TlsMaterial::load(&a.ca, &a.cert, &a.key)
            .context("loading the replica's TLS files")?,
    };
    let participant = hearth_transport::HostPort::new(&a.participant).context("--participant")?;
    let participant_name = match a.participant_name {
        Some(n) => n,
        None => participant.host().to_string(),
    };
    let config = hearth_inference::replica::ReplicaConfig {
        participant: participant.as_str().to_string(),
        participant_name,
        tls,
        provider: hearth_transport::TlsProvider::default(),
        listen: a.listen,
        ops_listen: a.ops_listen,
        poll: Duration::from_secs(a.poll_seconds),
        encoder_dir: a.encoder_dir.clone().unwrap_or_else(hearth_models::encoder::default_dir),
        cascade_confidence: (!a.no_cascade).then_some(a.cascade_confidence),
    };
    let running = hearth_inference::replica::start(config, crate::shutdown_signal()).await?;
    if let (Some(path), Some(ops)) = (a.ready_file.as_deref(), running.ops_addr) {
        crate::write_ready(Some(&path.with_extension("ops")), &ops.to_string())?;
    }
    crate::write_ready(a.ready_file.as_deref(), &running.addr.to_string())?;
    running.done.await.context("inference replica task")?.context("serving")
}

/// The CA and certificate files, with the TLS key the token holds under `tls` signing every handshake
/// (`hearth_node::keys::keystore_tls_material`, as a node on a token does).
fn token_tls(
    a: &InferenceArgs,
    module: &std::path::Path,
    token: &str,
) -> anyhow::Result<hearth_transport::TlsMaterial> {
    use hearth_crypto::keystore::{KeyStore, Pkcs11Config, Pkcs11KeyStore};
    let pin = zeroize::Zeroizing::new(std::env::var(&a.pin_env).with_context(|| {
        format!("the token's PIN: set ${} (or name another variable with --pin-env)", a.pin_env)
    })?);
    let p11 = Pkcs11Config::new(module, token, pin.as_str());
    let store = Pkcs11KeyStore::open(&p11, hearth_crypto::SuiteId::International, None)
        .with_context(|| format!("opening PKCS#11 token {token:?} with {}", module.display()))?;
    let store: std::sync::Arc<dyn KeyStore> = std::sync::Arc::new(store);
    Ok(hearth_node::keys::keystore_tls_material(&store, &format!("PKCS#11 token {token:?}"), &a.ca, &a.cert)?)
}
