//! `hearth pki`: a consortium CA and node certificates, written as PEM files, and the CA's issuance
//! log: every certificate the CA issues is an entry of a signed, append-only audit log beside it
//! (`DIR/ca-log/`), which the institutions witness and auditors verify like any node's log.
//!
//! `init` and `issue` generate keys on the CA's machine (a development consortium, or nodes the CA
//! operator runs). An institution enrols without its keys leaving it: `request` (on the institution's
//! host) makes its keys and a certificate request, `sign` (at the CA) certifies the request's key for the
//! identity the operator verified, `kit` bundles what the institution installs. `renew` certifies a new
//! request for an existing certificate's identity; `revoke` and `crl` keep the signed revocation list.
//! Each lives in its own file: `pki/enrol.rs` (request, sign, renew), `pki/revoke.rs`, `pki/kit.rs`.

mod enrol;
mod kit;
mod revoke;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use hearth_audit::{Action, Event, Outcome};
use hearth_crypto::digest::content_digest;
use hearth_crypto::keystore::KeyKind;
use hearth_crypto::pki::{ConsortiumCa, IssueOptions, NodeIdentity, Role, DEFAULT_LIFETIME_DAYS};
use hearth_crypto::SuiteId;
use hearth_node::audit::files::{read_meta, AuditPaths};
use hearth_node::audit::AuditLog;
use hearth_node::config::KeystoreConfig;
use hearth_node::files::NodeLock;
use hearth_node::keys::{Create, NodeKeys, AUDIT_KEY};

/// The CA's issuance log, a node directory inside the PKI directory.
pub const CA_LOG_DIR: &str = "ca-log";
/// The issuance log's verifier key (vkey), for witnesses and auditors.
pub const CA_LOG_VKEY: &str = "ca-log.vkey";
/// The origin of the issuance log's checkpoints.
const CA_LOG_ORIGIN: &str = "hearth/ca/issuance";

