//! The `[keystore]` and `[audit]` sections of both services' configuration files.
//!
//! ```toml
//! [keystore]
//! backend = "sealed"                        # the embedded default
//! # path = "/var/lib/hearth/bank-a/keystore.sealed"   # default: keystore.sealed in the node's directory
//! passphrase_env = "HEARTH_KEYSTORE_PASSPHRASE"       # default
//! # passphrase_file = "/run/secrets/hearth-keystore"  # wins over the environment variable when set
//!
//! # or, keys in a hardware token:
//! # backend = "pkcs11"
//! # module = "/usr/lib/softhsm/libsofthsm2.so"
//! # token_label = "hearth-bank-a"
//! # pin_env = "HEARTH_PKCS11_PIN"                     # default
//! # pin_file = "/run/secrets/hearth-pin"
//! ```
//!
//! Secrets never live in the TOML: there is no `passphrase` or `pin` key (an unknown key is an error), only
//! the name of an environment variable or of a file holding them.

use std::path::{Path, PathBuf};

use hearth_crypto::keystore::Argon2Params;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::NodeError;

/// Default environment variable holding the sealed keystore's passphrase.
pub const PASSPHRASE_ENV: &str = "HEARTH_KEYSTORE_PASSPHRASE";
/// Default environment variable holding the PKCS#11 user PIN.
pub const PIN_ENV: &str = "HEARTH_PKCS11_PIN";
/// File name of the sealed keystore inside a node's directory, unless `path` says otherwise.
pub const KEYSTORE_FILE: &str = "keystore.sealed";

/// A configuration value that parsed but is not acceptable, named by its dotted key
/// (`service.local.listen`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigProblem {
    /// The dotted key, from the top of the file.
    pub key: String,
    /// What is wrong with its value.
    pub problem: String,
}

impl ConfigProblem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { key: key.into(), problem: problem.into() }
    }
}

/// A configuration whose values are parsed by their types when the file is loaded (durations,
/// addresses), and checked here for what the types cannot state (ranges, combinations). The loader
/// calls [`CheckConfig::check`] once, before any service starts, and names the file with the key.
pub trait CheckConfig {
    /// The first value that is not acceptable.
    fn check(&self) -> Result<(), ConfigProblem>;
}

/// Where the node's keys live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A file sealed under a passphrase-derived key (Argon2id): the embedded default.
    Sealed,
    /// A PKCS#11 token (an HSM; SoftHSM2 for development). Under the national suite the SM keys are kept
    /// in a file sealed by a non-extractable AES key inside the token (see README, "National suite").
    Pkcs11,
}

/// The `[keystore]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeystoreConfig {
    /// `sealed` (default) or `pkcs11`.
    pub backend: Backend,
    /// The sealed keystore file (sealed backend, or PKCS#11 with the national suite). Default:
    /// `keystore.sealed` in the node's directory.
    pub path: Option<PathBuf>,
    /// Environment variable holding the passphrase (sealed backend).
    pub passphrase_env: String,
    /// A file holding the passphrase (first line); wins over `passphrase_env` when set.
    pub passphrase_file: Option<PathBuf>,
    /// Argon2id memory cost in KiB, used only when the keystore is created (stored in its header). At
    /// least 19456 (19 MiB).
    pub argon2_memory_kib: u32,
    /// Argon2id passes, used only at creation. At least 2.
    pub argon2_iterations: u32,
    /// The PKCS#11 module (backend `pkcs11`), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: Option<PathBuf>,
    /// The label the token was initialised with (backend `pkcs11`).
    pub token_label: Option<String>,
    /// Environment variable holding the token's user PIN.
    pub pin_env: String,
    /// A file holding the user PIN; wins over `pin_env` when set.
    pub pin_file: Option<PathBuf>,
}

impl Default for KeystoreConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Sealed,
            path: None,
            passphrase_env: PASSPHRASE_ENV.into(),
            passphrase_file: None,
            argon2_memory_kib: Argon2Params::RECOMMENDED.memory_kib(),
            argon2_iterations: Argon2Params::RECOMMENDED.iterations(),
            module: None,
            token_label: None,
            pin_env: PIN_ENV.into(),
            pin_file: None,
        }
    }
}

