//! `hearth pki revoke` and `hearth pki crl`: the CA's revocation list.
//!
//! `DIR/revoked.json` is the CA's own record of what it revoked (and the number of the last list it
//! signed); `DIR/crl.pem` is the signed X.509 list made from it, which nodes fetch. Every revocation is
//! first recorded in the issuance log (`cert.revoke`), then in `revoked.json`, then published in a new
//! `crl.pem`: a revocation the log does not hold is never published.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context};
use hearth_audit::{Action, Event, Outcome};
use hearth_crypto::digest::content_digest;
use hearth_crypto::pki::{
    cert_der_from_pem, inspect_issued_cert, ConsortiumCa, RevocationReason, RevokedEntry, Role, CRL_VALIDITY,
};
use hearth_crypto::SuiteId;
use serde::{Deserialize, Serialize};

use super::{load_ca, IssuanceLog};

/// The CA's record of revoked certificates, beside ca.pem.
pub const REVOKED_FILE: &str = "revoked.json";
/// The signed revocation list, beside ca.pem.
pub const CRL_FILE: &str = "crl.pem";

pub(super) const REVOKE_HELP: &str = "Examples:\n  hearth pki revoke --dir pki --cert pki/hospital-d.pem --reason key-compromise\n  hearth pki revoke --dir pki --serial 5f3a0c... --reason cessation-of-operation\n\nRecords a cert.revoke entry in the issuance log DIR/ca-log (the serial as its object; the reason, and\nthe certificate's identity and SHA-256 when known: with --serial they are looked up among the\ncertificates in DIR), adds the certificate to DIR/revoked.json, and writes DIR/crl.pem: an X.509\nrevocation list signed by the CA key, with the next CRL number, valid for 7 days. Distribute crl.pem\nto every node (beside ca.pem), and run `hearth pki crl` at least weekly so it never goes stale.\nReasons: key-compromise, superseded, cessation-of-operation, unspecified (the default).";

pub(super) const CRL_HELP: &str = "Example:\n  hearth pki crl --dir pki\n\nSigns DIR/crl.pem again from DIR/revoked.json with the next CRL number, this update now and next\nupdate in 7 days, revoking nothing new. Run it (e.g. from a weekly timer on the CA's host) before\nthe current list's next update, and distribute the new list.";

/// Arguments of `hearth pki revoke`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["cert", "serial"])))]
pub struct RevokeArgs {
    /// Directory holding ca.pem and ca.key.
    #[arg(long, default_value = "hearth-pki")]
    pub dir: PathBuf,
    /// The certificate to revoke (PEM), issued by this CA.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// The serial number (hex) of the certificate to revoke, when its file is lost.
    #[arg(long)]
    pub serial: Option<String>,
    /// Why: key-compromise, superseded, cessation-of-operation or unspecified.
    #[arg(long, default_value = "unspecified")]
    pub reason: RevocationReason,
}

/// Arguments of `hearth pki crl`.
#[derive(Debug, clap::Args)]
pub struct CrlArgs {
    /// Directory holding ca.pem, ca.key and revoked.json.
    #[arg(long, default_value = "hearth-pki")]
    pub dir: PathBuf,
}

/// `DIR/revoked.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokedFile {
    /// The number of the last revocation list signed (0: none yet).
    pub crl_number: u64,
    /// Every certificate revoked, oldest first.
    pub revoked: Vec<Revoked>,
}

