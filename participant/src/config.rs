//! A participant's configuration: a TOML file, every field optional, overridable from the environment by
//! the CLI (`HEARTH_PARTICIPANT__COORDINATOR=...`).

use std::net::SocketAddr;
use std::path::PathBuf;

use hearth_crypto::SuiteId;
use hearth_node::config::{AuditConfig, CheckConfig, ConfigProblem, KeystoreConfig};
use hearth_transport::{HostPort, TlsPaths};
use serde::{Deserialize, Serialize};

/// Configuration of `hearth participant`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParticipantConfig {
    /// The coordinator's gRPC address, `host:port`.
    pub coordinator: HostPort,
    /// The name the coordinator's certificate must carry (a DNS name or an IP address).
    pub coordinator_name: String,
    /// Address of the inference endpoint (HTTP JSON and gRPC on one mTLS port). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory of this participant's embedded store (its data shard and served model, both encrypted),
    /// its sealed keystore and its audit log (`audit/`).
    pub data_dir: PathBuf,
    /// TLS material.
    pub tls: TlsPaths,
    /// The consortium's algorithm suite (`international` or `national`): protocol signatures, secure
    /// aggregation, hashing and at-rest encryption. Every node of a consortium must use the same one.
    pub suite: SuiteId,
    /// The node's SM2 protocol signing key (hex file written by `hearth pki init --suite national`; by
    /// default the TLS key's path with `.sm2.key`, e.g. `bank-a.sm2.key`). Only the national suite needs
    /// it: the international suite signs with the TLS key.
    pub protocol_key: Option<PathBuf>,
    /// Share of the local text data (intent and emotion) kept out of training to calibrate locally: the
    /// out-of-scope threshold, the emotion labels' thresholds and the anger escalation threshold.
    pub holdout_fraction: f64,
    /// The fewest members a secure-aggregation roster may have for this participant to take part (at
    /// least 3): its own floor, whatever the coordinator announces.
    pub min_secure_members: usize,
    /// The institution's privacy policy, signed by its own data protection officer (`hearth budget
    /// sign`). Default: `privacy-policy.json` in the directory named after the TLS certificate
    /// (`pki/bank-a.pem` → `pki/bank-a/privacy-policy.json`, where `hearth pki init` writes a starter).
    /// Read at every use. Without it the participant answers no differentially private round and no
    /// query.
    pub privacy_policy: Option<PathBuf>,
    /// The consortium's member list, signed by the institutions (`hearth members sign`): every member of a
    /// secure-aggregation roster must be on it with its certificate. Default: `members.json` beside the
    /// CA certificate (where `hearth pki init` writes it). The first list accepted is pinned; a new
    /// version needs the signatures of the pinned list's threshold of members. Without the file (and
    /// nothing pinned) any participant certificate from the CA may be a member.
    pub members: Option<PathBuf>,
    /// The consortium's revocation list (PEM): revoked certificates fail the handshake and are refused in
    /// rosters. The coordinator relays newer lists, taken only when the CA signed them and they are newer
    /// than the one held. Default: `crl.pem` beside the CA certificate.
    pub revocation_list: Option<PathBuf>,
    /// Where the operations endpoints listen (plain HTTP: `/healthz`, `/readyz` (connected to the
    /// coordinator), `/metrics`), for the host or pod network only, never a public one. Default: none.
    pub ops_listen: Option<SocketAddr>,
    /// Where the participant's keys live (audit, key-encryption and identity-hash keys). Default: a
    /// sealed file in `data_dir`, its passphrase in `HEARTH_KEYSTORE_PASSPHRASE`.
    pub keystore: KeystoreConfig,
    /// The audit log's name.
    pub audit: AuditConfig,
    /// The customer-service core (`POST /v1/messages`): rules file, session window, data minimisation
    /// policy, and the optional loopback API-key listener for local apps.
    pub service: hearth_desk::DeskConfig,
    /// Where the encoder tier's pretrained sentence encoder is installed (`hearth model
    /// fetch-encoder`). Default: `$HEARTH_ENCODER_DIR`, else `~/.cache/hearth/models/all-MiniLM-L6-v2`.
    /// Only encoder-tier jobs and models load it.
    pub encoder_dir: Option<PathBuf>,
    /// The intent cascade, while an encoder-tier intent model is served: the newest fast-tier intent
    /// model answers the queries it is at least this sure of (in (0, 1]), the encoder tier's model the
    /// rest. `1` sends nearly everything to the encoder; `cascade = false` sends everything.
    pub cascade_confidence: f32,
    /// Whether the intent cascade runs (default true).
    pub cascade: bool,
}

impl Default for ParticipantConfig {
    fn default() -> Self {
        Self {
            coordinator: HostPort::loopback(7700),
            coordinator_name: "localhost".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7800)),
            data_dir: PathBuf::from("hearth-data/participant"),
            tls: TlsPaths::in_dir(std::path::Path::new("hearth-pki"), "participant"),
            suite: SuiteId::International,
            protocol_key: None,
            holdout_fraction: 0.1,
            min_secure_members: crate::secagg::DEFAULT_MIN_MEMBERS,
            privacy_policy: None,
            members: None,
            revocation_list: None,
            ops_listen: None,
            keystore: KeystoreConfig::default(),
            audit: AuditConfig::default(),
            service: hearth_desk::DeskConfig::default(),
            encoder_dir: None,
            cascade_confidence: hearth_models::cascade::CASCADE_CONFIDENCE,
            cascade: true,
        }
    }
}

impl ParticipantConfig {
    /// Where the signed member list is read from.
    pub fn members_path(&self) -> PathBuf {
        self.members.clone().unwrap_or_else(|| self.tls.ca.with_file_name(crate::membership::MEMBERS_FILE))
    }

    /// The confidence at which the intent cascade's fast model answers alone; `None` when it is off.
    pub fn cascade_confidence(&self) -> Option<f32> {
        self.cascade.then_some(self.cascade_confidence)
    }

    /// Where the encoder tier's model is loaded from.
    pub fn encoder_path(&self) -> PathBuf {
        self.encoder_dir.clone().unwrap_or_else(hearth_models::encoder::default_dir)
    }

    /// Where the revocation list is read from at start.
    pub fn revocation_list_path(&self) -> PathBuf {
        self.revocation_list.clone().unwrap_or_else(|| self.tls.ca.with_file_name("crl.pem"))
    }

    /// Where the institution's signed privacy policy is read from.
    pub fn privacy_policy_path(&self) -> PathBuf {
        self.privacy_policy
            .clone()
            .unwrap_or_else(|| self.tls.cert.with_extension("").join(crate::privacy::SIGNED_POLICY_FILE))
    }
}

impl CheckConfig for ParticipantConfig {
    fn check(&self) -> Result<(), ConfigProblem> {
        if !(0.0..=0.5).contains(&self.holdout_fraction) {
            return Err(ConfigProblem::new("holdout_fraction", "must be between 0 and 0.5"));
        }
        if let Err(why) = hearth_models::cascade::check_confidence(self.cascade_confidence) {
            return Err(ConfigProblem::new("cascade_confidence", why));
        }
        if self.min_secure_members < 3 {
            return Err(ConfigProblem::new("min_secure_members", "must be at least 3"));
        }
        self.keystore.check()?;
        self.service.check().map_err(|(key, problem)| ConfigProblem::new(format!("service.{key}"), problem))
    }
}
