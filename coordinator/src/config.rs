//! The coordinator's configuration: a TOML file, every field optional, overridable from the environment by
//! the CLI (`HEARTH_COORDINATOR__LISTEN=...`).

use std::net::SocketAddr;
use std::path::PathBuf;

use hearth_crypto::SuiteId;
use hearth_node::config::{AuditConfig, CheckConfig, ConfigProblem, KeystoreConfig};
use hearth_policies::RoundPolicy;
use hearth_transport::TlsPaths;
use serde::{Deserialize, Serialize};

/// Configuration of `hearth coordinator`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Address to listen on for gRPC over mTLS. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory for the store (`coordinator.redb`), the sealed keystore and the audit log (`audit/`).
    pub state_dir: PathBuf,
    /// TLS material.
    pub tls: TlsPaths,
    /// The consortium's algorithm suite (`international` or `national`): protocol signatures, secure
    /// aggregation, hashing and at-rest encryption. Every node of a consortium must use the same one.
    pub suite: SuiteId,
    /// Bounds every job must respect.
    pub policy: RoundPolicy,
    /// How many updates may stream in at once; each holds one model-sized buffer until validated.
    pub max_concurrent_uploads: usize,
    /// Where the coordinator's keys live (audit key, key-encryption key). Default: a sealed file in
    /// `state_dir`, its passphrase in `HEARTH_KEYSTORE_PASSPHRASE`.
    pub keystore: KeystoreConfig,
    /// The audit log's name.
    pub audit: AuditConfig,
    /// The consortium's revocation list (PEM, `hearth pki revoke` writes it), re-read every few seconds:
    /// revoked certificates fail the handshake, are refused at every call and left out of rosters, and
    /// participants fetch the list from here. Default: `crl.pem` beside the CA certificate.
    pub revocation_list: Option<PathBuf>,
    /// Where the operations endpoints listen (plain HTTP: `/healthz`, `/readyz`, `/metrics`), for the
    /// host or pod network only, never a public one. Default: none.
    pub ops_listen: Option<SocketAddr>,
}

impl CoordinatorConfig {
    /// Where the revocation list is read from.
    pub fn revocation_list_path(&self) -> PathBuf {
        self.revocation_list.clone().unwrap_or_else(|| self.tls.ca.with_file_name("crl.pem"))
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            state_dir: PathBuf::from("hearth-data/coordinator"),
            tls: TlsPaths::in_dir(std::path::Path::new("hearth-pki"), "coordinator"),
            suite: SuiteId::International,
            policy: RoundPolicy::default(),
            max_concurrent_uploads: 4,
            keystore: KeystoreConfig::default(),
            audit: AuditConfig::default(),
            revocation_list: None,
            ops_listen: None,
        }
    }
}

impl CheckConfig for CoordinatorConfig {
    fn check(&self) -> Result<(), ConfigProblem> {
        if self.max_concurrent_uploads == 0 {
            return Err(ConfigProblem::new("max_concurrent_uploads", "must be at least 1"));
        }
        self.keystore.check()
    }
}
