//! `hearth keys`: list a node's keys and rotate them. Both open the node's keystore (the passphrase or
//! PIN comes from the environment or a file, as for the service); rotation takes the node's lock, so
//! it runs while the node is stopped, and is recorded in the node's audit log and signed at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use hearth_audit::{Action, Event, Outcome, SignatureType, VerifierKey};
use hearth_crypto::keystore::{KeyId, KeyKind, KeyVersion};
use hearth_node::audit::files::{read_meta, AuditPaths};
use hearth_node::audit::AuditLog;
use hearth_node::files::NodeLock;
use hearth_node::keys::{Create, NodeKeys, AUDIT_KEY, KEK, WITNESS_KEY};
use hearth_node::rewrap::{add_counts, TableRewrap};
use serde::Serialize;

use crate::node::{cli_actor, NodeArgs, Target};

/// `hearth keys ...`
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// List the node's keys: label, kind, current version, where they live; and the verifier keys
    /// (vkeys) an auditor configures for its audit log.
    #[command(
        after_help = "Examples:\n  HEARTH_KEYSTORE_PASSPHRASE=... hearth keys list --state-dir /var/lib/hearth/coordinator\n  hearth keys list --config bank-a.toml --json\n\nThe passphrase (or PKCS#11 PIN) is read as the service reads it: [keystore] passphrase_file, or the\nenvironment variable named by passphrase_env (HEARTH_KEYSTORE_PASSPHRASE by default)."
    )]
    List(ListArgs),
    /// Print the audit log's verifier keys (vkeys, every version, oldest first), read from the log's
    /// public keys.txt: no passphrase or PIN needed, so an auditor or a witness can be given them from
    /// the node's directory while the node runs.
    #[command(
        after_help = "Examples:\n  hearth keys vkeys --state-dir /var/lib/hearth/coordinator > coordinator.vkeys\n  hearth keys vkeys --config bank-a.toml"
    )]
    Vkeys(VkeysArgs),
    /// Make a new version of a key current. Data sealed under older versions stays readable; new data
    /// uses the new version. Recorded in the node's audit log (key.rotated). Stop the node first.
    #[command(
        after_help = "Examples:\n  hearth keys rotate --state-dir /var/lib/hearth/bank-a --label kek\n  hearth keys rotate --config coordinator.toml --label audit\n\nRotating `audit` starts signing checkpoints with the new version; give auditors the new vkey\n(printed here and by `hearth keys list`). Old checkpoints still verify under the old vkey."
    )]
    Rotate(RotateArgs),
    /// Move every stored object to the current key-encryption key version, so older versions can be
    /// retired. Resumable: an interrupted run keeps what it moved, and the next one finds the rest.
    /// Recorded in the node's audit log (key.rewrap). Stop the node first.
    #[command(
        after_help = "Examples:\n  hearth keys rotate --config bank-a.toml --label kek\n  hearth keys rewrap --config bank-a.toml\n  hearth data stats --config bank-a.toml        # every value under the new version\n  hearth keys retire --config bank-a.toml --version 1\n\nEach object is opened and sealed again with a fresh data key wrapped by the current version, --batch\nobjects per transaction, with progress after each. Covers every store in the node's directory: the\nparticipant's data, models and privacy ledger, its customer-service records, or the coordinator's\njobs, models and privacy ledger."
    )]
    Rewrap(RewrapArgs),
    /// Destroy an old version of the key-encryption key once nothing is sealed under it (after `hearth keys
    /// rewrap`). Refused while any stored object still names it, and for the current version. Recorded in
    /// the node's audit log (key.retired). Stop the node first.
    #[command(after_help = "Examples:\n  hearth keys retire --config bank-a.toml --version 1")]
    Retire(RetireArgs),
}

/// Arguments of `hearth keys rewrap`.
#[derive(Debug, clap::Args)]
pub struct RewrapArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Objects moved per transaction (and between progress lines).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
}

/// Arguments of `hearth keys retire`.
#[derive(Debug, clap::Args)]
pub struct RetireArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// The version of the key-encryption key to destroy.
    #[arg(long)]
    pub version: u32,
}

/// Arguments of `hearth keys list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `hearth keys vkeys`.
#[derive(Debug, clap::Args)]
pub struct VkeysArgs {
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Arguments of `hearth keys rotate`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// The key to rotate: audit, kek, identity-hash (or witness).
    #[arg(long)]
    pub label: String,
}

