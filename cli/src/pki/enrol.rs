//! Enrolment by request: `hearth pki request` on the node's host, `hearth pki sign` and `hearth pki renew`
//! at the CA. The CA only ever handles the request and the certificate: the keys stay where they were
//! made.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use hearth_crypto::pki::{
    cert_der_from_pem, inspect_issued_cert, CertInfo, CertRequest, ConsortiumCa, NodeIdentity, Role,
    VerifiedRequest, DEFAULT_LIFETIME_DAYS,
};
use hearth_crypto::SuiteId;

use super::{load_ca, names, write_new, write_secret, IssuanceLog};

pub(super) const REQUEST_HELP: &str = "Examples:\n  hearth pki request --id hospital-d --dns hospital-d.example.org --key-out /etc/hearth/hospital-d.key --out hospital-d.csr\n  hearth pki request --id hospital-d --suite national --key-out /etc/hearth/hospital-d.key --out hospital-d.csr\n  hearth pki request --role app --id crm --institution hospital-d --key-out crm.key --out crm.csr\n\nRun this on the node's own host. It generates the node's P-256 TLS key (written to --key-out, mode\n0600, never overwritten) and writes a certificate request (PKCS#10 PEM) naming the identity\nurn:hearth:<role>:<id>, localhost and the loopback addresses and the --dns and --ip names. Under the\nnational suite a participant or coordinator also gets its SM2 protocol key, beside the TLS key as\n<key-out without extension>.sm2.key (hex, mode 0600), whose public half the request carries with a\nproof of possession.\n\nSend only the request to the consortium CA (`hearth pki sign`); the keys never leave this host.";

pub(super) const SIGN_HELP: &str = "Examples:\n  hearth pki sign --dir pki --request hospital-d.csr --role participant --id hospital-d\n  hearth pki sign --dir pki --request crm.csr --role app --id crm --institution hospital-d --days 30\n\nState the identity you verified out of band (with the institution, by a channel other than the one\nthe request came by): the request must ask for exactly that role, id and institution, or nothing is\nsigned. The CA certifies the request's own public key (and SM2 protocol key), valid from five minutes\nago for --days (default 90, at most 825), records it in the issuance log DIR/ca-log (action\ncert.issue, detail \"... by request\"), and writes DIR/<id>.pem (DIR/<institution>/<id>.pem for an app,\ndpo or operator), or --out. It never sees a private key. Then `hearth pki kit` bundles what the\ninstitution installs.";

pub(super) const RENEW_HELP: &str = "Example:\n  hearth pki renew --dir pki --cert pki/hospital-d.pem --request hospital-d-2.csr\n\nThe node makes a new request (`hearth pki request`, with a new key or, by copying its old key's\nrequest, the same one); the CA certifies it for the identity of the certificate being renewed (the\nrequest must ask for exactly that identity), records it in the issuance log with the old\ncertificate's serial, and writes --out or DIR/<id>-<new serial>.pem. The old certificate stays valid\nuntil its own expiry (the overlap in which the node switches), unless revoked with `hearth pki\nrevoke`. A revoked certificate cannot be renewed: verify the identity again and use `hearth pki sign`.";

/// Arguments of `hearth pki request`.
#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// The node's id ([a-z0-9._-], at most 64 characters).
    #[arg(long)]
    pub id: String,
    /// coordinator, participant, operator, app, dpo, analyst, inference or agent.
    #[arg(long, default_value = "participant")]
    pub role: Role,
    /// The institution (participant id) an app, dpo, operator, inference or agent certificate acts for.
    #[arg(long)]
    pub institution: Option<String>,
    /// Extra DNS names (localhost is always included).
    #[arg(long, value_delimiter = ',')]
    pub dns: Vec<String>,
    /// Extra IP addresses (127.0.0.1 and ::1 are always included).
    #[arg(long, value_delimiter = ',')]
    pub ip: Vec<std::net::IpAddr>,
    /// The consortium's algorithm suite (see `hearth pki init --help`); with --config, the node's.
    #[arg(long, default_value = "international")]
    pub suite: SuiteId,
    /// Where to write the node's private TLS key (must not exist). With --config and a sealed keystore,
    /// the [tls] key path by default; with a PKCS#11 keystore there is no key file.
    #[arg(long)]
    pub key_out: Option<PathBuf>,
    /// Where to write the certificate request (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// The node's configuration (participant or coordinator): its suite and keystore. When the keystore
    /// is a PKCS#11 token, the TLS key (and under the national suite the SM2 protocol key) is made in the
    /// keystore and the request is signed there: no private key is ever written to a file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Which service --config is for (default: guessed from the file).
    #[arg(long, value_enum)]
    pub service: Option<crate::node::Service>,
    /// With a keystore that already holds a TLS key: make a new version instead of requesting for the
    /// current one (a renewal with a new key).
    #[arg(long)]
    pub new_key: bool,
    /// When --key-out and --out both exist already (a restarted pod's init container), keep them and
    /// succeed; when neither does, make them. Either way the request is also printed on stdout, for
    /// `kubectl logs`. One without the other is an error.
    #[arg(long, conflicts_with_all = ["config", "new_key"])]
    pub if_missing: bool,
}