/// `hearth pki ...`
#[derive(Debug, clap::Subcommand)]
pub enum PkiCommand {
    /// Create a consortium CA and certificates for a coordinator, participants, an operator and an app.
    #[command(
        after_help = "Examples:\n  hearth pki init --dir pki --participants bank-a,airline-b,retail-c\n  hearth pki init --dir pki --participants bank-a --dns coord.example.org --ip 10.0.0.5\n\nWrites DIR/ca.pem and DIR/ca.key (keep the CA key offline), DIR/coordinator.{pem,key},\nDIR/<participant>.{pem,key}, and for each participant's institution DIR/<participant>/app.{pem,key} and\nDIR/<participant>/dpo.{pem,key} (its apps and its data protection officer: the only callers its desk\nand inference accept) and DIR/<participant>/inference.{pem,key} (its inference replicas, on loopback\nnames; `hearth pki issue --role inference` names others); and the consortium's DIR/operator.{pem,key}, DIR/dpo.{pem,key}, DIR/app.{pem,key}\nand DIR/analyst.{pem,key}, which act for no institution and reach no customer data.\n\nAlso DIR/<participant>/privacy-policy.{toml,json}: a starter privacy policy of the institution, signed\nby its DPO (review it, then `hearth budget sign`); and DIR/members.{toml,json}: the member list,\nsigned by every participant, that participants accept roster members from (`hearth members`).\n\nEvery certificate issued (here and by `hearth pki issue`) is first recorded in the CA's issuance log,\nDIR/ca-log: an audit log like a node's (action cert.issue, the certificate's SHA-256 as the object), its\ncheckpoints signed by a key in DIR/ca-log/keystore.sealed (passphrase in DIR/ca-log/passphrase; keep\nboth offline with the CA key). Its vkey is DIR/ca-log.vkey. Institutions witness it and auditors check\nit:\n  hearth audit export --state-dir pki/ca-log -o ca-log.jsonl\n  hearth audit cosign ca-log.jsonl --log-key @pki/ca-log.vkey --state-dir WITNESS_DIR -o ca-head.txt\n  hearth audit verify ca-log.jsonl --trusted-key @pki/ca-log.vkey --checkpoint ca-head.txt --witness-key VKEY"
    )]
    Init(InitArgs),
    /// Issue one more certificate from an existing CA.
    #[command(
        after_help = "Examples:\n  hearth pki issue --dir pki --role participant --id hospital-d --dns hospital-d.example.org\n  hearth pki issue --dir pki --role app --id crm --institution hospital-d   # writes DIR/hospital-d/crm.{pem,key}\n  hearth pki issue --dir pki --role inference --id replicas --institution hospital-d --dns inference.hospital-d.svc\n  hearth pki issue --dir pki --role operator --id ops-2 --days 30\n\nThe CA generates the key here; for an institution's node prefer `hearth pki request` on its host and\n`hearth pki sign` here, so the key never leaves it. Certificates are valid from five minutes ago for\n--days (default 90, at most 825).\n\nEvery certificate issued is first recorded in the CA's issuance log, DIR/ca-log (its SHA-256, role, id\nand institution; see `hearth pki init --help`)."
    )]
    Issue(IssueArgs),
    /// Make a node's keys and a certificate request, on the node's own host.
    #[command(after_help = enrol::REQUEST_HELP)]
    Request(enrol::RequestArgs),
    /// Sign a certificate request for the identity the CA operator verified.
    #[command(after_help = enrol::SIGN_HELP)]
    Sign(enrol::SignArgs),
    /// Certify a new request for the identity of an existing certificate.
    #[command(after_help = enrol::RENEW_HELP)]
    Renew(enrol::RenewArgs),
    /// Revoke a certificate: record it, and sign a new revocation list (DIR/crl.pem).
    #[command(after_help = revoke::REVOKE_HELP)]
    Revoke(revoke::RevokeArgs),
    /// Sign the revocation list again (a new number, fresh dates), before its next update is due.
    #[command(after_help = revoke::CRL_HELP)]
    Crl(revoke::CrlArgs),
    /// Write an institution's startup kit: certificates, configuration, service unit; never a key.
    #[command(after_help = kit::KIT_HELP)]
    Kit(kit::KitArgs),
}

/// Arguments of `hearth pki init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory to write into (created; existing files are never overwritten).
    #[arg(long, default_value = "hearth-pki")]
    pub dir: PathBuf,
    /// Name of the consortium (the CA's common name).
    #[arg(long, default_value = "Hearth development consortium")]
    pub consortium: String,
    /// Participant ids, comma-separated ([a-z0-9._-]).
    #[arg(long, value_delimiter = ',', default_value = "participant")]
    pub participants: Vec<String>,
    /// Extra DNS names for the coordinator's certificate, the names participants reach it by (localhost
    /// is always included). Participants' certificates carry only loopback names: one reached by another
    /// name gets its certificate from `hearth pki issue --role participant --dns ...`.
    #[arg(long, value_delimiter = ',')]
    pub dns: Vec<String>,
    /// Extra IP addresses for the coordinator's certificate (127.0.0.1 and ::1 are always included).
    #[arg(long, value_delimiter = ',')]
    pub ip: Vec<std::net::IpAddr>,
    /// The consortium's algorithm suite. Under `national`, every participant and the coordinator also get
    /// an SM2 protocol signing key (NAME.sm2.key) whose verifying half the CA embeds in their certificate.
    #[arg(long, default_value = "international")]
    pub suite: SuiteId,
}

