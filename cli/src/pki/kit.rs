//! `hearth pki kit`: what the CA hands an institution once its participant is certified. Public material
//! only (certificates, the member list, the revocation list, configuration): the institution's keys were
//! made on its own host (`hearth pki request`) and are never here, so the kit can travel by any channel.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use base64::Engine;
use hearth_crypto::pki::{cert_der_from_pem, inspect_issued_cert, validate_node_id, Role};
use hearth_participant::membership::MEMBERS_FILE;

use super::revoke::CRL_FILE;
use super::{load_ca, write_new};

pub(super) const KIT_HELP: &str = "Example:\n  hearth pki kit hospital-d --dir pki --out kit-hospital-d --coordinator coord.example.org:7700\n\nWrites KIT_DIR (created; existing files are never overwritten) with ca.pem, NAME.pem (DIR/NAME.pem, a\nparticipant certificate for NAME issued by this CA), members.json and crl.pem when DIR has them,\nparticipant.toml (the reference configuration with the coordinator's address and name and the TLS\npaths /etc/hearth/ca.pem, /etc/hearth/NAME.pem, /etc/hearth/NAME.key), hearth-participant.service\n(the systemd unit), NAME-certificate.yaml (a Kubernetes Secret holding the certificates) and\nREADME.txt saying where each goes. The kit holds no private key and no passphrase: the institution's\nkeys were made on its host by `hearth pki request` and stay there.";

/// The reference participant configuration the kit's `participant.toml` is written from.
const PARTICIPANT_TOML: &str = include_str!("../../../deploy/participant.toml");
/// The participant's systemd unit, copied as is.
const PARTICIPANT_UNIT: &str = include_str!("../../../deploy/systemd/hearth-participant.service");
/// The name the reference configuration uses for the institution.
const REFERENCE_NAME: &str = "bank-a";
/// The reference configuration's coordinator lines.
const REFERENCE_COORDINATOR: &str = "coordinator = \"coord.example.org:7700\"";
const REFERENCE_COORDINATOR_NAME: &str = "coordinator_name = \"coord.example.org\"";
const REFERENCE_SUITE: &str = "suite = \"international\"";

/// Arguments of `hearth pki kit`.
#[derive(Debug, clap::Args)]
pub struct KitArgs {
    /// The participant's id: the kit holds DIR/NAME.pem.
    pub name: String,
    /// Directory holding ca.pem and NAME.pem.
    #[arg(long, default_value = "hearth-pki")]
    pub dir: PathBuf,
    /// The kit directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// The coordinator's gRPC address, HOST:PORT (default: the reference file's placeholder, to edit).
    #[arg(long)]
    pub coordinator: Option<String>,
    /// The name in the coordinator's certificate (default: the host of --coordinator).
    #[arg(long)]
    pub coordinator_name: Option<String>,
}

