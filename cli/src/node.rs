//! Which node a `hearth keys` or `hearth audit` command works on: its directory, and the keystore
//! settings and suite from its configuration file (or the defaults), with the same environment
//! overrides the service reads (`HEARTH_COORDINATOR__...`, `HEARTH_PARTICIPANT__...`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use hearth_crypto::SuiteId;
use hearth_node::audit::files::{read_meta, AuditPaths};
use hearth_node::config::KeystoreConfig;

/// Which service a configuration file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    /// `hearth coordinator` (state_dir).
    Coordinator,
    /// `hearth participant` (data_dir).
    Participant,
}

/// Arguments naming a node.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// The node's directory: the coordinator's `state_dir` or the participant's `data_dir`.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The node's configuration file, for its [keystore] section, suite and directory.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Which service the configuration is for (default: guessed from the file; participant files have
    /// `data_dir` or `coordinator`).
    #[arg(long, value_enum)]
    pub service: Option<Service>,
}

/// A resolved node.
#[derive(Debug, Clone)]
pub struct Target {
    /// The node's directory.
    pub dir: PathBuf,
    /// Its keystore settings.
    pub keystore: KeystoreConfig,
    /// Its suite: from the configuration, else from the audit log, else international.
    pub suite: SuiteId,
    /// Its `[tls]` files, when a configuration file named them.
    pub tls: Option<hearth_transport::TlsPaths>,
}

fn guess_service(file: &Path) -> anyhow::Result<Service> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let v: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {} as TOML", file.display()))?;
    Ok(if v.contains_key("data_dir") || v.contains_key("coordinator") || v.contains_key("holdout_fraction") {
        Service::Participant
    } else {
        Service::Coordinator
    })
}

impl NodeArgs {
    /// Resolves the node: configuration (defaults, file, environment) first, `--state-dir` last.
    pub fn resolve(&self) -> anyhow::Result<Target> {
        let service = match (self.service, &self.config) {
            (Some(s), _) => Some(s),
            (None, Some(f)) => Some(guess_service(f)?),
            (None, None) => None,
        };
        let (dir, keystore, suite, tls) = match service {
            Some(Service::Coordinator) => {
                let c: hearth_coordinator::CoordinatorConfig =
                    crate::config::load(self.config.as_deref(), "HEARTH_COORDINATOR")?;
                (c.state_dir, c.keystore, Some(c.suite), Some(c.tls))
            }
            Some(Service::Participant) => {
                let c: hearth_participant::ParticipantConfig =
                    crate::config::load(self.config.as_deref(), "HEARTH_PARTICIPANT")?;
                (c.data_dir, c.keystore, Some(c.suite), Some(c.tls))
            }
            None => match &self.state_dir {
                Some(d) => (d.clone(), KeystoreConfig::default(), None, None),
                None => bail!("name the node with --state-dir DIR or --config FILE"),
            },
        };
        let dir = self.state_dir.clone().unwrap_or(dir);
        let paths = AuditPaths::new(&dir);
        let from_log = paths.meta.exists().then(|| read_meta(&paths)).transpose()?.map(|m| m.suite);
        let suite = suite.or(from_log).unwrap_or(SuiteId::International);
        Ok(Target { dir, keystore, suite, tls })
    }
}

/// The actor CLI commands record: the local user, since the CLI has no certificate.
pub fn cli_actor(command: &str) -> String {
    let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "unknown".into());
    format!("local:{user} (hearth {command})")
}