#[derive(Debug, Serialize)]
struct KeyRow {
    label: String,
    kind: String,
    version: u32,
    /// For audit (and witness) keys: the vkey of every version, oldest first.
    vkeys: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Listing {
    keystore: String,
    suite: String,
    location: String,
    audit_origin: Option<String>,
    keys: Vec<KeyRow>,
    /// Data keys wrapped per key-encryption key version (`kek@v1` -> count), and the limit per version.
    kek_wraps: BTreeMap<String, u64>,
    kek_wrap_limit: u64,
    /// The node's certificate, when its configuration names one: expiry and revocation.
    certificate: Option<CertStatus>,
}

#[derive(Debug, Serialize)]
struct CertStatus {
    identity: String,
    serial: String,
    not_after: String,
    days_left: i64,
    /// Whether the newest revocation list the node holds (or the one beside its CA) revokes it.
    revoked: bool,
    /// That list's CRL number and when the CA means to publish the next (`None`: no list).
    revocation_list: Option<u64>,
    revocation_list_next_update: Option<String>,
}

/// The node's certificate as `hearth keys list` shows it.
fn cert_status(t: &Target) -> anyhow::Result<Option<CertStatus>> {
    let Some(tls) = &t.tls else { return Ok(None) };
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let (Ok(ca_pem), Ok(cert_pem)) = (read(&tls.ca), read(&tls.cert)) else { return Ok(None) };
    let ca_der = hearth_crypto::pki::cert_der_from_pem(&ca_pem)?;
    let cert_der = hearth_crypto::pki::cert_der_from_pem(&cert_pem)?;
    let info = hearth_crypto::pki::inspect_issued_cert(&ca_der, &cert_der)
        .with_context(|| format!("{} against {}", tls.cert.display(), tls.ca.display()))?;
    // Read-only: the list kept in the node's directory and the one beside the CA, the newer one.
    let lists = hearth_node::revocation::RevocationState::open(ca_der, None)?;
    lists.offer_file(&t.dir.join(hearth_node::revocation::REVOCATIONS_FILE))?;
    lists.offer_file(&tls.ca.with_file_name("crl.pem"))?;
    let summary = lists.summary();
    let secs =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    Ok(Some(CertStatus {
        identity: info.identity.to_string(),
        serial: info.serial_hex(),
        not_after: humantime::format_rfc3339_seconds(info.not_after).to_string(),
        days_left: (secs(info.not_after) - secs(std::time::SystemTime::now())).div_euclid(86_400),
        revoked: lists.is_revoked(&cert_der),
        revocation_list: summary.map(|(n, _, _)| n),
        revocation_list_next_update: summary
            .map(|(_, _, next)| humantime::format_rfc3339_seconds(next).to_string()),
    }))
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::List(a) => list(&a.node.resolve()?, a.json),
        KeysCommand::Vkeys(a) => {
            let t = a.node.resolve()?;
            let paths = AuditPaths::new(&t.dir);
            let keys = hearth_node::audit::files::read_keys(&paths)?;
            if keys.is_empty() {
                anyhow::bail!(
                    "{} holds no audit log keys yet (the node writes them when it first starts)",
                    t.dir.display()
                );
            }
            for k in keys {
                println!("{}", k.encode());
            }
            Ok(())
        }
        KeysCommand::Rotate(a) => rotate(&a.node.resolve()?, &a.label),
        KeysCommand::Rewrap(a) => rewrap(&a.node.resolve()?, a.batch as usize),
        KeysCommand::Retire(a) => retire(&a.node.resolve()?, a.version),
    }
}

/// The stores found in a node's directory, open with its keys.
struct Stores {
    dir: PathBuf,
    participant: Option<hearth_participant::Store>,
    desk: bool,
    coordinator: Option<hearth_coordinator::store::Store>,
}

impl Stores {
    fn open(dir: &Path, keys: Arc<NodeKeys>) -> anyhow::Result<Self> {
        let participant = dir
            .join(hearth_participant::store::STORE_FILE)
            .exists()
            .then(|| hearth_participant::Store::open(dir, Arc::clone(&keys)))
            .transpose()
            .context("opening the participant store")?;
        let coordinator_file = dir.join(hearth_coordinator::store::STORE_FILE);
        let coordinator = coordinator_file
            .exists()
            .then(|| hearth_coordinator::store::Store::open(&coordinator_file, Arc::clone(&keys)))
            .transpose()
            .context("opening the coordinator store")?;
        let desk = dir.join(hearth_desk::store::SERVICE_FILE).exists();
        if participant.is_none() && coordinator.is_none() && !desk {
            bail!(
                "{} holds no Hearth store (participant.redb, service.redb or coordinator.redb)",
                dir.display()
            );
        }
        Ok(Self { dir: dir.to_path_buf(), participant, desk, coordinator })
    }

