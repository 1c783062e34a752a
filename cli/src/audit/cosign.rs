//! `hearth audit cosign`: a witness (another consortium member, an auditor) checks that a log's newest
//! checkpoint extends the last one it cosigned for that log, and only then cosigns it (C2SP
//! tlog-cosignature). The witness verifies the whole export itself, so the consistency proof it checks is
//! computed from leaf hashes it has just authenticated.
//!
//! The witness key is the `witness` key of the keystore in `--state-dir` (generated on first use), named
//! `<origin of that directory's own audit log>/witness`, or `--name`. What the witness last cosigned is
//! kept in `<state dir>/witness/`, one file per followed log; each cosignature is recorded in the witness
//! directory's own audit log.

use std::path::PathBuf;

use anyhow::{bail, Context};
use hearth_audit::{
    consistency_proof, verify_export, witness_cosign, Action, Checkpoint, Event, ExportBundle, Hash, Outcome,
    SignatureType, SignedCheckpoint, Trust,
};
use hearth_crypto::keystore::KeyKind;
use hearth_node::audit::files::{read_meta, AuditPaths};
use hearth_node::audit::{default_origin, now_ms, AuditLog};
use hearth_node::files::{write_atomic, NodeLock};
use hearth_node::keys::{Create, NodeKeys, AUDIT_KEY, WITNESS_KEY};

use super::read_vkeys;
use crate::keys::witness_name;
use crate::node::{cli_actor, NodeArgs};

/// Arguments of `hearth audit cosign`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hearth audit cosign coordinator-audit.jsonl --log-key @coordinator.vkeys --state-dir /var/lib/hearth/bank-a \\\n      -o coordinator-head-cosigned.txt\n\nThe witness refuses (exit 1) if the export does not verify under --log-key, or if its newest\ncheckpoint does not extend the last checkpoint this witness cosigned for the same log (a fork or a\nrollback). Give the cosigned checkpoint to auditors: `hearth audit verify EXPORT --checkpoint FILE\n--witness-key VKEY`. The witness's vkey is printed here and by `hearth keys list`. Run it while the\nnode that owns --state-dir is stopped, or give the witness a directory of its own."
)]
pub struct CosignArgs {
    /// The log's export.
    #[arg(value_name = "EXPORT")]
    pub export: PathBuf,
    /// The followed log's key (vkey or @FILE); repeatable.
    #[arg(long = "log-key", value_name = "VKEY", required = true)]
    pub log_keys: Vec<String>,
    #[command(flatten)]
    pub witness: NodeArgs,
    /// The witness key's name in signature lines (default: `<this node's log origin>/witness`).
    #[arg(long)]
    pub name: Option<String>,
    /// Where to write the cosigned checkpoint.
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
}

fn state_file(dir: &std::path::Path, origin: &str) -> PathBuf {
    let name: String = origin
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect();
    dir.join("witness").join(format!("{name}.checkpoint"))
}

pub fn run(a: CosignArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&a.export).with_context(|| format!("reading {}", a.export.display()))?;
    let log = Trust { log_keys: read_vkeys(&a.log_keys, "log key")?, witnesses: vec![] };
    let report = verify_export(&bytes, &log);
    if !report.is_ok() {
        bail!("refusing to cosign: the export does not verify\n{report}");
    }
    let bundle = ExportBundle::decode(&bytes)?;
    let Some(newest) = bundle.checkpoints.iter().max_by_key(|c| c.checkpoint().size()).cloned() else {
        bail!("refusing to cosign: the export has no checkpoint");
    };
    let leaves: Vec<Hash> = bundle.entries.iter().map(|(_, h)| *h).collect();

    let target = a.witness.resolve()?;
    let _lock = NodeLock::acquire(&target.dir)?;
    // The witness keeps its own audit log too (its key events, every cosignature and refusal).
    let wanted = [(AUDIT_KEY, KeyKind::Audit), (WITNESS_KEY, KeyKind::Audit)];
    let (keys, events) =
        NodeKeys::open(&target.keystore, bundle.suite, &target.dir, &wanted, Create::IfMissing, None)
            .context("opening the witness's keystore")?;
    let paths = AuditPaths::new(&target.dir);
    let own_origin = if paths.meta.exists() {
        read_meta(&paths)?.origin
    } else {
        default_origin(None, std::path::Path::new(""), "witness", &target.dir)
    };
    let (own_log, _) = AuditLog::open(&target.dir, &keys, &own_origin)?;
    let actor = cli_actor("audit cosign");
    for e in &events {
        own_log.record_key_event(&actor, e);
    }
    let name = a.name.clone().unwrap_or_else(|| witness_name(&own_origin));
    let signer = keys.signer(WITNESS_KEY, &name)?;

    let state = state_file(&target.dir, &bundle.origin);
    let last: Option<Checkpoint> = match std::fs::read_to_string(&state) {
        Ok(t) => Some(
            SignedCheckpoint::parse(&t)
                .with_context(|| format!("reading {}", state.display()))?
                .checkpoint()
                .clone(),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", state.display())),
    };
    let proof = match &last {
        Some(l) if l.size() <= newest.checkpoint().size() => {
            consistency_proof(bundle.suite, &leaves, l.size(), newest.checkpoint().size())?
        }
        _ => Vec::new(),
    };
    let mut cosigned = newest.clone();
    let result = witness_cosign(&mut cosigned, last.as_ref(), &proof, &log, &signer, now_ms() / 1000);
    let size = newest.checkpoint().size();
    let ev = |outcome, detail: String| {
        Event::new(actor.clone(), Action::WitnessCosign, outcome).detail(detail).object(bundle.origin.clone())
    };
    if let Err(e) = result {
        own_log.record_event(ev(Outcome::Refused, format!("size {size}: {e}")));
        own_log.checkpoint_now()?;
        bail!(
            "refusing to cosign {} at size {size}: {e} (last cosigned: {})",
            bundle.origin,
            last.map_or("none".into(), |l| format!("size {}", l.size()))
        );
    }
    std::fs::write(&a.output, cosigned.encode())
        .with_context(|| format!("writing {}", a.output.display()))?;
    write_atomic(&state, cosigned.encode().as_bytes(), false)?;
    own_log.record_event(ev(Outcome::Ok, format!("cosigned size {size}")));
    own_log.checkpoint_now()?;
    eprintln!("cosigned {} at size {size} as {name}; wrote {}", bundle.origin, a.output.display());
    println!("{}", signer.verifier_key(SignatureType::Cosignature(keys.suite()))?.encode());
    Ok(())
}
