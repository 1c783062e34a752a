//! Configuration loading shared by every subcommand: defaults, then a TOML file, then environment
//! variables, each layer overriding the one before; then every value is parsed by its type (durations,
//! addresses) and checked ([`CheckConfig`]) once, before anything starts.
//!
//! An environment variable `PREFIX__A__B=value` sets field `b` of table `a`; `value` is read as a TOML
//! value when it parses as one (`7700`, `true`, `0.5`) and as a string otherwise, and as a string again
//! when the field wants one (`HEARTH_PARTICIPANT__SERVICE__DEFAULT_COUNTRY_CODE=86`).
//!
//! Every error names where the bad value came from, the file or the variable, and its key.

use std::path::Path;

use anyhow::{bail, Context};
use hearth_node::config::CheckConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Loads a `T` from defaults, `file` (if given) and the environment variables starting with `prefix__`.
pub fn load<T: Serialize + DeserializeOwned + Default + CheckConfig>(
    file: Option<&Path>,
    prefix: &str,
) -> anyhow::Result<T> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    load_with_env(file, prefix, &vars)
}

/// An environment variable that set a value.
struct EnvValue<'a> {
    name: &'a str,
    raw: &'a str,
    /// The dotted key it sets (`service.default_country_code`).
    key: String,
    path: Vec<String>,
    /// Whether it was given to the field as the string it is, rather than as the TOML value it parses as.
    as_string: bool,
}