/// Arguments of `hearth pki issue`.
#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// Directory holding ca.pem and ca.key; the new files go there too.
    #[arg(long, default_value = "hearth-pki")]
    pub dir: PathBuf,
    /// coordinator, participant, operator, app, dpo, analyst, inference (an institution's inference
    /// replicas: give --institution and the --dns names its apps reach it by) or agent (a contact-centre
    /// agent of the --institution).
    #[arg(long)]
    pub role: Role,
    /// The node's id ([a-z0-9._-], at most 64 characters).
    #[arg(long)]
    pub id: String,
    /// Extra DNS names.
    #[arg(long, value_delimiter = ',')]
    pub dns: Vec<String>,
    /// Extra IP addresses.
    #[arg(long, value_delimiter = ',')]
    pub ip: Vec<std::net::IpAddr>,
    /// The consortium's algorithm suite (see `hearth pki init --help`).
    #[arg(long, default_value = "international")]
    pub suite: SuiteId,
    /// The institution (participant id) an app, dpo, operator or inference certificate acts for; its
    /// desk and inference accept only such callers. The files go to DIR/<institution>/.
    #[arg(long)]
    pub institution: Option<String>,
    /// Days the certificate is valid (1 to 825).
    #[arg(long, default_value_t = DEFAULT_LIFETIME_DAYS, value_parser = clap::value_parser!(u32).range(1..=825))]
    pub days: u32,
}

pub fn run(cmd: PkiCommand) -> anyhow::Result<()> {
    match cmd {
        PkiCommand::Init(a) => {
            let written = init(&a)?;
            eprintln!("wrote {} files to {}", written.len(), a.dir.display());
            Ok(())
        }
        PkiCommand::Issue(a) => {
            let ca = load_ca(&a.dir)?;
            let log = IssuanceLog::open(&a.dir, a.suite)?;
            let (dns, ips) = names(&a.dns, &a.ip);
            let mut written = match &a.institution {
                // An inference replica is a server its institution's apps reach by name; apps, DPOs and
                // operators are only clients.
                Some(i) if a.role == Role::Inference => {
                    issue_for(&ca, &log, &a.dir, a.role, &a.id, i, (&dns, &ips), a.days)?
                }
                Some(i) => issue_for(&ca, &log, &a.dir, a.role, &a.id, i, (&[], &[]), a.days)?,
                None => issue(&ca, &log, &a.dir, a.role, &a.id, &dns, &ips, a.suite, a.days)?,
            };
            written.extend(log.close(&a.dir)?);
            print_written(&written);
            Ok(())
        }
        PkiCommand::Request(a) => enrol::request(&a).map(|w| print_written(&w)),
        PkiCommand::Sign(a) => enrol::sign(&a).map(|w| print_written(&w)),
        PkiCommand::Renew(a) => enrol::renew(&a).map(|w| print_written(&w)),
        PkiCommand::Revoke(a) => revoke::revoke(&a).map(|w| print_written(&w)),
        PkiCommand::Crl(a) => revoke::refresh(&a).map(|w| print_written(&w)),
        PkiCommand::Kit(a) => kit::write(&a).map(|w| print_written(&w)),
    }
}

fn print_written(written: &[PathBuf]) {
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    eprintln!("wrote {}", names.join(", "));
}

fn names(dns: &[String], ip: &[std::net::IpAddr]) -> (Vec<String>, Vec<std::net::IpAddr>) {
    let mut d = vec!["localhost".to_string()];
    d.extend(dns.iter().cloned());
    let mut i: Vec<std::net::IpAddr> = vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
    i.extend(ip.iter().copied());
    (d, i)
}