/// Arguments of `hearth pki sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// Directory holding ca.pem and ca.key.
    #[arg(long, default_value = "hearth-pki")]
    pub dir: PathBuf,
    /// The certificate request (PEM) the node sent.
    #[arg(long)]
    pub request: PathBuf,
    /// The role you verified.
    #[arg(long)]
    pub role: Role,
    /// The id you verified.
    #[arg(long)]
    pub id: String,
    /// The institution you verified (app, dpo and operator certificates acting for one).
    #[arg(long)]
    pub institution: Option<String>,
    /// Days the certificate is valid (1 to 825).
    #[arg(long, default_value_t = DEFAULT_LIFETIME_DAYS, value_parser = clap::value_parser!(u32).range(1..=825))]
    pub days: u32,
    /// Where to write the certificate (default DIR/<id>.pem, or DIR/<institution>/<id>.pem).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Arguments of `hearth pki renew`.
#[derive(Debug, clap::Args)]
pub struct RenewArgs {
    /// Directory holding ca.pem and ca.key.
    #[arg(long, default_value = "hearth-pki")]
    pub dir: PathBuf,
    /// The certificate being renewed (PEM), issued by this CA.
    #[arg(long)]
    pub cert: PathBuf,
    /// The node's new certificate request (PEM).
    #[arg(long)]
    pub request: PathBuf,
    /// Days the new certificate is valid (1 to 825).
    #[arg(long, default_value_t = DEFAULT_LIFETIME_DAYS, value_parser = clap::value_parser!(u32).range(1..=825))]
    pub days: u32,
    /// Where to write the new certificate (default DIR/<id>-<serial>.pem, under DIR/<institution>/ for
    /// an app, dpo or operator).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn refuse_existing(paths: &[&Path]) -> anyhow::Result<()> {
    for p in paths {
        if p.exists() {
            bail!(
                "{} already exists; nothing was written (move it away or choose another path)",
                p.display()
            );
        }
    }
    Ok(())
}

fn create_parent(path: &Path) -> anyhow::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display())),
        None => Ok(()),
    }
}

/// The SM2 protocol key's file beside the TLS key: `<key without extension>.sm2.key`, where the
/// participant looks for it by default.
pub(super) fn sm2_key_path(key: &Path) -> PathBuf {
    key.with_extension("sm2.key")
}