/// One entry of `revoked.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Revoked {
    /// The serial number, lower-case hex without leading zero bytes.
    pub serial: String,
    /// When it was revoked (RFC 3339, UTC).
    pub revoked_at: String,
    /// Why.
    pub reason: RevocationReason,
    /// The certificate's SHA-256 (hex), as the issuance log's cert.issue entry names it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The certificate's identity (`role:id`, `role:id@institution`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl RevokedFile {
    /// The entry revoking `serial_hex`, if any.
    pub fn find(&self, serial_hex: &str) -> Option<&Revoked> {
        self.revoked.iter().find(|r| r.serial == serial_hex)
    }

    fn entries(&self) -> anyhow::Result<Vec<RevokedEntry>> {
        self.revoked
            .iter()
            .map(|r| {
                Ok(RevokedEntry {
                    serial: hex::decode(&r.serial)
                        .with_context(|| format!("{REVOKED_FILE}: serial {:?} is not hex", r.serial))?,
                    revoked_at: humantime::parse_rfc3339(&r.revoked_at)
                        .with_context(|| format!("{REVOKED_FILE}: revoked_at {:?}", r.revoked_at))?,
                    reason: r.reason,
                })
            })
            .collect()
    }
}

/// Reads `DIR/revoked.json` (empty when missing).
pub(super) fn load(dir: &Path) -> anyhow::Result<RevokedFile> {
    let path = dir.join(REVOKED_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RevokedFile::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `revoked.json` with the next CRL number, then the list signed under that number as
/// `crl.pem` (each replaced atomically). Returns both paths.
fn publish(ca: &ConsortiumCa, dir: &Path, file: &mut RevokedFile) -> anyhow::Result<Vec<PathBuf>> {
    file.crl_number += 1;
    let now = SystemTime::now();
    let crl = ca.sign_crl(file.crl_number, &file.entries()?, now).context("signing the revocation list")?;
    let revoked = dir.join(REVOKED_FILE);
    let json = serde_json::to_string_pretty(file).context("encoding the revoked certificates")?;
    hearth_node::files::write_atomic(&revoked, format!("{json}\n").as_bytes(), false)?;
    let crl_path = dir.join(CRL_FILE);
    hearth_node::files::write_atomic(&crl_path, crl.as_bytes(), false)?;
    eprintln!(
        "revocation list {} lists {} certificate(s); next update due {}",
        file.crl_number,
        file.revoked.len(),
        humantime::format_rfc3339_seconds(now + CRL_VALIDITY)
    );
    Ok(vec![revoked, crl_path])
}

/// A serial given on the command line: hex, optionally with `0x` or colons; leading zeros dropped.
fn parse_serial(s: &str) -> anyhow::Result<String> {
    let digits: String = s.trim().trim_start_matches("0x").chars().filter(|c| *c != ':').collect();
    let padded = if digits.len() % 2 == 1 { format!("0{digits}") } else { digits };
    let bytes =
        hex::decode(padded.to_ascii_lowercase()).with_context(|| format!("serial {s:?} is not hex"))?;
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    if start == bytes.len() {
        bail!("serial {s:?} is zero");
    }
    Ok(hex::encode(&bytes[start..]))
}

/// What is known of the certificate being revoked.
struct Target {
    serial: String,
    sha256: Option<String>,
    identity: Option<hearth_crypto::pki::NodeIdentity>,
}

/// The certificate files under `dir` and its subdirectories (one level, as `hearth pki` writes them).
fn certificate_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for d in dirs {
        if let Ok(entries) = std::fs::read_dir(&d) {
            out.extend(
                entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "pem")),
            );
        }
    }
    out.sort();
    out
}

fn target(ca_der: &[u8], a: &RevokeArgs) -> anyhow::Result<Target> {
    let describe = |der: &[u8]| -> anyhow::Result<Target> {
        let info = inspect_issued_cert(ca_der, der)?;
        Ok(Target {
            serial: info.serial_hex(),
            sha256: Some(hex::encode(content_digest(der))),
            identity: Some(info.identity),
        })
    };
    match (&a.cert, &a.serial) {
        (Some(path), _) => {
            let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            describe(&cert_der_from_pem(&pem)?)
                .with_context(|| format!("checking {} was issued by this CA", path.display()))
        }
        (None, Some(serial)) => {
            let serial = parse_serial(serial)?;
            // The certificate's file, if the CA still has it, tells its identity and SHA-256.
            let known = certificate_files(&a.dir).into_iter().find_map(|p| {
                let der = cert_der_from_pem(&std::fs::read_to_string(p).ok()?).ok()?;
                describe(&der).ok().filter(|t| t.serial == serial)
            });
            Ok(known.unwrap_or(Target { serial, sha256: None, identity: None }))
        }
        (None, None) => bail!("give --cert or --serial"),
    }
}

