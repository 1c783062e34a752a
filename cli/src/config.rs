//! Configuration loading shared by every subcommand: defaults, then a TOML file, then environment
//! variables, each layer overriding the one before.
//!
//! An environment variable `PREFIX__A__B=value` sets field `b` of table `a`; `value` is read as a TOML
//! value when it parses as one (`7700`, `true`, `0.5`) and as a string otherwise.

use std::path::Path;

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Loads a `T` from defaults, `file` (if given) and the environment variables starting with `prefix__`.
pub fn load<T: Serialize + DeserializeOwned + Default>(
    file: Option<&Path>,
    prefix: &str,
) -> anyhow::Result<T> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    load_with_env(file, prefix, &vars)
}

/// [`load`] with the environment given explicitly (for tests).
pub fn load_with_env<T: Serialize + DeserializeOwned + Default>(
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
    for (key, raw) in vars {
        let Some(rest) = key.strip_prefix(&head) else { continue };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            bail!("environment variable {key}: empty path segment");
        }
        set_path(&mut value, &path, parse_scalar(raw))
            .with_context(|| format!("environment variable {key}"))?;
    }
    let text = toml::to_string(&value).context("re-encoding configuration")?;
    let origin = file.map_or_else(|| "defaults and environment".to_string(), |p| p.display().to_string());
    toml::from_str(&text).with_context(|| format!("invalid configuration (from {origin})"))
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
    use super::*;
    use hearth_coordinator::CoordinatorConfig;

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
        assert_eq!(c.listen, "0.0.0.0:9000");
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
        assert!(load_with_env::<CoordinatorConfig>(None, "HEARTH_COORDINATOR", &env).is_err());
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
    fn check_reference<T: Serialize + DeserializeOwned + Default>(name: &str, prefix: &str) -> T {
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

    #[test]
    fn the_deploy_reference_configurations_load_and_set_every_field() {
        let c: CoordinatorConfig = check_reference("coordinator.toml", "HEARTH_COORDINATOR");
        assert!(!c.policy.allow_plain_aggregation, "the reference keeps secure aggregation mandatory");
        let p: hearth_participant::ParticipantConfig =
            check_reference("participant.toml", "HEARTH_PARTICIPANT");
        assert_eq!(p.suite, c.suite, "the two reference files name the same suite");
        assert_eq!(p.coordinator.rsplit(':').next(), c.listen.rsplit(':').next(), "same port");
    }
}