/// `hearth pki request`: returns the files written (key, SM2 key under the national suite, request).
pub fn request(a: &RequestArgs) -> anyhow::Result<Vec<PathBuf>> {
    let identity = NodeIdentity { role: a.role, id: a.id.clone(), institution: a.institution.clone() };
    let (dns, ips) = names(&a.dns, &a.ip);
    let mut suite = a.suite;
    let mut key_out = a.key_out.clone();
    if let Some(config) = &a.config {
        let node =
            crate::node::NodeArgs { state_dir: None, config: Some(config.clone()), service: a.service };
        let t = node.resolve()?;
        if t.keystore.backend == hearth_node::config::Backend::Pkcs11 {
            if a.key_out.is_some() {
                bail!(
                    "{}'s keystore is a PKCS#11 token: the keys are made there, so --key-out makes no sense",
                    config.display()
                );
            }
            return request_in_keystore(&t, &identity, &dns, &ips, &a.out, a.new_key);
        }
        suite = t.suite;
        key_out = key_out.or_else(|| t.tls.map(|p| p.key));
    }
    let Some(key_out) = key_out else {
        bail!("give --key-out FILE (where the TLS key is written), or --config with the node's configuration")
    };
    let sm2_path = sm2_key_path(&key_out);
    if a.if_missing {
        match (key_out.exists(), a.out.exists()) {
            (true, true) => {
                let csr = std::fs::read_to_string(&a.out)
                    .with_context(|| format!("reading {}", a.out.display()))?;
                print!("{csr}");
                eprintln!(
                    "kept the key {} and the request {} made before; send the request to the consortium CA \
                     if it has not signed it yet",
                    key_out.display(),
                    a.out.display()
                );
                return Ok(Vec::new());
            }
            (false, false) => {}
            (true, false) => bail!(
                "{} exists but its request {} does not: move the key away to make a new pair, or make the \
                 request again from it elsewhere",
                key_out.display(),
                a.out.display()
            ),
            (false, true) => bail!(
                "the request {} exists but its key {} does not: remove the request to make a new pair",
                a.out.display(),
                key_out.display()
            ),
        }
    }
    refuse_existing(&[&key_out, &sm2_path, &a.out])?;
    let req = CertRequest::generate(&identity, &dns, &ips, suite)
        .with_context(|| format!("making a certificate request for {identity}"))?;
    create_parent(&key_out)?;
    create_parent(&a.out)?;
    let mut written = vec![write_secret(&key_out, &req.key_pem)?];
    if let Some(secret) = &req.sm2_secret {
        let hex = zeroize::Zeroizing::new(hex::encode(secret.expose()));
        written.push(write_secret(&sm2_path, &hex)?);
    }
    written.push(write_new(&a.out, &req.csr_pem)?);
    if a.if_missing {
        print!("{}", req.csr_pem);
    }
    eprintln!(
        "requesting {identity}; send {} to the consortium CA. The keys stay here: {}",
        a.out.display(),
        written[..written.len() - 1].iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    Ok(written)
}

/// `hearth pki request` for a node whose keystore is a PKCS#11 token: the TLS key (and under the national
/// suite the SM2 protocol key) is made in the keystore when missing (or anew with `new_key`), the request
/// is signed there, and each key made is recorded in the node's audit log. Only the request is written.
fn request_in_keystore(
    t: &crate::node::Target,
    identity: &NodeIdentity,
    dns: &[String],
    ips: &[std::net::IpAddr],
    out: &Path,
    new_key: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    use hearth_crypto::keystore::{KeyKind, KeyLabel};
    use hearth_node::keys::{Create, NodeKeys, AUDIT_KEY, PROTOCOL_KEY, TLS_KEY};
    refuse_existing(&[out])?;
    let _lock = hearth_node::files::NodeLock::acquire(&t.dir)?;
    let protocol =
        t.suite == SuiteId::National && matches!(identity.role, Role::Participant | Role::Coordinator);
    // The audit key too: the keys made here are recorded in the node's audit log, which a keystore used
    // for nothing else yet (an inference replica's token) does not have.
    let mut wanted = vec![(TLS_KEY, KeyKind::Tls), (AUDIT_KEY, KeyKind::Audit)];
    if protocol {
        wanted.push((PROTOCOL_KEY, KeyKind::Signing));
    }
    let (keys, mut events) = NodeKeys::open(&t.keystore, t.suite, &t.dir, &wanted, Create::IfMissing, None)
        .with_context(|| format!("opening the keystore of {}", t.dir.display()))?;
    if new_key && events.iter().all(|e| e.key.label.as_str() != TLS_KEY) {
        events.push(keys.rotate(TLS_KEY)?);
    }
    let ks = keys.keystore().as_ref();
    let tls = hearth_crypto::pki::KeystoreRequestKey::new(ks, KeyLabel::new(TLS_KEY)?)?;
    let sm2 = if protocol {
        let label = KeyLabel::new(PROTOCOL_KEY)?;
        let current = ks.current(&label)?;
        let proof = ks.sign(&label, &hearth_crypto::pki::possession_message(tls.public_key()))?.signature;
        Some(hearth_crypto::pki::Sm2Possession { public_key: ks.public_key(&current)?, proof })
    } else {
        None
    };
    let csr = CertRequest::request_pem(identity, dns, ips, &tls, sm2.as_ref())
        .with_context(|| format!("making a certificate request for {identity}"))?;
    // Every key made here is in the node's audit log before the request leaves.
    let paths = hearth_node::audit::files::AuditPaths::new(&t.dir);
    let origin = if paths.meta.exists() {
        hearth_node::audit::files::read_meta(&paths)?.origin
    } else {
        format!("hearth/{}/{}", identity.role, identity.id)
    };
    let (log, _) =
        hearth_node::audit::AuditLog::open(&t.dir, &keys, &origin).context("opening the node's audit log")?;
    for e in &events {
        log.record_key_event(&crate::node::cli_actor("pki request"), e);
    }
    log.checkpoint_now().context("signing the audit checkpoint")?;
    create_parent(out)?;
    let written = vec![write_new(out, &csr)?];
    eprintln!(
        "requesting {identity}; send {} to the consortium CA. The keys stay in {} ({})",
        out.display(),
        keys.name(),
        keys.location()
    );
    Ok(written)
}

fn read_request(path: &Path) -> anyhow::Result<VerifiedRequest> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    CertRequest::parse_and_verify(&pem)
        .with_context(|| format!("checking the certificate request {}", path.display()))
}

