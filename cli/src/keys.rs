//! `hearth keys`: list a node's keys and rotate them. Both open the node's keystore (the passphrase or
//! PIN comes from the environment or a file, as for the service); rotation takes the node's lock, so
//! it runs while the node is stopped, and is recorded in the node's audit log and signed at once.

use anyhow::Context;
use hearth_audit::{SignatureType, VerifierKey};
use hearth_crypto::keystore::{KeyId, KeyKind, KeyVersion};
use hearth_node::audit::files::{read_meta, AuditPaths};
use hearth_node::audit::AuditLog;
use hearth_node::files::NodeLock;
use hearth_node::keys::{Create, NodeKeys, AUDIT_KEY, WITNESS_KEY};
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
    }
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
    let listing = Listing {
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