/// Creates the CA and every certificate of `a`; returns the files written.
pub fn init(a: &InitArgs) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    if a.dir.join("ca.pem").exists() {
        bail!("{} already holds a CA (ca.pem); give another --dir", a.dir.display());
    }
    let ca = ConsortiumCa::generate(&a.consortium)?;
    let log = IssuanceLog::open(&a.dir, a.suite)?;
    log.record_ca(&ca, &a.consortium)?;
    let mut written = vec![write_new(&a.dir.join("ca.pem"), &ca.cert_pem())?];
    written.push(write_secret(&a.dir.join("ca.key"), &ca.key_pem())?);
    let (dns, ips) = names(&a.dns, &a.ip);
    let days = DEFAULT_LIFETIME_DAYS;
    written.extend(issue(&ca, &log, &a.dir, Role::Coordinator, "coordinator", &dns, &ips, a.suite, days)?);
    for p in &a.participants {
        if ["coordinator", "operator", "app", "dpo", "analyst", "inference", "agent", "ca"]
            .contains(&p.as_str())
        {
            bail!("participant id {p:?} is reserved; choose another name");
        }
        // Only its own (loopback) names: a participant's key must not be able to answer for the
        // coordinator's host name (participants also check the coordinator's role).
        let (own_dns, own_ips) = names(&[], &[]);
        written.extend(issue(&ca, &log, &a.dir, Role::Participant, p, &own_dns, &own_ips, a.suite, days)?);
        // The institution's own callers: its apps, its data protection officer and a first agent (each
        // further agent gets one from `hearth pki issue --role agent --institution <id>`).
        written.extend(issue_for(&ca, &log, &a.dir, Role::App, "app", p, (&[], &[]), days)?);
        written.extend(issue_for(&ca, &log, &a.dir, Role::Dpo, "dpo", p, (&[], &[]), days)?);
        written.extend(issue_for(&ca, &log, &a.dir, Role::Agent, "agent", p, (&[], &[]), days)?);
        // Its inference replicas (`hearth inference`), on this machine's loopback names.
        let (own_dns, own_ips) = names(&[], &[]);
        written.extend(issue_for(
            &ca,
            &log,
            &a.dir,
            Role::Inference,
            "inference",
            p,
            (&own_dns, &own_ips),
            days,
        )?);
        // A starter privacy policy of the institution, signed by its DPO, for its DPO to review.
        let source = write_new(&a.dir.join(p).join("privacy-policy.toml"), &starter_policy(p))?;
        let signed = a.dir.join(p).join(hearth_participant::privacy::SIGNED_POLICY_FILE);
        crate::budget::sign_institution_policy(&source, &a.dir.join(p).join("dpo"), &signed)?;
        written.extend([source, signed]);
    }
    // The member list, signed by every participant: rosters may hold only these certificates.
    if !a.participants.is_empty() {
        let certificates: Vec<PathBuf> =
            a.participants.iter().map(|p| a.dir.join(format!("{p}.pem"))).collect();
        let threshold = (a.participants.len() / 2 + 1) as u32;
        let list = crate::members::list_of(1, threshold, &certificates)?;
        let source = write_new(&a.dir.join("members.toml"), &list.to_toml()?)?;
        let signed = a.dir.join(hearth_participant::membership::MEMBERS_FILE);
        for p in &a.participants {
            crate::members::sign(&source, &a.dir.join(p), &signed)?;
        }
        written.extend([source, signed]);
    }
    for (role, id) in
        [(Role::Operator, "operator"), (Role::App, "app"), (Role::Dpo, "dpo"), (Role::Analyst, "analyst")]
    {
        written.extend(issue(&ca, &log, &a.dir, role, id, &[], &[], SuiteId::International, days)?);
    }
    written.extend(log.close(&a.dir)?);
    Ok(written)
}

/// The starter privacy policy `hearth pki init` writes for `institution`: the three model families at a
/// budget of epsilon 10 a month each, a noise floor and three participants at least. No query family: a
/// DPO adds the ones the institution agrees to.
fn starter_policy(institution: &str) -> String {
    let mut s = format!(
        "# The privacy policy of institution {institution}: a starter written by `hearth pki init`. Its data\n\
         # protection officer decides it: edit it, then sign it again with\n\
         #   hearth budget sign --policy privacy-policy.toml --dpo dpo\n\
         # (in this directory). Its participant reads privacy-policy.json at every use. Families not listed\n\
         # here (model families and query families alike) may not use this institution's data.\n"
    );
    for family in ["intent", "emotion", "recommend"] {
        s.push_str(&format!(
            "\n[tenants.{institution}.families.{family}]\nepsilon = 10.0\ndelta = 1e-5\nprivacy_unit = \"record\"\n\
             period_days = 30\nmin_participants = 3\nmin_noise_multiplier = 0.5\n"
        ));
    }
    s
}