/// Where the value at `key` came from: the last layer that set it or a table holding it.
fn source_of(key: &str, env: &[EnvValue<'_>], file: Option<&Path>) -> String {
    let within =
        |set: &str| key == set || key.starts_with(&format!("{set}.")) || set.starts_with(&format!("{key}."));
    match env.iter().rev().find(|v| within(&v.key)) {
        Some(v) => format!("environment variable {}", v.name),
        None => file.map_or_else(|| "the defaults".to_string(), |p| p.display().to_string()),
    }
}

/// [`load`] with the environment given explicitly (for tests).
pub fn load_with_env<T: Serialize + DeserializeOwned + Default + CheckConfig>(
    file: Option<&Path>,
    prefix: &str,
    vars: &[(String, String)],
) -> anyhow::Result<T> {
    let mut value = toml::Value::try_from(T::default()).context("encoding default configuration")?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file_value: toml::Value =
            toml::from_str(&text).with_context(|| format!("parsing {} as TOML", path.display()))?;
        merge(&mut value, file_value);
    }
    let head = format!("{prefix}__");
    let mut env = Vec::new();
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix(&head) else { continue };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            bail!("environment variable {name}: empty path segment");
        }
        let scalar = parse_scalar(raw);
        let as_string = matches!(scalar, toml::Value::String(_));
        set_path(&mut value, &path, scalar).with_context(|| format!("environment variable {name}"))?;
        env.push(EnvValue { name, raw, key: path.join("."), path, as_string });
    }
    let config: T = loop {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(config) => break config,
            Err(e) => {
                let key = e.path().to_string();
                // A variable read as a number or a boolean where the field wants text: give it as text.
                if let Some(v) = env.iter_mut().rev().find(|v| v.key == key && !v.as_string) {
                    v.as_string = true;
                    set_path(&mut value, &v.path, toml::Value::String(v.raw.to_string()))?;
                    continue;
                }
                let inner = e.into_inner().to_string();
                // toml ends its message with "in `key`", which the error already names.
                let message = inner.lines().filter(|l| !l.starts_with("in `")).collect::<Vec<_>>().join(" ");
                bail!("invalid configuration: {}: {key}: {message}", source_of(&key, &env, file));
            }
        }
    };
    if let Err(p) = config.check() {
        bail!("invalid configuration: {}: {}: {}", source_of(&p.key, &env, file), p.key, p.problem);
    }
    Ok(config)
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn set_path(value: &mut toml::Value, path: &[String], v: toml::Value) -> anyhow::Result<()> {
    let Some((last, parents)) = path.split_last() else { bail!("empty path") };
    let mut cur = value;
    for p in parents {
        let toml::Value::Table(t) = cur else { bail!("{p} is not a table") };
        cur = t.entry(p.clone()).or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let toml::Value::Table(t) = cur else { bail!("{last}: parent is not a table") };
    t.insert(last.clone(), v);
    Ok(())
}

fn parse_scalar(raw: &str) -> toml::Value {
    #[derive(serde::Deserialize)]
    struct Probe {
        v: toml::Value,
    }
    match toml::from_str::<Probe>(&format!("v = {raw}")) {
        Ok(p) if !matches!(p.v, toml::Value::Table(_)) => p.v,
        _ => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use hearth_coordinator::CoordinatorConfig;
    use hearth_participant::ParticipantConfig;

    use super::*;

    #[test]
    fn file_then_environment_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:9000\"\n[policy]\nmax_rounds = 5\n").unwrap();
        let env = vec![
            ("HEARTH_COORDINATOR__POLICY__MIN_PARTICIPANTS_FLOOR".to_string(), "3".to_string()),
            ("HEARTH_COORDINATOR__STATE_DIR".to_string(), "/var/lib/hearth".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c: CoordinatorConfig = load_with_env(Some(&file), "HEARTH_COORDINATOR", &env).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.policy.max_rounds, 5);
        assert_eq!(c.policy.min_participants_floor, 3);
        assert_eq!(c.state_dir, std::path::PathBuf::from("/var/lib/hearth"));
        assert_eq!(c.max_concurrent_uploads, CoordinatorConfig::default().max_concurrent_uploads);
    }

    #[test]
    fn unknown_fields_and_bad_types_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let err = load_with_env::<CoordinatorConfig>(Some(&file), "HEARTH_COORDINATOR", &[]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("bad.toml") && msg.contains("lisen"), "{msg}");
        let env = vec![("HEARTH_COORDINATOR__MAX_CONCURRENT_UPLOADS".to_string(), "many".to_string())];
        let msg = format!(
            "{:#}",
            load_with_env::<CoordinatorConfig>(None, "HEARTH_COORDINATOR", &env).unwrap_err()
        );
        assert!(
            msg.contains("HEARTH_COORDINATOR__MAX_CONCURRENT_UPLOADS")
                && msg.contains("max_concurrent_uploads"),
            "{msg}"
        );
    }

    fn participant(file_text: Option<&str>, env: &[(&str, &str)]) -> anyhow::Result<ParticipantConfig> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("participant.toml");
        if let Some(text) = file_text {
            std::fs::write(&file, text).unwrap();
        }
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        load_with_env(file_text.map(|_| file.as_path()), "HEARTH_PARTICIPANT", &env)
    }

    #[test]
    fn a_number_in_a_variable_is_text_where_the_field_wants_text() {
        let p = participant(None, &[("HEARTH_PARTICIPANT__SERVICE__DEFAULT_COUNTRY_CODE", "86")]).unwrap();
        assert_eq!(p.service.default_country_code.unwrap().as_str(), "86");
        let p = participant(None, &[("HEARTH_PARTICIPANT__COORDINATOR_NAME", "1234")]).unwrap();
        assert_eq!(p.coordinator_name, "1234");
        // A number stays a number where the field wants one.
        let p = participant(None, &[("HEARTH_PARTICIPANT__SERVICE__RETENTION__MAX_MESSAGES", "7")]).unwrap();
        assert_eq!(p.service.retention.max_messages, 7);
    }

    #[test]
    fn bad_values_name_the_file_or_the_variable_and_the_key() {
        let e = format!(
            "{:#}",
            participant(Some("[service]\nsession_window = \"half an hour\"\n"), &[]).unwrap_err()
        );
        assert!(e.contains("participant.toml") && e.contains("service.session_window"), "{e}");
        let e = format!(
            "{:#}",
            participant(
                Some("[service]\n"),
                &[("HEARTH_PARTICIPANT__SERVICE__DEFAULT_COUNTRY_CODE", "0086")]
            )
            .unwrap_err()
        );
        assert!(
            e.contains("HEARTH_PARTICIPANT__SERVICE__DEFAULT_COUNTRY_CODE")
                && e.contains("country calling code"),
            "{e}"
        );
        let e = format!("{:#}", participant(Some("listen = \"localhost:80\"\n"), &[]).unwrap_err());
        assert!(e.contains("participant.toml") && e.contains("listen"), "{e}");
        let e =
            format!("{:#}", participant(Some("coordinator = \"coordinator.example\"\n"), &[]).unwrap_err());
        assert!(e.contains("coordinator") && e.contains("host:port"), "{e}");
        // Parsed but not acceptable: checked once, named the same way.
        let e = format!(
            "{:#}",
            participant(Some("[service.local]\nlisten = \"0.0.0.0:7880\"\n"), &[]).unwrap_err()
        );
        assert!(
            e.contains("participant.toml") && e.contains("service.local.listen") && e.contains("loopback"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            participant(None, &[("HEARTH_PARTICIPANT__HOLDOUT_FRACTION", "0.9")]).unwrap_err()
        );
        assert!(e.contains("HEARTH_PARTICIPANT__HOLDOUT_FRACTION") && e.contains("holdout_fraction"), "{e}");
    }

    /// Dotted paths of every value in `v` (`keystore.backend`, `service.retention.fields.text`, ...).
    fn paths(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    paths(v, &format!("{prefix}{k}."), out);
                }
            }
            _ => out.push(prefix.trim_end_matches('.').to_string()),
        }
    }

    /// `deploy/NAME` loads through the real loader and sets every field a default configuration has, so
    /// the reference files stay complete and valid as the configuration types change.
    fn check_reference<T: Serialize + DeserializeOwned + Default + CheckConfig>(
        name: &str,
        prefix: &str,
    ) -> T {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(name);
        let loaded: T = load_with_env(Some(&file), prefix, &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let text = std::fs::read_to_string(&file).unwrap();
        let (mut written, mut defaults) = (Vec::new(), Vec::new());
        paths(&toml::from_str(&text).unwrap(), "", &mut written);
        paths(&toml::Value::try_from(T::default()).unwrap(), "", &mut defaults);
        let missing: Vec<&String> = defaults.iter().filter(|p| !written.contains(p)).collect();
        assert!(missing.is_empty(), "deploy/{name} does not set {missing:?}");
        loaded
    }

    /// The files the Kubernetes manifests mount (deploy/k8s/base/*/*.toml) load through the real
    /// loaders with the environment the manifests set, and keep every key file on the state volume.
    #[test]
    fn the_kubernetes_configurations_load() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s/base");
        let c: CoordinatorConfig =
            load_with_env(Some(&base.join("coordinator/coordinator.toml")), "HEARTH_COORDINATOR", &[])
                .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(c.tls.key.starts_with("/var/lib/hearth") && c.state_dir.starts_with("/var/lib/hearth"));
        assert!(c.ops_listen.is_some());
        let env = [
            ("HEARTH_PARTICIPANT__COORDINATOR".to_string(), "hearth-coordinator:7700".to_string()),
            ("HEARTH_PARTICIPANT__COORDINATOR_NAME".to_string(), "hearth-coordinator".to_string()),
        ];
        let p: ParticipantConfig =
            load_with_env(Some(&base.join("institution/participant.toml")), "HEARTH_PARTICIPANT", &env)
                .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(p.tls.key.starts_with("/var/lib/hearth") && p.data_dir.starts_with("/var/lib/hearth"));
        assert_eq!((p.coordinator.as_str(), p.suite), ("hearth-coordinator:7700", c.suite));
        assert_eq!(p.listen.port(), 7800);
        assert!(p.ops_listen.is_some());
    }

    #[test]
    fn the_deploy_reference_configurations_load_and_set_every_field() {
        let c: CoordinatorConfig = check_reference("coordinator.toml", "HEARTH_COORDINATOR");
        assert!(!c.policy.allow_plain_aggregation, "the reference keeps secure aggregation mandatory");
        let p: ParticipantConfig = check_reference("participant.toml", "HEARTH_PARTICIPANT");
        assert_eq!(p.suite, c.suite, "the two reference files name the same suite");
        assert_eq!(
            p.coordinator.as_str().rsplit(':').next(),
            Some(c.listen.port().to_string().as_str()),
            "same port"
        );
    }
}