/// The host of `HOST:PORT` (without the brackets of an IPv6 address).
fn host_of(addr: &str) -> anyhow::Result<&str> {
    let (host, port) =
        addr.rsplit_once(':').with_context(|| format!("--coordinator {addr:?} is not HOST:PORT"))?;
    if port.parse::<u16>().is_err() || host.is_empty() {
        bail!("--coordinator {addr:?} is not HOST:PORT");
    }
    Ok(host.trim_start_matches('[').trim_end_matches(']'))
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `deploy/participant.toml` for participant `name`: its coordinator, its certificate and key paths
/// under /etc/hearth, its suite.
pub(super) fn participant_toml(
    name: &str,
    coordinator: Option<(&str, &str)>,
    national: bool,
) -> anyhow::Result<String> {
    let mut text = PARTICIPANT_TOML.to_string();
    for anchor in [REFERENCE_COORDINATOR, REFERENCE_COORDINATOR_NAME, REFERENCE_SUITE] {
        if !text.contains(anchor) {
            bail!("deploy/participant.toml no longer has the line {anchor:?} the kit fills in");
        }
    }
    if let Some((addr, host)) = coordinator {
        text = text
            .replace(REFERENCE_COORDINATOR, &format!("coordinator = {}", toml_string(addr)))
            .replace(REFERENCE_COORDINATOR_NAME, &format!("coordinator_name = {}", toml_string(host)));
    }
    if national {
        text = text.replace(REFERENCE_SUITE, "suite = \"national\"");
    }
    let header = format!(
        "# Written by `hearth pki kit {name}` from Hearth's reference participant configuration.\n\
         # Review it: data_dir, listen and the keystore settings are the reference defaults.\n"
    );
    Ok(header + &text.replace(REFERENCE_NAME, name))
}

fn readme(name: &str, has_members: bool, has_crl: bool, national: bool) -> String {
    let mut places = vec![
        ("ca.pem".to_string(), "/etc/hearth/ca.pem".to_string(), "the consortium CA certificate"),
        (format!("{name}.pem"), format!("/etc/hearth/{name}.pem"), "this participant's certificate"),
    ];
    if has_members {
        places.push((
            MEMBERS_FILE.into(),
            format!("/etc/hearth/{MEMBERS_FILE}"),
            "the member list the institutions signed",
        ));
    }
    if has_crl {
        places.push((
            CRL_FILE.into(),
            format!("/etc/hearth/{CRL_FILE}"),
            "the CA's revocation list (refreshed weekly)",
        ));
    }
    places.extend([
        (
            "participant.toml".into(),
            "/etc/hearth/participant.toml".into(),
            "the configuration: check the coordinator",
        ),
        (
            "hearth-participant.service".into(),
            "/etc/systemd/system/hearth-participant.service".into(),
            "then: systemctl enable --now hearth-participant",
        ),
        (
            format!("{name}-certificate.yaml"),
            format!("kubectl apply -f {name}-certificate.yaml"),
            "on Kubernetes, instead of the files above",
        ),
    ]);
    let mut s = format!(
        "Hearth startup kit for participant {name}\n\n\
         Made by the consortium CA with `hearth pki kit`. Everything here is public: certificates,\n\
         configuration and the service unit. The kit holds no private key and no passphrase: the\n\
         institution's private key was made on its own host by `hearth pki request` and never leaves the\n\
         institution. Do not send it to anyone, the CA included.\n\n\
         Where each file goes, on the participant's host:\n\n"
    );
    for (file, place, what) in places {
        s.push_str(&format!("  {file}\n      -> {place}\n      {what}\n"));
    }
    s.push_str(&format!(
        "\nAlready on the host, made there and never in this kit:\n\
         \x20 /etc/hearth/{name}.key: the private TLS key written by `hearth pki request` (mode 0600, owner hearth)\n"
    ));
    if national {
        s.push_str(&format!("  /etc/hearth/{name}.sm2.key: the SM2 protocol key, beside it\n"));
    }
    s.push_str(&format!(
        "  /etc/hearth/participant.passphrase: the keystore passphrase (mode 0600)\n\
         \x20 /etc/hearth/{name}/privacy-policy.json: the privacy policy the institution's data protection\n\
         \x20   officer signs (`hearth budget sign`)\n\
         On Kubernetes, put the key in a Secret of its own on the institution's side, e.g.\n\
         \x20 kubectl create secret generic {name}-key --from-file={name}.key=/etc/hearth/{name}.key\n\n\
         Before the certificate expires, make a new request on the host (`hearth pki request`) and send it\n\
         to the CA for `hearth pki renew`.\n"
    ));
    s
}

/// A Kubernetes Secret holding `files` (name, content), base64 as `data` values must be.
fn secret_manifest(name: &str, files: &[(String, String)]) -> String {
    let mut s = format!(
        "# The consortium's public certificates for Hearth participant {name}, written by `hearth pki kit`.\n\
         # No private key: the institution keeps {name}.key in a Secret of its own.\n\
         apiVersion: v1\n\
         kind: Secret\n\
         metadata:\n  name: {name}-certificate\n  labels:\n    app.kubernetes.io/name: hearth-participant\n    app.kubernetes.io/instance: {name}\n\
         type: Opaque\n\
         data:\n"
    );
    for (file, content) in files {
        let b64 = base64::engine::general_purpose::STANDARD.encode(content.as_bytes());
        s.push_str(&format!("  {file}: {b64}\n"));
    }
    s
}

/// `hearth pki kit`: returns the files written.
pub fn write(a: &KitArgs) -> anyhow::Result<Vec<PathBuf>> {
    validate_node_id(&a.name)?;
    let name = a.name.as_str();
    let ca = load_ca(&a.dir)?;
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let cert_path = a.dir.join(format!("{name}.pem"));
    let cert = read(&cert_path)?;
    let cert_der = cert_der_from_pem(&cert)?;
    let info = inspect_issued_cert(&cert_der_from_pem(&ca.cert_pem())?, &cert_der)
        .with_context(|| format!("checking {} was issued by this CA", cert_path.display()))?;
    if info.identity.role != Role::Participant || info.identity.id != name {
        bail!("{} is the certificate of {}, not of participant {name}", cert_path.display(), info.identity);
    }
    // A certificate carrying an SM2 protocol key belongs to a national-suite consortium.
    let national = info.sm2_public_key.is_some();
    let coordinator = match &a.coordinator {
        Some(addr) => {
            let host = a.coordinator_name.clone().map_or_else(|| host_of(addr).map(str::to_string), Ok)?;
            Some((addr.clone(), host))
        }
        None if a.coordinator_name.is_some() => bail!("--coordinator-name needs --coordinator"),
        None => None,
    };

    let mut public = vec![("ca.pem".to_string(), ca.cert_pem()), (format!("{name}.pem"), cert)];
    let members = a.dir.join(MEMBERS_FILE);
    if members.exists() {
        public.push((MEMBERS_FILE.to_string(), read(&members)?));
    }
    let crl = a.dir.join(CRL_FILE);
    if crl.exists() {
        public.push((CRL_FILE.to_string(), read(&crl)?));
    }
    let config =
        participant_toml(name, coordinator.as_ref().map(|(a, h)| (a.as_str(), h.as_str())), national)?;
    let has_members = members.exists();
    let has_crl = crl.exists();
    let mut files = public.clone();
    files.push(("participant.toml".into(), config));
    files.push(("hearth-participant.service".into(), PARTICIPANT_UNIT.to_string()));
    files.push((format!("{name}-certificate.yaml"), secret_manifest(name, &public)));
    files.push(("README.txt".into(), readme(name, has_members, has_crl, national)));

    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut written = Vec::new();
    for (file, content) in &files {
        // Belt and braces: nothing key-like is ever written into a kit.
        if content.contains("PRIVATE KEY") || file.ends_with(".key") {
            bail!("refusing to put {file} in the kit: it looks like a private key");
        }
        written.push(write_new(&a.out.join(file), content)?);
    }
    if coordinator.is_none() {
        eprintln!(
            "no --coordinator given: edit coordinator and coordinator_name in {}",
            a.out.join("participant.toml").display()
        );
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use hearth_crypto::SuiteId;

    use super::super::test_support::{ca_dir, enrol};
    use super::*;

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    #[test]
    fn a_kit_holds_no_private_key_and_its_configuration_loads() {
        let (tmp, dir) = ca_dir();
        let host = tmp.path().join("host");
        enrol(&host, &dir, "hospital-d", SuiteId::National);
        // Keys that must never travel, even if someone left them in the CA's directory.
        std::fs::copy(host.join("hospital-d.key"), dir.join("hospital-d.key")).unwrap();
        super::super::revoke::refresh(&super::super::revoke::CrlArgs { dir: dir.clone() }).unwrap();
        let out = tmp.path().join("kit");
        let written = write(&KitArgs {
            name: "hospital-d".into(),
            dir: dir.clone(),
            out: out.clone(),
            coordinator: Some("coord.consortium.example:7700".into()),
            coordinator_name: None,
        })
        .unwrap();
        let all = files(&out);
        assert_eq!(written.len(), all.len());
        let names: Vec<String> =
            all.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        for expected in [
            "ca.pem",
            "hospital-d.pem",
            "crl.pem",
            "participant.toml",
            "hearth-participant.service",
            "hospital-d-certificate.yaml",
            "README.txt",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
        }
        for path in &all {
            let name = path.file_name().unwrap().to_string_lossy();
            assert!(
                !name.ends_with(".key") && !name.contains("passphrase") && !name.contains("keystore"),
                "{name}"
            );
            let text = std::fs::read_to_string(path).unwrap();
            assert!(!text.contains("PRIVATE KEY"), "{name} holds a private key");
        }

        let config: hearth_participant::ParticipantConfig =
            crate::config::load_with_env(Some(&out.join("participant.toml")), "HEARTH_PARTICIPANT", &[])
                .unwrap();
        assert_eq!(config.coordinator.as_str(), "coord.consortium.example:7700");
        assert_eq!(config.coordinator_name, "coord.consortium.example");
        assert_eq!(config.tls.cert, Path::new("/etc/hearth/hospital-d.pem"));
        assert_eq!(config.tls.key, Path::new("/etc/hearth/hospital-d.key"));
        assert_eq!(config.tls.ca, Path::new("/etc/hearth/ca.pem"));
        assert_eq!(config.suite, SuiteId::National, "the certificate carries an SM2 key");

        let manifest = std::fs::read_to_string(out.join("hospital-d-certificate.yaml")).unwrap();
        assert!(manifest.contains("kind: Secret") && manifest.contains("type: Opaque"), "{manifest}");
        let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(dir.join("ca.pem")).unwrap());
        assert!(manifest.contains(&format!("  ca.pem: {ca}\n")), "{manifest}");
        let readme = std::fs::read_to_string(out.join("README.txt")).unwrap();
        assert!(readme.contains("never leaves") && readme.contains("/etc/hearth/hospital-d.pem"), "{readme}");

        // Only a participant certificate of that name makes a kit; a second kit never overwrites.
        let other = tmp.path().join("kit2");
        let e = write(&KitArgs {
            name: "operator".into(),
            dir: dir.clone(),
            out: other,
            coordinator: None,
            coordinator_name: None,
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("not of participant operator"), "{e:#}");
        let e = write(&KitArgs {
            name: "hospital-d".into(),
            dir,
            out,
            coordinator: None,
            coordinator_name: None,
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("must not exist"), "{e:#}");
    }

    #[test]
    fn the_reference_configuration_has_the_lines_the_kit_fills_in() {
        let text = participant_toml("x", Some(("10.0.0.1:7700", "10.0.0.1")), false).unwrap();
        assert!(text.contains("coordinator = \"10.0.0.1:7700\"") && !text.contains(REFERENCE_NAME), "{text}");
        assert_eq!(host_of("[::1]:7700").unwrap(), "::1");
        assert!(host_of("coord.example.org").is_err() && host_of(":7700").is_err());
    }
}
