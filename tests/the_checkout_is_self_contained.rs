//! A clone needs nothing beside it: the datasets are in `data/` with their licences and checksums, no
//! file refers to a directory outside the checkout, and every integration test under `tests/` is built.

use std::path::{Path, PathBuf};

use hearth_crypto::digest::content_digest;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The lines of `data/SHA256SUMS`: (hex digest, path under `data/`).
fn sums() -> Vec<(String, String)> {
    read(&root().join("data/SHA256SUMS"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (hash, path) = l.split_once("  ").unwrap_or_else(|| panic!("SHA256SUMS line {l:?}"));
            (hash.to_string(), path.to_string())
        })
        .collect()
}

#[test]
fn data_matches_its_checksums() {
    let sums = sums();
    for want in ["clinc150/data_full.json", "goemotions/ekman/train.tsv", "online-retail/transactions.csv"] {
        assert!(sums.iter().any(|(_, p)| p == want), "{want} is not in data/SHA256SUMS");
    }
    for (hash, path) in &sums {
        let bytes = std::fs::read(root().join("data").join(path))
            .unwrap_or_else(|e| panic!("data/{path} is listed in SHA256SUMS but cannot be read: {e}"));
        assert_eq!(&hex::encode(content_digest(&bytes)), hash, "data/{path} does not match SHA256SUMS");
    }
}

#[test]
fn every_dataset_carries_its_licence_and_source() {
    let mut folders: Vec<String> =
        sums().iter().map(|(_, p)| p.split('/').next().unwrap_or_default().to_string()).collect();
    folders.dedup();
    assert_eq!(folders, ["clinc150", "goemotions", "online-retail"]);
    for f in folders {
        for file in ["LICENSE", "SOURCE"] {
            let p = root().join("data").join(&f).join(file);
            assert!(read(&p).len() > 100, "{} is missing or empty", p.display());
        }
    }
}

/// Every text file of the repository, skipping build output, git's own files and the datasets.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.is_dir() {
            if !matches!(name, "target" | ".git" | "data") {
                files(&path, out);
            }
        } else if ["rs", "toml", "sh", "md", "yaml", "yml", "service"]
            .iter()
            .any(|ext| path.extension().is_some_and(|e| e == *ext))
            || name == "run"
        {
            out.push(path);
        }
    }
}

#[test]
fn nothing_refers_outside_the_checkout() {
    let mut all = Vec::new();
    files(&root(), &mut all);
    assert!(all.len() > 50, "found only {} files under {}", all.len(), root().display());
    // Spelled in two halves so that this file does not find itself.
    let needles = [format!("../{}", "shared"), format!("{}/data", "shared")];
    let offenders: Vec<String> = all
        .iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            needles.iter().any(|n| text.contains(n.as_str()))
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "these files refer to a directory outside the checkout: {offenders:?}");
}

#[test]
fn every_integration_test_is_declared() {
    let manifest = read(&root().join("cli/Cargo.toml"));
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("tests")).expect("tests/") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if !manifest.contains(&format!("path = \"../tests/{name}\"")) {
                missing.push(name.to_string());
            }
        }
    }
    assert!(missing.is_empty(), "tests/ files not declared as [[test]] in cli/Cargo.toml: {missing:?}");
}
