//! The desk's errors: each names what was wrong, and where (the file, the rule, the setting), so that an
//! admin can act on the message alone.

use std::path::PathBuf;

/// Why the desk could not open.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    /// The rules file is missing something, unreadable or invalid.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The desk's store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The webhook signing secret file is unreadable or not a secret.
    #[error("webhook_secret_file {path}: {reason}")]
    WebhookSecret {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: SecretError,
    },
    /// The CA file `https://` webhooks are checked against is unreadable or holds no certificate.
    #[error("webhook_ca_file {path}: {reason}")]
    WebhookCa {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: CaError,
    },
}

/// Why a file of CA certificates for `https://` webhooks was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    /// The file could not be read.
    #[error("the file cannot be read: {0}")]
    Unreadable(String),
    /// The file holds no PEM certificate (or none a TLS client can use).
    #[error("it holds no PEM certificate (-----BEGIN CERTIFICATE-----) that can serve as a root")]
    NoCertificates,
}

/// Why the webhook signing secret was refused. No variant shows any of the secret.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("the file cannot be read: {0}")]
    Unreadable(String),
    /// No `whsec_` prefix.
    #[error("the secret must start with whsec_ (then the base64 of 24 to 64 random bytes)")]
    Prefix,
    /// What follows the prefix is not base64.
    #[error("what follows whsec_ is not valid base64")]
    Base64,
    /// The decoded secret is too short or too long.
    #[error("the secret is {0} bytes; it must be 24 to 64")]
    Length(usize),
}

/// Why the desk's store (`service.redb`) failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The embedded database failed while `doing` something (a full disk, a damaged file).
    #[error("service store: {doing}: {message}")]
    Database {
        /// What the store was doing.
        doing: &'static str,
        /// The database's error.
        message: String,
    },
    /// A stored record could not be opened (a wrong key-encryption key, a damaged record).
    #[error("service store: {what} {id}: {message}")]
    Record {
        /// `customer row` or `workflow run`.
        what: &'static str,
        /// The row's key (a keyed hash, never a customer identifier) or the run id.
        id: String,
        /// What was wrong with it.
        message: String,
    },
    /// A record could not be encoded or sealed under the key-encryption key (the keystore failed).
    #[error("service store: sealing a {what}: {message}")]
    Seal {
        /// `customer record` or `workflow run`.
        what: &'static str,
        /// The keystore's error.
        message: String,
    },
    /// The writer thread is gone (the process is stopping, or it could not start).
    #[error("service store: the writer thread stopped")]
    WriterStopped,
}

impl StoreError {
    /// A failure to encode or seal a `what`.
    pub(crate) fn seal<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Self {
        move |e| StoreError::Seal { what, message: e.to_string() }
    }

    /// A database error while `doing` something.
    pub(crate) fn db<E: std::fmt::Display>(doing: &'static str) -> impl FnOnce(E) -> Self {
        move |e| StoreError::Database { doing, message: e.to_string() }
    }
}

/// Why a rules file was refused (the rules already serving stay).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read or written.
    #[error("{doing} {}: {source}", path.display())]
    Io {
        /// `reading`, `writing` or `creating`.
        doing: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file has an error.
    #[error("{}: {problem}", path.display())]
    Invalid {
        /// The rules file.
        path: PathBuf,
        /// What is wrong, and where in the file.
        problem: RuleProblem,
    },
}

/// What is wrong in a rules file, naming the line or the rule and field.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleProblem {
    /// TOML syntax, an unknown field or a value of the wrong type; the parser's message names the line.
    #[error("{0}")]
    Syntax(String),
    /// A rule's or step's field is wrong.
    #[error("{at}: {fault}")]
    Field {
        /// `rule #3 ("gold-tier")`, `workflows.compensation.steps #2 ("credit")`.
        at: String,
        /// What is wrong with it.
        fault: FieldFault,
    },
    /// A workflow without steps.
    #[error("workflows.{0}: a workflow needs at least one step")]
    NoSteps(String),
}

/// What is wrong with one field of a rule or a workflow step.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldFault {
    /// An empty or repeated rule name.
    #[error("name must be non-empty and unique")]
    RuleName,
    /// An empty, repeated or ill-formed step name (it goes into the calls' `Idempotency-Key` header).
    #[error("name must be unique in the workflow, 1 to 64 of A-Z a-z 0-9 . _ -")]
    StepName,
    /// `then.reply` names a template that `[templates]` lacks.
    #[error("then.reply names template {0:?}, which [templates] lacks")]
    MissingTemplate(String),
    /// `then.workflow` names a workflow that `[workflows]` lacks.
    #[error("then.workflow names {0:?}, which [workflows] lacks")]
    MissingWorkflow(String),
    /// `when.channel` names an unknown channel.
    #[error("when.channel {given:?} is not one of {known}")]
    UnknownChannel {
        /// The channel named.
        given: String,
        /// The channels there are.
        known: String,
    },
    /// `when.min_confidence` outside 0..=1.
    #[error("when.min_confidence must be between 0 and 1")]
    Confidence,
    /// A step with `path` but the file has no `webhook_base`.
    #[error("path needs webhook_base at the top")]
    PathWithoutBase,
    /// A step with both or neither of `url` and `path`.
    #[error("give exactly one of url or path")]
    UrlOrPath,
    /// The step's webhook URL.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// `timeout_ms` outside 1..=120000.
    #[error("timeout_ms must be 1 to 120000")]
    Timeout,
    /// `retries` over 20.
    #[error("retries must be at most 20")]
    Retries,
    /// `backoff_ms` over 30000.
    #[error("backoff_ms must be at most 30000")]
    Backoff,
}

/// Why a webhook URL was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL.
    #[error("url {url:?}: {message}")]
    Malformed {
        /// The URL given.
        url: String,
        /// The parser's message.
        message: String,
    },
    /// Neither `http://` nor `https://`.
    #[error("url {0:?}: webhooks are http:// or https:// (see README, Workflows)")]
    Scheme(String),
    /// No host.
    #[error("url {0:?}: no host")]
    NoHost(String),
}

/// Why the loopback API-key listener (`[service.local]`) cannot start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// `listen` is not a loopback address.
    #[error(
        "[service.local] listen {0} is not a loopback address; the plain-HTTP listener serves only the \
         participant's own host (use the mTLS port from elsewhere)"
    )]
    NotLoopback(std::net::SocketAddr),
    /// `api_key_file` cannot be read.
    #[error("[service.local] api_key_file {}: {source}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Neither the file nor the variable holds a key.
    #[error("[service.local] listen is set but no API key: set ${0} or api_key_file")]
    NoKey(String),
    /// The key is too short.
    #[error("[service.local] the API key must have at least {0} characters")]
    ShortKey(usize),
}

impl From<StoreError> for hearth_inference::ApiError {
    /// A store failure answers 500; the detail goes to the log, never to the caller.
    fn from(e: StoreError) -> Self {
        hearth_inference::ApiError::Internal(e.to_string())
    }
}
