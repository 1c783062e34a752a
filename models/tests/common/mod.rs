//! Helpers shared by the simulations: where the public datasets are, and environment overrides.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The file `rel` under the shared datasets directory: `$HEARTH_DATA_DIR/rel` when that is set, else the
/// first `shared/data/rel` found walking up from this crate (the main checkout sits beside `shared/`, a
/// worktree one level deeper).
pub fn data_path(rel: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("HEARTH_DATA_DIR") {
        return Path::new(&dir).join(rel);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("shared/data").join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| here.join("../../shared/data").join(rel))
}

/// Reads a dataset file, naming it when it is missing.
pub fn read_data(rel: &str) -> String {
    let p = data_path(rel);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("reading {}: {e} (set HEARTH_DATA_DIR)", p.display()))
}

/// A number from the environment, for tuning runs, or `default`.
pub fn env<T: std::str::FromStr>(k: &str, default: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