/// `hearth pki revoke`: returns the files written.
pub fn revoke(a: &RevokeArgs) -> anyhow::Result<Vec<PathBuf>> {
    let ca = load_ca(&a.dir)?;
    let ca_der = cert_der_from_pem(&ca.cert_pem())?;
    let t = target(&ca_der, a)?;
    // Locks the PKI directory: revocations, issues and list refreshes happen one at a time.
    let log = IssuanceLog::open(&a.dir, SuiteId::International)?;
    let mut file = load(&a.dir)?;
    if let Some(r) = file.find(&t.serial) {
        bail!("serial {} was already revoked on {} ({})", r.serial, r.revoked_at, r.reason);
    }
    let mut detail = format!("serial {} revoked ({})", t.serial, a.reason);
    if let Some(id) = &t.identity {
        detail.push_str(&format!(", {id}"));
    }
    if let Some(sha) = &t.sha256 {
        detail.push_str(&format!(", certificate SHA-256 {sha}"));
    }
    let mut event = Event::new("ca", Action::CertRevoke, Outcome::Ok).object(t.serial.clone()).detail(detail);
    match &t.identity {
        Some(hearth_crypto::pki::NodeIdentity { institution: Some(i), .. }) => {
            event = event.tenant(i.clone())
        }
        Some(hearth_crypto::pki::NodeIdentity { role: Role::Participant, id, .. }) => {
            event = event.tenant(id.clone())
        }
        _ => {}
    }
    log.append(event)?;
    file.revoked.push(Revoked {
        serial: t.serial.clone(),
        revoked_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        reason: a.reason,
        sha256: t.sha256,
        identity: t.identity.as_ref().map(|i| i.to_string()),
    });
    let mut written = publish(&ca, &a.dir, &mut file)?;
    written.extend(log.close(&a.dir)?);
    match &t.identity {
        Some(id) => eprintln!("revoked {id} (serial {}, {})", t.serial, a.reason),
        None => eprintln!(
            "revoked serial {} ({}); no certificate in {} has it",
            t.serial,
            a.reason,
            a.dir.display()
        ),
    }
    Ok(written)
}