    /// Values per KEK version over every store.
    fn kek_versions(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        if let Some(s) = &self.participant {
            add_counts(&mut out, s.kek_versions()?);
        }
        if self.desk {
            add_counts(&mut out, hearth_desk::store::kek_versions(&self.dir)?);
        }
        if let Some(s) = &self.coordinator {
            add_counts(&mut out, s.kek_versions()?);
        }
        Ok(out)
    }
}

/// Opens the node (lock, keys, audit log) for a command that changes it.
fn open_for_change(t: &Target) -> anyhow::Result<(NodeLock, Arc<NodeKeys>, AuditLog)> {
    let lock = NodeLock::acquire(&t.dir)?;
    let keys = Arc::new(open(t)?);
    let paths = AuditPaths::new(&t.dir);
    let origin = if paths.meta.exists() { read_meta(&paths)?.origin } else { "hearth/node".into() };
    let (log, _) = AuditLog::open(&t.dir, &keys, &origin).context("opening the node's audit log")?;
    Ok((lock, keys, log))
}

fn rewrap(t: &Target, batch: usize) -> anyhow::Result<()> {
    let (_lock, keys, log) = open_for_change(t)?;
    let current = keys.current_kek()?;
    let stores = Stores::open(&t.dir, Arc::clone(&keys))?;
    let mut progress = |p: &TableRewrap| {
        if p.pending > 0 {
            eprintln!("  {:<20} {:>9} of {:>9} moved to {current}", p.table, p.moved, p.pending);
        }
    };
    let mut done = Vec::new();
    // Record what was moved even when a later table fails: the moved objects stay moved.
    let result = (|| -> anyhow::Result<()> {
        if let Some(s) = &stores.participant {
            done.extend(s.rewrap(batch, &mut progress)?);
        }
        if stores.desk {
            done.extend(hearth_desk::store::rewrap(&t.dir, &keys, batch, &mut progress)?);
        }
        if let Some(s) = &stores.coordinator {
            done.extend(s.rewrap(batch, &mut progress)?);
        }
        Ok(())
    })();
    let moved: u64 = done.iter().map(|d| d.moved).sum();
    let tables: Vec<String> =
        done.iter().filter(|d| d.moved > 0).map(|d| format!("{} {}", d.table, d.moved)).collect();
    let outcome = if result.is_ok() { Outcome::Ok } else { Outcome::Error };
    let mut detail = format!("moved {moved} stored objects to {current}");
    if !tables.is_empty() {
        detail.push_str(&format!(" ({})", tables.join(", ")));
    }
    if let Err(e) = &result {
        detail.push_str(&format!("; stopped: {e:#}"));
    }
    log.record_event(
        Event::new(cli_actor("keys rewrap"), Action::KeyRewrap, outcome)
            .object(current.to_string())
            .detail(detail),
    );
    log.checkpoint_now().context("signing the audit checkpoint")?;
    result?;
    let versions = stores.kek_versions()?;
    eprintln!("moved {moved} stored objects to {current}");
    for (kek, n) in &versions {
        println!("{n:>9} values sealed under {kek}");
    }
    let old: Vec<u32> =
        keys.versions(KEK)?.into_iter().map(|v| v.get()).filter(|v| *v != current.version.get()).collect();
    for v in old {
        eprintln!(
            "nothing is sealed under {KEK}@v{v} any more: destroy it with hearth keys retire --version {v}"
        );
    }
    Ok(())
}

fn retire(t: &Target, version: u32) -> anyhow::Result<()> {
    let version = KeyVersion::new(version).context("key versions start at 1")?;
    let (_lock, keys, log) = open_for_change(t)?;
    let stores = Stores::open(&t.dir, Arc::clone(&keys))?;
    let name = format!("{KEK}@v{version}");
    if let Some(n) = stores.kek_versions()?.get(&name).filter(|n| **n > 0) {
        bail!("{n} stored values are still sealed under {name}; run hearth keys rewrap first (nothing was destroyed)");
    }
    let event = keys.retire(KEK, version)?;
    log.record_key_event(&cli_actor("keys retire"), &event)
        .context("the retirement could not be recorded in the audit log")?;
    log.checkpoint_now().context("signing the audit checkpoint")?;
    eprintln!("{event}");
    Ok(())
}

fn open(t: &Target) -> anyhow::Result<NodeKeys> {
    let (keys, _) = NodeKeys::open(&t.keystore, t.suite, &t.dir, &[], Create::Never, None)
        .with_context(|| format!("opening the keystore of {}", t.dir.display()))?;
    Ok(keys)
}

