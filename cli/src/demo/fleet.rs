//! The demo's processes: one coordinator and one participant per institution, each the real `hearth`
//! binary with its own configuration file, ready file and log, killed when the demo ends.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

use super::path_str;

/// Child processes, killed when dropped.
pub(crate) struct Fleet {
    children: Vec<(String, Child)>,
    /// Each node's operations endpoints (`coordinator`, then the participants): name and address.
    pub(crate) ops: Vec<(String, String)>,
    /// Set in every child's environment (the keystore passphrase).
    env: Vec<(String, String)>,
}

/// How every node of the demo is configured.
pub(crate) struct Nodes {
    /// Whether the coordinator accepts plain (not securely aggregated) jobs.
    pub(crate) allow_plain: bool,
    /// The consortium's algorithm suite.
    pub(crate) suite: hearth_crypto::SuiteId,
    /// The keystore settings of every node.
    pub(crate) keystore: hearth_node::config::KeystoreConfig,
    /// The passphrase every node's keystore is sealed under.
    pub(crate) passphrase: String,
    /// Every participant's `[service]` section (`hearth bench serve` turns the API-key listener on).
    pub(crate) service: hearth_desk::DeskConfig,
    /// More environment for every process (e.g. the API key).
    pub(crate) env: Vec<(String, String)>,
}

impl Fleet {
    pub(crate) async fn spawn(&mut self, name: &str, args: &[&str], log: &Path) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("locating the hearth executable")?;
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(exe)
            .args(args)
            .env("HEARTH_LOG", std::env::var("HEARTH_LOG").unwrap_or_else(|_| "info".into()))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited early ({status}); see its log");
            }
        }
        Ok(())
    }
}

/// Waits for a service's ready file and returns the address in it.
async fn wait_ready(file: &Path, fleet: &mut Fleet, what: &str) -> anyhow::Result<String> {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(file) {
            if !s.is_empty() {
                return Ok(s.trim().to_string());
            }
        }
        fleet.check_alive()?;
        if start.elapsed() > Duration::from_secs(60) {
            bail!("{what} did not start within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the coordinator (its state under `dir/coordinator`, plain aggregation allowed only if
/// `nodes.allow_plain`) and a participant per name (its store in `dir/participants/NAME`), and waits until all
/// listen. Returns the fleet, the coordinator's address and each participant's inference address.
/// Every node also serves its operations endpoints (`/healthz`, `/readyz`, `/metrics`) on a loopback
/// port of its own: [`Fleet::ops`] lists them.
pub(crate) async fn start(
    dir: &Path,
    pki_dir: &Path,
    names: &[String],
    nodes: &Nodes,
) -> anyhow::Result<(Fleet, String, Vec<(String, String)>)> {
    let coord_state = dir.join("coordinator");
    let _ = std::fs::remove_dir_all(&coord_state);

    let mut fleet = Fleet {
        children: vec![],
        ops: vec![],
        env: [(hearth_node::config::PASSPHRASE_ENV.to_string(), nodes.passphrase.clone())]
            .into_iter()
            .chain(nodes.env.iter().cloned())
            .collect(),
    };
    let ready = dir.join("coordinator.addr");
    let _ = std::fs::remove_file(&ready);
    let coord_cfg = dir.join("coordinator.toml");
    let c = hearth_coordinator::CoordinatorConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir: coord_state,
        tls: hearth_transport::TlsPaths::in_dir(pki_dir, "coordinator"),
        // Plain averaging only when asked for (or when there are too few participants for secure
        // aggregation); otherwise the coordinator refuses it.
        policy: hearth_policies::RoundPolicy {
            allow_plain_aggregation: nodes.allow_plain,
            ..Default::default()
        },
        keystore: nodes.keystore.clone(),
        suite: nodes.suite,
        ops_listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        ..Default::default()
    };
    std::fs::write(&coord_cfg, toml::to_string(&c)?)?;
    fleet
        .spawn(
            "coordinator",
            &["coordinator", "--config", path_str(&coord_cfg)?, "--ready-file", path_str(&ready)?],
            &dir.join("logs/coordinator.log"),
        )
        .await?;
    let coord_addr = wait_ready(&ready, &mut fleet, "the coordinator").await?;
    // Written before the main ready file.
    let ops =
        std::fs::read_to_string(ready.with_extension("ops")).context("the coordinator's ops address")?;
    fleet.ops.push(("coordinator".into(), ops.trim().to_string()));
    let mut endpoints = Vec::new();
    for name in names {
        let cfg_path = dir.join(format!("{name}.toml"));
        let ready = dir.join(format!("{name}.addr"));
        let _ = std::fs::remove_file(&ready);
        let p = hearth_participant::ParticipantConfig {
            coordinator: hearth_transport::HostPort::new(&coord_addr).map_err(anyhow::Error::msg)?,
            coordinator_name: "localhost".into(),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.join("participants").join(name),
            tls: hearth_transport::TlsPaths::in_dir(pki_dir, name),
            keystore: nodes.keystore.clone(),
            suite: nodes.suite,
            service: nodes.service.clone(),
            ops_listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Default::default()
        };
        std::fs::write(&cfg_path, toml::to_string(&p)?)?;
        fleet
            .spawn(
                name,
                &["participant", "--config", path_str(&cfg_path)?, "--ready-file", path_str(&ready)?],
                &dir.join(format!("logs/{name}.log")),
            )
            .await?;
        endpoints.push((name.clone(), ready));
    }
    let mut addrs = Vec::new();
    for (name, ready) in &endpoints {
        addrs.push((name.clone(), wait_ready(ready, &mut fleet, name).await?));
        let ops = std::fs::read_to_string(ready.with_extension("ops"))
            .with_context(|| format!("{name}'s ops address"))?;
        fleet.ops.push((name.clone(), ops.trim().to_string()));
    }
    eprintln!(
        "coordinator on {coord_addr}, {} participants up; logs in {}",
        addrs.len(),
        dir.join("logs").display()
    );
    let ops: Vec<String> = fleet.ops.iter().map(|(n, a)| format!("{n} http://{a}/metrics")).collect();
    eprintln!("operations endpoints (/healthz, /readyz, /metrics): {}", ops.join(", "));
    Ok((fleet, coord_addr, addrs))
}