/// `hearth pki crl`: returns the files written.
pub fn refresh(a: &CrlArgs) -> anyhow::Result<Vec<PathBuf>> {
    let ca = load_ca(&a.dir)?;
    let log = IssuanceLog::open(&a.dir, SuiteId::International)?;
    let mut file = load(&a.dir)?;
    let mut written = publish(&ca, &a.dir, &mut file)?;
    written.extend(log.close(&a.dir)?);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use hearth_crypto::pki::{crl_der_from_pem, RevocationList};

    use super::super::test_support::{ca_dir, enrol, log_entries};
    use super::*;

    fn der_of(path: &Path) -> Vec<u8> {
        cert_der_from_pem(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn crl(dir: &Path) -> RevocationList {
        let pem = std::fs::read_to_string(dir.join(CRL_FILE)).unwrap();
        RevocationList::verify(
            &der_of(&dir.join("ca.pem")),
            &crl_der_from_pem(&pem).unwrap(),
            SystemTime::now(),
        )
        .unwrap()
    }

    fn args(dir: &Path, cert: Option<PathBuf>, serial: Option<String>) -> RevokeArgs {
        RevokeArgs { dir: dir.to_path_buf(), cert, serial, reason: RevocationReason::KeyCompromise }
    }

    #[test]
    fn revoking_records_it_and_publishes_a_signed_list() {
        let (tmp, dir) = ca_dir();
        enrol(tmp.path(), &dir, "hospital-d", SuiteId::International);
        enrol(tmp.path(), &dir, "hospital-e", SuiteId::International);
        let (d, e) = (der_of(&dir.join("hospital-d.pem")), der_of(&dir.join("hospital-e.pem")));
        let serial = inspect_issued_cert(&der_of(&dir.join("ca.pem")), &d).unwrap().serial_hex();

        revoke(&args(&dir, Some(dir.join("hospital-d.pem")), None)).unwrap();
        let list = crl(&dir);
        assert_eq!(list.number(), 1);
        assert!(list.is_revoked(&d) && !list.is_revoked(&e));

        let file = load(&dir).unwrap();
        assert_eq!(file.crl_number, 1);
        let r = file.find(&serial).unwrap();
        assert_eq!(r.identity.as_deref(), Some("participant:hospital-d"));
        assert_eq!(r.sha256.as_deref(), Some(hex::encode(content_digest(&d)).as_str()));
        assert_eq!(r.reason, RevocationReason::KeyCompromise);
        let json = std::fs::read_to_string(dir.join(REVOKED_FILE)).unwrap();
        assert!(json.contains("\"key-compromise\"") && json.contains(&serial), "{json}");

        let entries = log_entries(&dir);
        let (_, objects, detail) = entries.iter().find(|(a, _, _)| a == "cert.revoke").unwrap();
        assert_eq!(objects, &vec![serial.clone()]);
        assert!(detail.contains("key-compromise") && detail.contains("participant:hospital-d"), "{detail}");

        // Twice is refused; by serial, the identity is found among the CA's certificates.
        let again = revoke(&args(&dir, None, Some(serial.clone()))).unwrap_err();
        assert!(format!("{again:#}").contains("already revoked"), "{again:#}");
        let e_serial = inspect_issued_cert(&der_of(&dir.join("ca.pem")), &e).unwrap().serial_hex();
        revoke(&args(&dir, None, Some(format!("0x00{e_serial}")))).unwrap();
        let file = load(&dir).unwrap();
        assert_eq!(file.find(&e_serial).unwrap().identity.as_deref(), Some("participant:hospital-e"));
        let list = crl(&dir);
        assert_eq!(list.number(), 2);
        assert!(list.is_revoked(&d) && list.is_revoked(&e));

        // A refresh signs a new list: a new number, the same entries.
        refresh(&CrlArgs { dir: dir.clone() }).unwrap();
        let list = crl(&dir);
        assert_eq!((list.number(), list.len()), (3, 2));
        assert_eq!(load(&dir).unwrap().crl_number, 3);

        // A revoked certificate cannot be renewed.
        let renewal = tmp.path().join("renew.csr");
        super::super::enrol::request(&super::super::enrol::RequestArgs {
            id: "hospital-d".into(),
            role: Role::Participant,
            institution: None,
            dns: vec![],
            ip: vec![],
            suite: SuiteId::International,
            key_out: Some(tmp.path().join("renew.key")),
            out: renewal.clone(),
            config: None,
            service: None,
            new_key: false,
            if_missing: false,
        })
        .unwrap();
        let e = super::super::enrol::renew(&super::super::enrol::RenewArgs {
            dir: dir.clone(),
            cert: dir.join("hospital-d.pem"),
            request: renewal,
            days: 90,
            out: None,
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("was revoked"), "{e:#}");
    }

    #[test]
    fn another_cas_certificate_and_bad_serials_are_refused() {
        let (_tmp, dir) = ca_dir();
        let (_other_tmp, other) = ca_dir();
        let e = revoke(&args(&dir, Some(other.join("operator.pem")), None)).unwrap_err();
        assert!(format!("{e:#}").contains("issued by this CA"), "{e:#}");
        for bad in ["xyz", "00", ""] {
            assert!(revoke(&args(&dir, None, Some(bad.into()))).is_err(), "{bad:?}");
        }
        assert!(!dir.join(CRL_FILE).exists());
        assert_eq!(parse_serial("0A:0b").unwrap(), "0a0b");
        assert_eq!(parse_serial("0x0abc").unwrap(), "0abc");
    }
}