/// Issues `DIR/<institution>/<id>.{pem,key}`: a certificate acting for one institution.
#[allow(clippy::too_many_arguments)]
fn issue_for(
    ca: &ConsortiumCa,
    log: &IssuanceLog,
    dir: &Path,
    role: Role,
    id: &str,
    institution: &str,
    (dns, ips): (&[String], &[std::net::IpAddr]),
    days: u32,
) -> anyhow::Result<Vec<PathBuf>> {
    let options = IssueOptions {
        institution: Some(institution.to_string()),
        lifetime_days: days,
        ..Default::default()
    };
    let cert = ca
        .issue_with(role, id, dns, ips, &options)
        .with_context(|| format!("issuing the {role} certificate {id:?} of institution {institution:?}"))?;
    let identity = NodeIdentity { role, id: id.to_string(), institution: Some(institution.to_string()) };
    log.record(&cert.cert_pem, &identity, None)?;
    let dir = dir.join(institution);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(vec![
        write_new(&dir.join(format!("{id}.pem")), &cert.cert_pem)?,
        write_secret(&dir.join(format!("{id}.key")), &cert.key_pem)?,
    ])
}

#[allow(clippy::too_many_arguments)]
fn issue(
    ca: &ConsortiumCa,
    log: &IssuanceLog,
    dir: &Path,
    role: Role,
    id: &str,
    dns: &[String],
    ips: &[std::net::IpAddr],
    suite: SuiteId,
    days: u32,
) -> anyhow::Result<Vec<PathBuf>> {
    // Nodes that sign protocol messages get an SM2 key under the national suite; the CA binds it to
    // their identity by embedding its verifying half in the certificate.
    let sm2 = match (suite, role) {
        (SuiteId::National, Role::Participant | Role::Coordinator) => {
            Some(SuiteId::National.suite().signing_keypair().context("generating an SM2 protocol key")?)
        }
        _ => None,
    };
    let options = IssueOptions {
        sm2_verifying_key: sm2.as_ref().map(|(_, public)| public.clone()),
        lifetime_days: days,
        ..Default::default()
    };
    let cert = ca
        .issue_with(role, id, dns, ips, &options)
        .with_context(|| format!("issuing the {role} certificate {id:?}"))?;
    log.record(&cert.cert_pem, &NodeIdentity { role, id: id.to_string(), institution: None }, None)?;
    let mut written = vec![
        write_new(&dir.join(format!("{id}.pem")), &cert.cert_pem)?,
        write_secret(&dir.join(format!("{id}.key")), &cert.key_pem)?,
    ];
    if let Some((secret, _)) = sm2 {
        let hex = zeroize::Zeroizing::new(hex::encode(secret.expose()));
        written.push(write_secret(&dir.join(format!("{id}.sm2.key")), &hex)?);
    }
    Ok(written)
}

/// A `cert.issue` entry for the certificate in `pem`: its SHA-256 (as the member list names certificates)
/// is the object.
fn issued(pem: &str) -> anyhow::Result<Event> {
    let der = hearth_crypto::pki::cert_der_from_pem(pem)?;
    Ok(Event::new("ca", Action::CertIssue, Outcome::Ok).object(hex::encode(content_digest(&der))))
}

/// The CA's issuance log, open for appending (and locked) while certificates are issued.
struct IssuanceLog {
    log: AuditLog,
    _lock: NodeLock,
}