/// An issued certificate's serial and validity, for the operator.
fn window(info: &CertInfo) -> String {
    format!(
        "serial {}, valid from {} until {}",
        info.serial_hex(),
        humantime::format_rfc3339_seconds(info.not_before),
        humantime::format_rfc3339_seconds(info.not_after)
    )
}

/// What a request asks for besides its identity, for the operator to see before it is certified.
fn requested_names(req: &VerifiedRequest) -> String {
    let ips: Vec<String> = req.ip_addrs().iter().map(|i| i.to_string()).collect();
    format!(
        "DNS names [{}], IP addresses [{}]{}",
        req.dns_names().join(", "),
        ips.join(", "),
        if req.sm2_public_key().is_some() { ", an SM2 protocol key" } else { "" }
    )
}

/// Where a certificate of `identity` goes by default: `DIR/<file>`, under `DIR/<institution>/` for
/// certificates acting for an institution (as `hearth pki issue` writes them).
fn default_path(dir: &Path, identity: &NodeIdentity, file: &str) -> PathBuf {
    match &identity.institution {
        Some(i) => dir.join(i).join(file),
        None => dir.join(file),
    }
}

/// Signs `req` for `identity`, records it with `how`, writes it to `out`. Returns the written files
/// (the certificate, and the issuance log's vkey when written now) and the new certificate's details.
fn certify(
    dir: &Path,
    ca: &ConsortiumCa,
    req: &VerifiedRequest,
    identity: &NodeIdentity,
    days: u32,
    how: &str,
    out: impl FnOnce(&CertInfo) -> PathBuf,
) -> anyhow::Result<(Vec<PathBuf>, CertInfo)> {
    // The issuance log keeps the suite it was made with; a CA without one yet takes the request's.
    let suite = if req.sm2_public_key().is_some() { SuiteId::National } else { SuiteId::International };
    let cert = ca.sign_request(req, identity, days)?;
    let ca_der = cert_der_from_pem(&ca.cert_pem())?;
    let info = inspect_issued_cert(&ca_der, &cert_der_from_pem(&cert)?)?;
    let out = out(&info);
    refuse_existing(&[&out])?;
    let log = IssuanceLog::open(dir, suite)?;
    log.record(&cert, identity, Some(how))?;
    create_parent(&out)?;
    let mut written = vec![write_new(&out, &cert)?];
    written.extend(log.close(dir)?);
    Ok((written, info))
}

/// `hearth pki sign`.
pub fn sign(a: &SignArgs) -> anyhow::Result<Vec<PathBuf>> {
    let ca = load_ca(&a.dir)?;
    let req = read_request(&a.request)?;
    let identity = NodeIdentity { role: a.role, id: a.id.clone(), institution: a.institution.clone() };
    let default = default_path(&a.dir, &identity, &format!("{}.pem", a.id));
    let out = a.out.clone().unwrap_or(default);
    if a.out.is_none() && out.exists() {
        bail!(
            "{} already exists: renew it with `hearth pki renew --cert {} --request {}`, or give --out",
            out.display(),
            out.display(),
            a.request.display()
        );
    }
    let (written, info) = certify(&a.dir, &ca, &req, &identity, a.days, "by request", |_| out)?;
    eprintln!("certified {identity} by request ({}): {}", requested_names(&req), window(&info));
    Ok(written)
}

