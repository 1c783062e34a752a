//! The gRPC `Privacy` service: the DPO sets the policy (signed, audited); DPOs, operators and analysts
//! read it and the budgets; a participant reads its own institution's budget lines.

use std::sync::Arc;

use hearth_audit::{Action, Outcome};
use hearth_crypto::pki::{NodeIdentity, Role};
use hearth_crypto::SuiteId;
use hearth_proto::v1::privacy_server::Privacy as PrivacyApi;
use hearth_proto::v1::{self};
use tonic::{Request, Response, Status};

use crate::driver::Shared;
use crate::privacy::{PrivacyError, StoredPolicy, MAX_POLICY_BYTES};

/// The service object.
#[derive(Debug, Clone)]
pub(crate) struct PrivacyService {
    shared: Arc<Shared>,
}

impl PrivacyService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn require<T>(&self, req: &Request<T>, action: Action, roles: &[Role]) -> Result<NodeIdentity, Status> {
        self.shared.require(req, action, roles)
    }

    /// Checks that `signature` over `message` (described by `what`) verifies with the key of the DPO
    /// certificate `cert`, which must verify under the CA; the error says which failed.
    fn dpo_signed(
        &self,
        cert: &[u8],
        what: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), DpoSignature> {
        let peer = self
            .shared
            .verified
            .verify(&self.shared.ca_der, cert, std::time::SystemTime::now())
            .map_err(|e| DpoSignature::Certificate(e.to_string()))?;
        SuiteId::International
            .suite()
            .verify(&peer.tls_public_key, message, signature)
            .map_err(|_| DpoSignature::Mismatch(what.to_string()))
    }
}

/// Why a DPO's signed request was refused.
#[derive(Debug, thiserror::Error)]
enum DpoSignature {
    #[error("DPO certificate: {0}")]
    Certificate(String),
    #[error("the signature over {0} does not verify with the DPO certificate's key")]
    Mismatch(String),
}

fn info(p: Option<StoredPolicy>) -> v1::PolicyInfo {
    match p {
        None => v1::PolicyInfo::default(),
        Some(p) => v1::PolicyInfo {
            policy_toml: p.toml,
            version: p.version,
            sha256: p.sha256.to_vec().into(),
            set_by: p.set_by,
            set_unix_ms: p.set_unix_ms,
            signature: p.signature.into(),
            signer_certificate_der: p.signer_certificate_der.into(),
            unchanged: false,
            retired: p.retired.is_some(),
        },
    }
}

#[tonic::async_trait]
impl PrivacyApi for PrivacyService {
    async fn set_policy(
        &self,
        req: Request<v1::SetPolicyRequest>,
    ) -> Result<Response<v1::PolicyInfo>, Status> {
        let who = self.require(&req, Action::BudgetPolicySet, &[Role::Dpo])?;
        let cert = hearth_transport::peer_certificate(&req)?;
        let msg = req.into_inner();
        let refuse = |detail: String| {
            self.shared.audit.record(&who.to_string(), Action::BudgetPolicySet, Outcome::Refused, &detail);
            Status::invalid_argument(detail)
        };
        if msg.policy_toml.len() > MAX_POLICY_BYTES {
            return Err(refuse(format!(
                "policy of {} bytes is over the limit of {MAX_POLICY_BYTES}",
                msg.policy_toml.len()
            )));
        }
        // The DPO signs the policy text with their certificate's key: the change is theirs, whoever relays it.
        self.dpo_signed(&cert, "the policy", msg.policy_toml.as_bytes(), &msg.signature)
            .map_err(|e| refuse(e.to_string()))?;
        let privacy = Arc::clone(&self.shared);
        let (toml, signature, by) = (msg.policy_toml, msg.signature.to_vec(), who.to_string());
        let stored = tokio::task::spawn_blocking(move || {
            privacy.privacy.set_policy(toml, by, signature, cert.to_vec())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| match e {
            PrivacyError::Store(e) => Status::internal(format!("could not persist the policy: {e}")),
            other => refuse(format!("policy refused: {other}")),
        })?;
        let (stored, new) = stored;
        let what = if new { "set" } else { "set again unchanged: no new version" };
        self.shared.audit.record(
            &who.to_string(),
            Action::BudgetPolicySet,
            Outcome::Ok,
            &format!(
                "version {} sha256 {} {what} (signed by the DPO certificate)",
                stored.version,
                hex::encode(stored.sha256)
            ),
        );
        tracing::info!(version = stored.version, by = %who, new, "privacy policy set");
        let mut answer = info(Some(stored));
        answer.unchanged = !new;
        Ok(Response::new(answer))
    }

    async fn retire_policy(
        &self,
        req: Request<v1::RetirePolicyRequest>,
    ) -> Result<Response<v1::PolicyInfo>, Status> {
        let who = self.require(&req, Action::BudgetPolicySet, &[Role::Dpo])?;
        let cert = hearth_transport::peer_certificate(&req)?;
        let msg = req.into_inner();
        let refuse = |detail: String| {
            self.shared.audit.record(&who.to_string(), Action::BudgetPolicySet, Outcome::Refused, &detail);
            Status::failed_precondition(detail)
        };
        let Some(current) = self.shared.privacy.policy() else {
            return Err(refuse("retiring: no privacy policy is in force".into()));
        };
        if current.version != msg.version {
            return Err(refuse(format!(
                "retiring version {}: the policy in force is version {}",
                msg.version, current.version
            )));
        }
        let statement = hearth_policies::budget::retirement_statement(current.version, &current.sha256);
        self.dpo_signed(&cert, &format!("{statement:?}"), statement.as_bytes(), &msg.signature)
            .map_err(|e| refuse(e.to_string()))?;
        let privacy = Arc::clone(&self.shared);
        let by = who.to_string();
        let retired = tokio::task::spawn_blocking(move || privacy.privacy.retire_policy(msg.version, by))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| match e {
                PrivacyError::Store(e) => Status::internal(format!("could not persist the retirement: {e}")),
                other => refuse(format!("retiring: {other}")),
            })?;
        self.shared.audit.record(
            &who.to_string(),
            Action::BudgetPolicySet,
            Outcome::Ok,
            &format!(
                "version {} sha256 {} retired (signed by the DPO certificate): jobs need not be private; the \
                 ledger stays",
                retired.version,
                hex::encode(retired.sha256)
            ),
        );
        tracing::info!(version = retired.version, by = %who, "privacy policy retired");
        Ok(Response::new(info(Some(retired))))
    }

    async fn get_policy(
        &self,
        req: Request<v1::GetPolicyRequest>,
    ) -> Result<Response<v1::PolicyInfo>, Status> {
        self.require(&req, Action::BudgetPolicyGet, &[Role::Dpo, Role::Operator, Role::Analyst])?;
        Ok(Response::new(info(self.shared.privacy.policy())))
    }

    async fn get_budget(
        &self,
        req: Request<v1::GetBudgetRequest>,
    ) -> Result<Response<v1::BudgetReport>, Status> {
        let who = self.require(
            &req,
            Action::BudgetShow,
            &[Role::Dpo, Role::Operator, Role::Analyst, Role::Participant],
        )?;
        let Some(mut report) = self.shared.privacy.report() else {
            return Err(Status::failed_precondition(
                "no privacy policy is in force; a DPO sets one with `hearth budget set`",
            ));
        };
        // An institution sees its own lines only.
        if who.role == Role::Participant {
            report.families.retain(|f| f.tenant.0 == who.id);
        }
        let report_json = serde_json::to_string(&report).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(v1::BudgetReport { report_json, table: report.to_string() }))
    }
}