/// The name a node's witness key signs under.
pub fn witness_name(origin: &str) -> String {
    format!("{origin}/witness")
}

fn list(t: &Target, json: bool) -> anyhow::Result<()> {
    let keys = open(t)?;
    let paths = AuditPaths::new(&t.dir);
    let origin = paths.meta.exists().then(|| read_meta(&paths)).transpose()?.map(|m| m.origin);
    let ks = keys.keystore();
    let mut rows = Vec::new();
    for (id, kind) in keys.list()? {
        let mut vkeys = Vec::new();
        let signature = match (id.label.as_str(), &origin) {
            (AUDIT_KEY, Some(o)) => Some((o.clone(), SignatureType::Log(keys.suite()))),
            (WITNESS_KEY, Some(o)) => Some((witness_name(o), SignatureType::Cosignature(keys.suite()))),
            _ => None,
        };
        if let (Some((name, sig)), true) = (signature, kind == KeyKind::Audit) {
            for v in 1..=id.version.get() {
                let Some(version) = KeyVersion::new(v) else { continue };
                let public = ks.public_key(&KeyId { label: id.label.clone(), version })?;
                vkeys.push(VerifierKey::new(name.clone(), sig, public)?.encode());
            }
        }
        rows.push(KeyRow {
            label: id.label.to_string(),
            kind: kind.to_string(),
            version: id.version.get(),
            vkeys,
        });
    }
    let (usage, kek_wrap_limit) = keys.kek_usage();
    let listing = Listing {
        certificate: cert_status(t)?,
        kek_wraps: usage.into_iter().map(|(v, n)| (format!("{KEK}@v{v}"), n)).collect(),
        kek_wrap_limit,
        keystore: keys.name().to_string(),
        suite: keys.suite().to_string(),
        location: keys.location().to_string(),
        audit_origin: origin,
        keys: rows,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(());
    }
    println!("{} ({}, {} suite)", listing.keystore, listing.location, listing.suite);
    println!("{:<16} {:<14} {:>7}", "label", "kind", "version");
    for r in &listing.keys {
        println!("{:<16} {:<14} {:>7}", r.label, r.kind, r.version);
    }
    if let Some(c) = &listing.certificate {
        let state = if c.revoked {
            "REVOKED".to_string()
        } else if c.days_left < 0 {
            "EXPIRED".to_string()
        } else {
            format!("{} days left", c.days_left)
        };
        println!("\ncertificate {} (serial {}): valid until {} ({state})", c.identity, c.serial, c.not_after);
        match (c.revocation_list, &c.revocation_list_next_update) {
            (Some(n), Some(next)) => {
                println!("revocation list #{n} in force; the CA's next one is due by {next}")
            }
            _ => println!("no revocation list held yet"),
        }
    }
    for (kek, n) in &listing.kek_wraps {
        let share = *n as f64 / listing.kek_wrap_limit as f64 * 100.0;
        println!("{kek} wrapped {n} data keys ({share:.4}% of its limit of {})", listing.kek_wrap_limit);
    }
    for r in listing.keys.iter().filter(|r| !r.vkeys.is_empty()) {
        println!("\nverifier keys of {} (oldest first; give them to auditors and witnesses):", r.label);
        for v in &r.vkeys {
            println!("  {v}");
        }
    }
    Ok(())
}

fn rotate(t: &Target, label: &str) -> anyhow::Result<()> {
    let _lock = NodeLock::acquire(&t.dir)?;
    let keys = open(t)?;
    let event = keys.rotate(label)?;
    if label == KEK {
        eprintln!("objects sealed before now stay under the older version: hearth keys rewrap moves them");
    }
    // Open the log after the rotation: its signer then uses the new version (an audit-key rotation is
    // signed by the new key, and keys.txt gains its vkey).
    let paths = AuditPaths::new(&t.dir);
    let origin = if paths.meta.exists() { read_meta(&paths)?.origin } else { "hearth/node".into() };
    let (log, _) = AuditLog::open(&t.dir, &keys, &origin).context("opening the node's audit log")?;
    log.record_key_event(&cli_actor("keys rotate"), &event)
        .context("the rotation could not be recorded in the audit log")?;
    log.checkpoint_now().context("signing the audit checkpoint")?;
    eprintln!("{event}");
    if event.kind == KeyKind::Audit && label == AUDIT_KEY {
        println!("{}", log.verifier_key()?.encode());
    }
    Ok(())
}