impl KeystoreConfig {
    /// What the types cannot state: the Argon2id floor, and that a token is named when one is used.
    pub fn check(&self) -> Result<(), ConfigProblem> {
        if let Err(e) = Argon2Params::new(self.argon2_memory_kib, self.argon2_iterations, 1) {
            return Err(ConfigProblem::new("keystore.argon2_memory_kib", e.to_string()));
        }
        if self.backend == Backend::Pkcs11 {
            if self.module.is_none() {
                return Err(ConfigProblem::new(
                    "keystore.module",
                    "backend = \"pkcs11\" needs the module's path",
                ));
            }
            if self.token_label.as_deref().is_none_or(str::is_empty) {
                return Err(ConfigProblem::new(
                    "keystore.token_label",
                    "backend = \"pkcs11\" needs the token's label",
                ));
            }
        }
        Ok(())
    }

    /// The sealed keystore file for a node whose directory is `node_dir`.
    pub fn sealed_path(&self, node_dir: &Path) -> PathBuf {
        self.path.clone().unwrap_or_else(|| node_dir.join(KEYSTORE_FILE))
    }

    /// The Argon2id parameters for a new keystore, checked against the floor.
    pub fn argon2(&self) -> Result<Argon2Params, NodeError> {
        Argon2Params::new(self.argon2_memory_kib, self.argon2_iterations, 1)
            .map_err(|e| NodeError::Config(format!("[keystore] argon2_memory_kib / argon2_iterations: {e}")))
    }

    /// The passphrase, from `passphrase_file` or else the `passphrase_env` variable.
    pub fn passphrase(&self) -> Result<Zeroizing<String>, NodeError> {
        read_secret(
            self.passphrase_file.as_deref(),
            &self.passphrase_env,
            "keystore passphrase",
            "passphrase_file",
        )
    }

    /// The PKCS#11 user PIN, from `pin_file` or else the `pin_env` variable.
    pub fn pin(&self) -> Result<Zeroizing<String>, NodeError> {
        read_secret(self.pin_file.as_deref(), &self.pin_env, "PKCS#11 user PIN", "pin_file")
    }
}

/// Reads a secret from `file` (its first line) or else from the environment variable `env`. An empty
/// value counts as missing. Errors name the variable and the file, never the value.
fn read_secret(
    file: Option<&Path>,
    env: &str,
    what: &'static str,
    file_key: &'static str,
) -> Result<Zeroizing<String>, NodeError> {
    if let Some(path) = file {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(NodeError::io(path))?);
        warn_if_readable_by_others(path);
        let first = text.lines().next().unwrap_or_default();
        if first.is_empty() {
            return Err(NodeError::Config(format!("{}: the {what} file is empty", path.display())));
        }
        return Ok(Zeroizing::new(first.to_string()));
    }
    match std::env::var(env) {
        Ok(v) if !v.is_empty() => Ok(Zeroizing::new(v)),
        _ => Err(NodeError::MissingSecret { what, env: env.to_string(), file_key }),
    }
}

/// Logs a warning when the secret file at `path` can be read by its group or others.
#[cfg(unix)]
pub fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "secret file is readable by group or others; chmod 600 it");
        }
    }
}

/// Logs a warning when the secret file at `path` can be read by its group or others.
#[cfg(not(unix))]
pub fn warn_if_readable_by_others(_: &Path) {}

/// The `[audit]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The log's origin (its name in checkpoints and the audit key's name), fixed when the log is
    /// created. Default: `hearth/<role>/<id>` from the node's certificate.
    pub origin: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_a_file_or_a_named_variable_and_errors_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut c =
            KeystoreConfig { passphrase_env: "HEARTH_TEST_NO_SUCH_VARIABLE_X".into(), ..Default::default() };
        let e = c.passphrase().unwrap_err().to_string();
        assert!(e.contains("HEARTH_TEST_NO_SUCH_VARIABLE_X") && e.contains("passphrase_file"), "{e}");
        let f = dir.path().join("pass");
        std::fs::write(&f, "correct horse\nignored\n").unwrap();
        c.passphrase_file = Some(f.clone());
        assert_eq!(c.passphrase().unwrap().as_str(), "correct horse");
        std::fs::write(&f, "\n").unwrap();
        assert!(c.passphrase().unwrap_err().to_string().contains("empty"));
        assert!(c.pin().is_err());
    }

    #[test]
    fn a_passphrase_key_in_the_configuration_is_refused() {
        let v = serde_json::json!({ "backend": "sealed", "passphrase": "hunter2" });
        let e = serde_json::from_value::<KeystoreConfig>(v).unwrap_err().to_string();
        assert!(e.contains("unknown field `passphrase`"), "{e}");
    }
}
