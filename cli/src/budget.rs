//! `hearth budget`: the data protection officer's privacy policy and the budgets it sets.

use std::path::PathBuf;

use anyhow::{bail, Context};
use hearth_crypto::SuiteId;
use hearth_proto::v1::privacy_client::PrivacyClient;
use hearth_proto::v1::{self};

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
        after_help = "Example:\n  hearth budget set --policy privacy-policy.toml --tls-dir pki\n\nThe policy format is in policies/privacy-policy.example.toml. The file is signed with DIR/dpo.key;\nthe coordinator verifies the signature against the DPO certificate, keeps it with the policy and\naudits the change. While a policy is in force, every training job must be differentially private\nand fit the budgets of every institution it trains on."
    )]
    Set {
        #[command(flatten)]
        conn: Connection,
        /// The policy file.
        #[arg(long)]
        policy: PathBuf,
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
            eprintln!(
                "policy version {} in force (sha256 {}), signed by {}",
                info.version,
                hex::encode(&info.sha256),
                info.set_by
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