impl IssuanceLog {
    /// Opens `PKI_DIR/ca-log`, creating it (keystore, passphrase file, log) when missing. An existing
    /// log keeps its suite; a new one takes `suite`.
    fn open(pki_dir: &Path, suite: SuiteId) -> anyhow::Result<Self> {
        let dir = pki_dir.join(CA_LOG_DIR);
        let lock = NodeLock::acquire(&dir).context("locking the CA's issuance log")?;
        let paths = AuditPaths::new(&dir);
        let suite = if paths.meta.exists() { read_meta(&paths)?.suite } else { suite };
        let passphrase = dir.join("passphrase");
        if !passphrase.exists() {
            write_secret(&passphrase, &format!("{}\n", hex::encode(rand::random::<[u8; 32]>())))?;
        }
        let cfg = KeystoreConfig { passphrase_file: Some(passphrase), ..KeystoreConfig::default() };
        let (keys, events) =
            NodeKeys::open(&cfg, suite, &dir, &[(AUDIT_KEY, KeyKind::Audit)], Create::IfMissing, None)
                .with_context(|| format!("opening the issuance log's keystore in {}", dir.display()))?;
        let (log, _) = AuditLog::open(&dir, &keys, CA_LOG_ORIGIN)
            .with_context(|| format!("opening the CA's issuance log in {}", dir.display()))?;
        for e in &events {
            log.record_key_event("ca", e);
        }
        Ok(Self { log, _lock: lock })
    }

    /// Records the CA's own certificate.
    fn record_ca(&self, ca: &ConsortiumCa, consortium: &str) -> anyhow::Result<()> {
        self.append(issued(&ca.cert_pem())?.detail(format!("the consortium CA {consortium:?} (self-signed)")))
    }

    /// Records the certificate `cert_pem` of `identity` before its files are written: a certificate the
    /// log does not hold is never handed out by this command. `how` ends the detail ("by request", ...).
    fn record(&self, cert_pem: &str, identity: &NodeIdentity, how: Option<&str>) -> anyhow::Result<()> {
        let event = issued(cert_pem)?;
        let NodeIdentity { role, id, institution } = identity;
        let how = how.map(|h| format!(", {h}")).unwrap_or_default();
        let event = match (role, institution) {
            (_, Some(i)) => {
                event.tenant(i).detail(format!("{role} certificate {id:?} acting for institution {i:?}{how}"))
            }
            (Role::Participant, None) => event.tenant(id).detail(format!("{role} certificate {id:?}{how}")),
            _ => event.detail(format!("{role} certificate {id:?}{how}")),
        };
        self.append(event)
    }

    fn append(&self, event: Event) -> anyhow::Result<()> {
        match self.log.record_event(event) {
            Some(_) => Ok(()),
            None => bail!(
                "could not append to the CA's issuance log in {}; no certificate is written unrecorded",
                self.log.paths().dir.display()
            ),
        }
    }

    /// Signs a checkpoint over everything recorded and writes the log's vkey beside the CA (once).
    /// Returns the vkey file when it was written now.
    fn close(self, pki_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
        self.log.checkpoint_now().context("signing the issuance log's checkpoint")?;
        let vkey = self.log.verifier_key()?.encode();
        let path = pki_dir.join(CA_LOG_VKEY);
        match std::fs::read_to_string(&path) {
            Ok(old) if old.lines().any(|l| l.trim() == vkey) => Ok(None),
            Ok(_) => bail!(
                "{} does not hold the issuance log's current key {vkey}; was the log replaced?",
                path.display()
            ),
            Err(_) => Ok(Some(write_new(&path, &format!("{vkey}\n"))?)),
        }
    }
}

