//! `hearth budget`: the data protection officer's privacy policy and the budgets it sets.

use std::path::PathBuf;

use anyhow::{bail, Context};
use hearth_crypto::SuiteId;
use hearth_proto::v1::privacy_client::PrivacyClient;
use hearth_proto::v1::{self};

use hearth_policies::budget::retirement_statement;

use crate::operator::Connection;

/// `hearth budget ...`
#[derive(Debug, clap::Subcommand)]
pub enum BudgetCommand {
    /// Per institution and family: epsilon spent, reserved and remaining, and what each job spent.
    #[command(
        after_help = "Examples:\n  hearth budget show --tls-dir pki\n  hearth budget show --tls-dir pki --as operator --json\n\nA participant certificate (--as bank-a) sees its own institution's lines only."
    )]
    Show {
        #[command(flatten)]
        conn: Connection,
        /// Certificate to authenticate with (NAME.pem / NAME.key in the TLS directory).
        #[arg(long = "as", default_value = "dpo")]
        cert: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// DPO: install a privacy policy (TOML), signed with the DPO certificate's key.
    #[command(
        after_help = "Example:\n  hearth budget set --policy privacy-policy.toml --tls-dir pki\n\nThe policy format is in policies/privacy-policy.example.toml. The file is signed with DIR/dpo.key;\nthe coordinator verifies the signature against the DPO certificate, keeps it with the policy and\naudits the change; setting the text in force again changes nothing. While a policy is in force,\nevery training job of the model families its private_model_families names (default: all) must be\ndifferentially private and fit the budgets of every institution it trains on, at the delta the\npolicy accounts its budget family at (delta_per_charge). `hearth budget retire` ends it."
    )]
    Set {
        #[command(flatten)]
        conn: Connection,
        /// The policy file.
        #[arg(long)]
        policy: PathBuf,
    },
    /// An institution's DPO: sign the institution's own privacy policy for its participant.
    #[command(
        after_help = "Example:\n  hearth budget sign --policy pki/bank-a/privacy-policy.toml --dpo pki/bank-a/dpo\n\nThe policy (the format of policies/privacy-policy.example.toml) names one tenant: the\ninstitution. It is signed with DPO.key, and written with DPO.pem as JSON (by default beside the\npolicy, as privacy-policy.json: where the participant looks unless its privacy_policy setting says\notherwise). The participant verifies the signature and that the signer is a DPO of its own\ninstitution, and reads the file at every use: a new policy applies from the next round or query.\nFamilies not listed may not use the institution's data; without a policy, the participant answers\nno differentially private round and no query."
    )]
    Sign {
        /// The institution's policy (TOML).
        #[arg(long)]
        policy: PathBuf,
        /// The DPO's certificate and key, without extension: DPO.pem and DPO.key.
        #[arg(long)]
        dpo: PathBuf,
        /// Where to write the signed policy (default: privacy-policy.json beside the policy).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// DPO: retire the policy in force (signed with the DPO certificate's key, like a policy). Jobs need not
    /// be differentially private any more; the ledger stays; the next `set` takes the next version.
    #[command(after_help = "Example:\n  hearth budget retire --tls-dir pki")]
    Retire {
        #[command(flatten)]
        conn: Connection,
    },
    /// The policy in force, with its version and who signed it.
    #[command(after_help = "Example:\n  hearth budget policy --tls-dir pki")]
    Policy {
        #[command(flatten)]
        conn: Connection,
        /// Certificate to authenticate with.
        #[arg(long = "as", default_value = "dpo")]
        cert: String,
    },
}

/// Signs `policy_toml` with the DPO's key (`dpo.key` in the connection's TLS directory) and installs it.
pub async fn install_policy(conn: &Connection, policy_toml: String) -> anyhow::Result<v1::PolicyInfo> {
    let tls = conn.tls_as("dpo")?;
    let secret = hearth_crypto::pki::p256_secret_from_pem(&tls.key_pem).context("the DPO's private key")?;
    let signature = SuiteId::International.suite().sign(&secret, policy_toml.as_bytes())?;
    let mut client = PrivacyClient::new(conn.channel_as("dpo").await?);
    Ok(client
        .set_policy(v1::SetPolicyRequest { policy_toml, signature: signature.into() })
        .await
        .context("installing the policy")?
        .into_inner())
}