/// `hearth pki renew`.
pub fn renew(a: &RenewArgs) -> anyhow::Result<Vec<PathBuf>> {
    let ca = load_ca(&a.dir)?;
    let ca_der = cert_der_from_pem(&ca.cert_pem())?;
    let old_pem =
        std::fs::read_to_string(&a.cert).with_context(|| format!("reading {}", a.cert.display()))?;
    let old = inspect_issued_cert(&ca_der, &cert_der_from_pem(&old_pem)?)
        .with_context(|| format!("checking {} was issued by this CA", a.cert.display()))?;
    if let Some(r) = super::revoke::load(&a.dir)?.find(&old.serial_hex()) {
        bail!(
            "{} (serial {}) was revoked on {} ({}): it proves no identity any more; verify the identity again \
             and use `hearth pki sign`",
            a.cert.display(),
            r.serial,
            r.revoked_at,
            r.reason
        );
    }
    let req = read_request(&a.request)?;
    let how = format!("by request, renewing serial {}", old.serial_hex());
    let identity = old.identity.clone();
    let (written, new) = certify(&a.dir, &ca, &req, &identity, a.days, &how, |info| {
        a.out.clone().unwrap_or_else(|| {
            default_path(&a.dir, &identity, &format!("{}-{}.pem", identity.id, info.serial_hex()))
        })
    })?;
    eprintln!(
        "renewed {identity} ({}):\n  old: {} (stays valid until then unless revoked)\n  new: {}",
        requested_names(&req),
        window(&old),
        window(&new)
    );
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use hearth_crypto::pki::{identity_from_cert_der, p256_secret_from_pem, verify_node_cert};

    use super::super::test_support::{ca_dir, enrol, log_entries};
    use super::*;

    fn der_of(path: &Path) -> Vec<u8> {
        cert_der_from_pem(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn request_args(host: &Path, id: &str, suite: SuiteId) -> RequestArgs {
        RequestArgs {
            id: id.into(),
            role: Role::Participant,
            institution: None,
            dns: vec![],
            ip: vec![],
            suite,
            key_out: Some(host.join(format!("{id}.key"))),
            out: host.join(format!("{id}.csr")),
            config: None,
            service: None,
            new_key: false,
            if_missing: false,
        }
    }

    fn sign_args(dir: &Path, request: PathBuf, id: &str) -> SignArgs {
        SignArgs {
            dir: dir.to_path_buf(),
            request,
            role: Role::Participant,
            id: id.into(),
            institution: None,
            days: 90,
            out: None,
        }
    }

    #[test]
    fn a_request_signed_by_the_ca_certifies_the_nodes_own_key() {
        let (tmp, dir) = ca_dir();
        let host = tmp.path().join("host");
        let key = enrol(&host, &dir, "hospital-d", SuiteId::International);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let cert = der_of(&dir.join("hospital-d.pem"));
        let ca = der_of(&dir.join("ca.pem"));
        let peer = verify_node_cert(&ca, &cert, SystemTime::now()).unwrap();
        assert_eq!(peer.identity.to_string(), "participant:hospital-d");
        let secret = p256_secret_from_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();
        let public = SuiteId::International.suite().verifying_key(&secret).unwrap();
        assert_eq!(peer.tls_public_key, public, "the certificate carries the key made on the host");
        assert!(!dir.join("hospital-d.key").exists(), "no key on the CA's side");
        let days = peer.valid_until_unix
            - SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!((89 * 86_400..=90 * 86_400).contains(&days), "{days}");

        let digest = hex::encode(hearth_crypto::digest::content_digest(&cert));
        let entries = log_entries(&dir);
        assert!(
            entries.iter().any(|(a, o, d)| a == "cert.issue"
                && o == &vec![digest.clone()]
                && d.ends_with("by request")),
            "{entries:?}"
        );

        // The request refuses to overwrite the node's key.
        let e = request(&request_args(&host, "hospital-d", SuiteId::International)).unwrap_err();
        assert!(format!("{e:#}").contains("already exists"), "{e:#}");
    }

    #[test]
    fn if_missing_makes_the_pair_once_keeps_it_after_and_refuses_half_a_pair() {
        let tmp = tempfile::tempdir().unwrap();
        let args =
            RequestArgs { if_missing: true, ..request_args(tmp.path(), "bank-a", SuiteId::International) };
        let key = args.key_out.clone().unwrap();
        assert_eq!(request(&args).unwrap().len(), 2, "key and request made");
        let made = std::fs::read(&key).unwrap();
        assert!(request(&args).unwrap().is_empty(), "kept, nothing written");
        assert_eq!(std::fs::read(&key).unwrap(), made, "the key is never replaced");
        std::fs::remove_file(&args.out).unwrap();
        let e = format!("{:#}", request(&args).unwrap_err());
        assert!(e.contains("exists but its request") && e.contains("bank-a.csr"), "{e}");
        std::fs::remove_file(&key).unwrap();
        std::fs::write(&args.out, "x").unwrap();
        let e = format!("{:#}", request(&args).unwrap_err());
        assert!(e.contains("its key") && e.contains("does not"), "{e}");
    }

    #[test]
    fn the_ca_refuses_a_request_for_another_identity_than_it_verified() {
        let (tmp, dir) = ca_dir();
        let a = request_args(tmp.path(), "hospital-d", SuiteId::International);
        request(&a).unwrap();
        let before = log_entries(&dir).len();
        let e = sign(&sign_args(&dir, a.out.clone(), "hospital-e")).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("participant:hospital-d") && msg.contains("participant:hospital-e"), "{msg}");
        assert!(!dir.join("hospital-e.pem").exists() && !dir.join("hospital-d.pem").exists());
        assert_eq!(log_entries(&dir).len(), before, "nothing recorded");
        // Nor another role for the same id.
        let mut coordinator = sign_args(&dir, a.out.clone(), "hospital-d");
        coordinator.role = Role::Coordinator;
        assert!(format!("{:#}", sign(&coordinator).unwrap_err()).contains("coordinator:hospital-d"));
        // A request that was tampered with is refused before anything else.
        let pem = std::fs::read_to_string(&a.out).unwrap();
        let tampered = tmp.path().join("tampered.csr");
        std::fs::write(&tampered, pem.replacen("MII", "MIJ", 1)).unwrap();
        assert!(sign(&sign_args(&dir, tampered, "hospital-d")).is_err());
    }

    #[test]
    fn a_national_request_keeps_its_sm2_key_beside_the_tls_key_and_is_certified_with_it() {
        let (tmp, dir) = ca_dir();
        let key = enrol(tmp.path(), &dir, "hospital-n", SuiteId::National);
        let sm2 = tmp.path().join("hospital-n.sm2.key");
        let secret = hex::decode(std::fs::read_to_string(&sm2).unwrap().trim()).unwrap();
        let secret = hearth_crypto::SecretBytes::from_slice("sm2", &secret).unwrap();
        let public = SuiteId::National.suite().verifying_key(&secret).unwrap();
        let peer = verify_node_cert(
            &der_of(&dir.join("ca.pem")),
            &der_of(&dir.join("hospital-n.pem")),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(peer.sm2_public_key, Some(public));
        assert!(key.exists());
    }

    #[test]
    fn renewal_keeps_the_identity_and_names_the_old_serial() {
        let (tmp, dir) = ca_dir();
        enrol(tmp.path(), &dir, "hospital-d", SuiteId::International);
        let old = dir.join("hospital-d.pem");
        let ca = der_of(&dir.join("ca.pem"));
        let old_info = inspect_issued_cert(&ca, &der_of(&old)).unwrap();

        let host2 = tmp.path().join("new");
        let a = request_args(&host2, "hospital-d", SuiteId::International);
        request(&a).unwrap();
        let renew_args =
            RenewArgs { dir: dir.clone(), cert: old.clone(), request: a.out.clone(), days: 30, out: None };
        let written = renew(&renew_args).unwrap();
        let new = &written[0];
        let new_info = inspect_issued_cert(&ca, &der_of(new)).unwrap();
        assert_eq!(new_info.identity, old_info.identity);
        assert_ne!(new_info.serial, old_info.serial);
        assert!(new.file_name().unwrap().to_string_lossy().contains(&new_info.serial_hex()));
        assert!(new_info.not_after < old_info.not_after, "30 days, not 90");
        // Both are valid now: the overlap window.
        verify_node_cert(&ca, &der_of(&old), SystemTime::now()).unwrap();
        verify_node_cert(&ca, &der_of(new), SystemTime::now()).unwrap();
        let entries = log_entries(&dir);
        assert!(
            entries.iter().any(|(a, _, d)| a == "cert.issue"
                && d.contains(&format!("renewing serial {}", old_info.serial_hex()))),
            "{entries:?}"
        );

        // A request for another identity cannot renew this certificate.
        let other = request_args(&host2, "hospital-e", SuiteId::International);
        request(&other).unwrap();
        let e = renew(&RenewArgs { request: other.out, ..renew_args }).unwrap_err();
        assert!(format!("{e:#}").contains("participant:hospital-e"), "{e:#}");
        assert_eq!(identity_from_cert_der(&der_of(new)).unwrap().id, "hospital-d");
    }
}