fn load_ca(dir: &Path) -> anyhow::Result<ConsortiumCa> {
    let read = |n: &str| {
        let p = dir.join(n);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    Ok(ConsortiumCa::from_pem(&read("ca.pem")?, &read("ca.key")?)?)
}

fn write_new(path: &Path, content: &str) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(content.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

fn write_secret(path: &Path, content: &str) -> anyhow::Result<PathBuf> {
    let p = write_new(path, content)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", p.display()))?;
    }
    Ok(p)
}

/// What the `hearth pki` tests share: a CA directory, and the issuance log's entries.
#[cfg(test)]
mod test_support {
    use std::path::{Path, PathBuf};

    /// A CA directory made by `hearth pki init` without participants (so quick), international suite.
    pub(super) fn ca_dir() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        super::init(&super::InitArgs {
            dir: dir.clone(),
            consortium: "c".into(),
            participants: vec![],
            dns: vec![],
            ip: vec![],
            suite: hearth_crypto::SuiteId::International,
        })
        .unwrap();
        (tmp, dir)
    }

    /// Enrols participant `id` by request: its keys go to `host/<id>.key` (and `.sm2.key`), its
    /// certificate to `dir/<id>.pem`. Returns the key's path.
    pub(super) fn enrol(host: &Path, dir: &Path, id: &str, suite: hearth_crypto::SuiteId) -> PathBuf {
        let key = host.join(format!("{id}.key"));
        let csr = host.join(format!("{id}.csr"));
        super::enrol::request(&super::enrol::RequestArgs {
            id: id.into(),
            role: super::Role::Participant,
            institution: None,
            dns: vec![format!("{id}.example.org")],
            ip: vec![],
            suite,
            key_out: Some(key.clone()),
            out: csr.clone(),
            config: None,
            service: None,
            new_key: false,
            if_missing: false,
        })
        .unwrap();
        super::enrol::sign(&super::enrol::SignArgs {
            dir: dir.to_path_buf(),
            request: csr,
            role: super::Role::Participant,
            id: id.into(),
            institution: None,
            days: 90,
            out: None,
        })
        .unwrap();
        key
    }

    /// The (action, objects, detail) of every entry of the CA's issuance log.
    pub(super) fn log_entries(dir: &Path) -> Vec<(String, Vec<String>, String)> {
        let mut out = Vec::new();
        let opts = hearth_node::audit::export::ExportOptions { include_unsigned: true, ..Default::default() };
        hearth_node::audit::export::export(&dir.join(super::CA_LOG_DIR), &mut out, opts).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["entry"].is_object())
            .map(|v| {
                let e = &v["entry"];
                let objects = e["objects"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|o| o.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                (
                    e["action"].as_str().unwrap_or("").to_string(),
                    objects,
                    e["detail"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_certificates_carry_only_their_own_names() {
        let dir = tempfile::tempdir().unwrap();
        let a = InitArgs {
            dir: dir.path().join("pki"),
            consortium: "c".into(),
            participants: vec!["bank-a".into()],
            dns: vec!["coord.example.org".into()],
            ip: vec![[10, 0, 0, 5].into()],
            suite: SuiteId::International,
        };
        init(&a).unwrap();
        let pem = |n: &str| std::fs::read_to_string(a.dir.join(format!("{n}.pem"))).unwrap();
        let sans = |n: &str| {
            let der = rustls_pemfile::certs(&mut pem(n).as_bytes()).next().unwrap().unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            let san = cert.subject_alternative_name().unwrap().unwrap().value.clone();
            format!("{:?}", san.general_names)
        };
        assert!(sans("coordinator").contains("coord.example.org"), "{}", sans("coordinator"));
        assert!(sans("coordinator").contains("10.0.0.5") || sans("coordinator").contains("[10, 0, 0, 5]"));
        let mine = sans("bank-a");
        assert!(!mine.contains("coord.example.org") && !mine.contains("[10, 0, 0, 5]"), "{mine}");
        assert!(mine.contains("localhost"), "{mine}");
        // The institution's own app, DPO and agent, bound to it.
        for who in ["app", "dpo", "agent"] {
            let der =
                rustls_pemfile::certs(&mut pem(&format!("bank-a/{who}")).as_bytes()).next().unwrap().unwrap();
            let id = hearth_crypto::pki::identity_from_cert_der(&der).unwrap();
            assert!(id.acts_for("bank-a"), "{id}");
        }
    }
}