/// Signs the institution policy at `policy` with the DPO certificate and key at `dpo` (`.pem`, `.key`)
/// and writes it to `out`.
pub fn sign_institution_policy(
    policy: &std::path::Path,
    dpo: &std::path::Path,
    out: &std::path::Path,
) -> anyhow::Result<hearth_participant::privacy::SignedPolicy> {
    let text = std::fs::read_to_string(policy).with_context(|| format!("reading {}", policy.display()))?;
    let (cert, key) = (dpo.with_extension("pem"), dpo.with_extension("key"));
    let cert_pem = std::fs::read_to_string(&cert).with_context(|| format!("reading {}", cert.display()))?;
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?,
    );
    let signed = hearth_participant::privacy::SignedPolicy::sign(text, &cert_pem, &key_pem)
        .with_context(|| format!("signing {}", policy.display()))?;
    let json = serde_json::to_vec_pretty(&signed)?;
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(signed)
}

pub async fn run(cmd: BudgetCommand) -> anyhow::Result<()> {
    match cmd {
        BudgetCommand::Show { conn, cert, json } => {
            let mut client = PrivacyClient::new(conn.channel_as(&cert).await?);
            let report =
                client.get_budget(v1::GetBudgetRequest {}).await.context("reading the budgets")?.into_inner();
            if json {
                println!("{}", report.report_json);
            } else {
                print!("{}", report.table);
            }
            Ok(())
        }
        BudgetCommand::Set { conn, policy } => {
            let text =
                std::fs::read_to_string(&policy).with_context(|| format!("reading {}", policy.display()))?;
            // Check it here too, so a mistake is reported with the file's name before anything is sent.
            hearth_policies::budget::PrivacyPolicy::from_toml(&text)
                .with_context(|| format!("{} is not a valid privacy policy", policy.display()))?;
            let info = install_policy(&conn, text).await?;
            let what = if info.unchanged { "unchanged: this text is already" } else { "now" };
            eprintln!(
                "policy version {} {what} in force (sha256 {}), signed by {}",
                info.version,
                hex::encode(&info.sha256),
                info.set_by
            );
            Ok(())
        }
        BudgetCommand::Retire { conn } => {
            let mut client = PrivacyClient::new(conn.channel_as("dpo").await?);
            let current =
                client.get_policy(v1::GetPolicyRequest {}).await.context("reading the policy")?.into_inner();
            if current.version == 0 || current.retired || current.policy_toml.is_empty() {
                bail!("no privacy policy is in force: nothing to retire");
            }
            let sha256: [u8; 32] = current
                .sha256
                .as_ref()
                .try_into()
                .context("the coordinator sent a malformed policy digest")?;
            let statement = retirement_statement(current.version, &sha256);
            let tls = conn.tls_as("dpo")?;
            let secret =
                hearth_crypto::pki::p256_secret_from_pem(&tls.key_pem).context("the DPO's private key")?;
            let signature = SuiteId::International.suite().sign(&secret, statement.as_bytes())?;
            let info = client
                .retire_policy(v1::RetirePolicyRequest {
                    version: current.version,
                    signature: signature.into(),
                })
                .await
                .context("retiring the policy")?
                .into_inner();
            eprintln!(
                "policy version {} retired: training jobs need not be differentially private; the ledger stays \
                 (`hearth budget show`)",
                info.version
            );
            Ok(())
        }
        BudgetCommand::Sign { policy, dpo, out } => {
            let out =
                out.unwrap_or_else(|| policy.with_file_name(hearth_participant::privacy::SIGNED_POLICY_FILE));
            let signed = sign_institution_policy(&policy, &dpo, &out)?;
            let cert = hearth_crypto::pki::cert_der_from_pem(&signed.signer_certificate_pem)
                .and_then(|der| hearth_crypto::pki::identity_from_cert_der(&der))?;
            eprintln!(
                "{} signed by {cert}; the participant reads it at its next round or query",
                out.display()
            );
            Ok(())
        }
        BudgetCommand::Policy { conn, cert } => {
            let mut client = PrivacyClient::new(conn.channel_as(&cert).await?);
            let info =
                client.get_policy(v1::GetPolicyRequest {}).await.context("reading the policy")?.into_inner();
            if info.version == 0 {
                bail!("no privacy policy is in force");
            }
            eprintln!(
                "version {} sha256 {} set by {} at {} ms",
                info.version,
                hex::encode(&info.sha256),
                info.set_by,
                info.set_unix_ms
            );
            print!("{}", info.policy_toml);
            Ok(())
        }
    }
}
