//! `hearth members`: the consortium's member list, signed by the institutions themselves. Participants
//! accept as secure-aggregation roster members only the certificates on it (see
//! `hearth_participant::membership`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use hearth_crypto::digest::content_digest;
use hearth_participant::membership::{Member, MemberList, SignedMembers, MEMBERS_FILE};

/// `hearth members ...`
#[derive(Debug, clap::Subcommand)]
pub enum MembersCommand {
    /// Write a member list (TOML) naming the participants whose certificates are given.
    #[command(
        after_help = "Example:\n  hearth members list --version 2 --threshold 2 pki/bank-a.pem pki/airline-b.pem pki/shop-c.pem > members.toml\n\nEach member is its certificate's participant id and the SHA-256 of the certificate: a\ncertificate the CA issues for another name, or again for a listed name, is on no list. Every\nmember then signs it with `hearth members sign`."
    )]
    List {
        /// The list's version: one more than the version in force.
        #[arg(long)]
        version: u64,
        /// Signatures of members of the list in force that the next version will need.
        #[arg(long)]
        threshold: u32,
        /// The members' participant certificates (PEM).
        #[arg(required = true)]
        certificates: Vec<PathBuf>,
    },
    /// A member signs the member list with its participant key.
    #[command(
        after_help = "Example:\n  hearth members sign --list members.toml --as pki/bank-a\n\nAdds the signature of pki/bank-a.pem / pki/bank-a.key to members.json beside the list (or --out);\nsignatures of the same list already there are kept. A participant reads members.json from beside\nits CA certificate (its `members` setting), pins the first list signed by its threshold of its own\nmembers, and accepts a new version only if that many members of the pinned list signed it."
    )]
    Sign {
        /// The member list (TOML).
        #[arg(long)]
        list: PathBuf,
        /// The signing member's certificate and key, without extension: MEMBER.pem and MEMBER.key.
        #[arg(long = "as")]
        member: PathBuf,
        /// The signed list to add the signature to (default: members.json beside the list).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show a signed member list and which members' signatures verify.
    #[command(after_help = "Example:\n  hearth members show --file pki/members.json --ca pki/ca.pem")]
    Show {
        /// The signed list.
        #[arg(long)]
        file: PathBuf,
        /// The consortium CA certificate.
        #[arg(long)]
        ca: PathBuf,
    },
}

/// The member list of `certificates` (participant certificates, PEM files).
pub fn list_of(version: u64, threshold: u32, certificates: &[PathBuf]) -> anyhow::Result<MemberList> {
    let mut members = Vec::new();
    for path in certificates {
        let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let der =
            hearth_crypto::pki::cert_der_from_pem(&pem).with_context(|| format!("{}", path.display()))?;
        let id = hearth_crypto::pki::identity_from_cert_der(&der)
            .with_context(|| format!("{}", path.display()))?;
        if id.role != hearth_crypto::pki::Role::Participant {
            bail!("{}: {id} is not a participant's certificate", path.display());
        }
        members.push(Member { id: id.id, certificate_sha256: hex::encode(content_digest(&der)) });
    }
    let list = MemberList { version, threshold, members };
    MemberList::from_toml(&list.to_toml()?)?;
    Ok(list)
}

/// Adds the signature of `member` (`.pem`, `.key`) over the list at `list` to the signed list at `out`.
pub fn sign(list: &Path, member: &Path, out: &Path) -> anyhow::Result<SignedMembers> {
    let text = std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
    MemberList::from_toml(&text).with_context(|| format!("{}", list.display()))?;
    let mut signed = match SignedMembers::read(out) {
        Ok(existing) if existing.list_toml == text => existing,
        _ => SignedMembers { list_toml: text, signatures: Vec::new() },
    };
    let (cert, key) = (member.with_extension("pem"), member.with_extension("key"));
    let cert_pem = std::fs::read_to_string(&cert).with_context(|| format!("reading {}", cert.display()))?;
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?,
    );
    signed.sign(&cert_pem, &key_pem)?;
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&signed)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(signed)
}

pub fn run(cmd: MembersCommand) -> anyhow::Result<()> {
    match cmd {
        MembersCommand::List { version, threshold, certificates } => {
            print!("{}", list_of(version, threshold, &certificates)?.to_toml()?);
            Ok(())
        }
        MembersCommand::Sign { list, member, out } => {
            let out = out.unwrap_or_else(|| list.with_file_name(MEMBERS_FILE));
            let signed = sign(&list, &member, &out)?;
            eprintln!("{}: {} signatures", out.display(), signed.signatures.len());
            Ok(())
        }
        MembersCommand::Show { file, ca } => {
            let ca_pem = std::fs::read_to_string(&ca).with_context(|| format!("reading {}", ca.display()))?;
            let ca_der = hearth_crypto::pki::cert_der_from_pem(&ca_pem)?;
            let (list, signers) = SignedMembers::read(&file)?.verify(&ca_der)?;
            println!(
                "version {}, threshold {}, {} members",
                list.version,
                list.threshold,
                list.members.len()
            );
            for m in &list.members {
                let signed = signers.iter().any(|(id, der)| *id == m.id && list.admits(id, der));
                println!(
                    "  {:<24} {}  {}",
                    m.id,
                    &m.certificate_sha256[..16],
                    if signed { "signed" } else { "-" }
                );
            }
            Ok(())
        }
    }
}
