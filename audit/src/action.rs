//! The actions Hearth's nodes record, as one enum: a service names an [`Action`], never a string, so a
//! typo cannot start a new kind of entry and every kind is listed here with what it means. In an entry
//! the action is its dotted lower-case name ([`Action::as_str`]); an auditor's tools read entries back as
//! strings, so a log written by a newer version with actions this one does not know still verifies.

use std::fmt;
use std::str::FromStr;

macro_rules! actions {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// What happened, as a node records it.
        #[non_exhaustive]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Action {
            $($(#[$doc])* $variant,)*
        }

        impl Action {
            /// Every action, in the order declared.
            pub const ALL: &'static [Action] = &[$(Action::$variant,)*];

            /// The dotted lower-case name written in entries.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }
        }
    };
}

actions! {
    /// A service started.
    NodeStart => "node.start",
    /// A node directory was opened (its keystore and log), by a service or a command.
    NodeOpen => "node.open",
    /// A service stopped.
    NodeStop => "node.stop",
    /// A key was generated in the keystore.
    KeyGenerated => "key.generated",
    /// A key was rotated (a new current version).
    KeyRotated => "key.rotated",
    /// An old version of a key-encryption key was destroyed, after nothing was sealed under it any more.
    KeyRetired => "key.retired",
    /// Stored objects were moved from older key-encryption key versions to the current one.
    KeyRewrap => "key.rewrap",
    /// A partly written entry was cut from the log after a crash.
    AuditRecover => "audit.recover",
    /// A TLS connection was refused (no or bad client certificate).
    ConnectionRefused => "connection.refused",
    /// A participant registered with the coordinator.
    ParticipantRegister => "participant.register",
    /// A participant subscribed to the coordinator's announcements.
    ParticipantSubscribe => "participant.subscribe",
    /// A global model was downloaded.
    ModelDownload => "model.download",
    /// A model update was uploaded (plain rounds), or a participant sent its update.
    UpdateUpload => "update.upload",
    /// A round's model was evaluated by federated evaluation (coordinator: the sums; participant: its
    /// counts sent masked, or refused).
    ModelEvaluate => "model.evaluate",
    /// A secure-aggregation message was sent to the coordinator.
    SecAggSend => "secagg.send",
    /// A secure-aggregation message was refused by the coordinator.
    SecAggMessage => "secagg.message",
    /// A participant was left out of a secure-aggregation cohort.
    SecAggCohort => "secagg.cohort",
    /// A training job was submitted.
    JobSubmit => "job.submit",
    /// A running job was resumed after a restart, or an ended one by an operator.
    JobResume => "job.resume",
    /// An operator cancelled a running job.
    JobCancel => "job.cancel",
    /// A job's events were watched.
    JobWatch => "job.watch",
    /// A job ended (finished or failed).
    JobEnd => "job.end",
    /// The coordinator's status was read.
    Status => "status",
    /// A round committed a new global model.
    RoundCommit => "round.commit",
    /// A round failed and will be retried or end the job.
    RoundFail => "round.fail",
    /// A DPO set the privacy policy.
    BudgetPolicySet => "budget.policy_set",
    /// The privacy policy was read.
    BudgetPolicyGet => "budget.policy_get",
    /// The budget ledger was read.
    BudgetShow => "budget.show",
    /// A job or query reserved its worst-case privacy cost.
    BudgetReserve => "budget.reserve",
    /// A committed round was charged to the budget.
    BudgetCharge => "budget.charge",
    /// A job's reservation was settled or released at its end.
    BudgetSettle => "budget.settle",
    /// A federated analytics query ran (coordinator).
    QueryRun => "query.run",
    /// A participant answered an analytics query.
    QueryAnswer => "query.answer",
    /// A participant put a newly committed model in service.
    ModelInstall => "model.install",
    /// A caller of the inference endpoints was refused.
    InferenceCall => "inference.call",
    /// An inference replica fetched the model its participant serves, or was refused.
    ModelFetch => "model.fetch",
    /// A caller of the desk's endpoints was refused.
    ServiceCall => "service.call",
    /// A customer was erased (recorded under a keyed reference, never the id).
    CustomerErase => "customer.erase",
    /// The desk's rules file was reloaded, or refused.
    RulesReload => "rules.reload",
    /// A workflow step called its webhook.
    WorkflowStep => "workflow.step",
    /// The retention job purged expired data.
    RetentionPurge => "retention.purge",
    /// Data was imported into a participant's store.
    DataImport => "data.import",
    /// Data was deleted from a participant's store.
    DataDelete => "data.delete",
    /// A witness cosigned (or refused to cosign) another log's checkpoint.
    WitnessCosign => "witness.cosign",
    /// A participant joined (or refused) a round or query the coordinator announced, after checking it
    /// against its own floors, its institution's signed privacy policy and what it contributed before.
    RoundJoin => "round.join",
    /// A participant declined a round or query it was invited to; the coordinator records its reason.
    RoundDecline => "round.decline",
    /// A participant charged a release of its data to its institution's own ledger (or refused to).
    LocalCharge => "budget.local_charge",
    /// The consortium CA issued a certificate (the CA's issuance log; object: the certificate's SHA-256,
    /// detail: its role, id and institution).
    CertIssue => "cert.issue",
    /// The consortium CA revoked a certificate (the CA's issuance log; object: the certificate's serial
    /// number in hex, detail: the reason, and its identity and SHA-256 when known).
    CertRevoke => "cert.revoke",
    /// A node took a newer revocation list signed by the consortium CA (object: its CRL number; detail:
    /// where from and how many certificates it revokes), or refused one.
    RevocationsUpdate => "revocations.update",
    /// A peer was refused because the consortium CA revoked its certificate.
    CertRevoked => "cert.revoked",
    /// A participant left a secure round it had joined because a protocol message the coordinator relayed
    /// failed its checks (an altered seed commitment, a forged signature, a survivor set below the floor);
    /// nothing more of its input left.
    RoundAbandon => "round.abandon",
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of Hearth's [`Action`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit action {0:?}")]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL.iter().copied().find(|a| a.as_str() == s).ok_or_else(|| UnknownAction(s.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_a_distinct_well_formed_name_that_parses_back() {
        let mut names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(*a));
            assert!(crate::entry::check_action(a.as_str()).is_ok(), "{a}");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len(), "two actions share a name");
        assert!("job.sumbit".parse::<Action>().is_err());
    }
}
