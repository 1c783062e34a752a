//! The OCI image builds from `deploy/Containerfile` with the command deploy/README.md gives
//! (`scripts/build-image.sh`, buildah, no daemon, no base image), into an image store of the test's own.
//! Its configuration runs as the non-root hearth user with `hearth` as the entry point, declares the
//! gRPC and operations ports and the state volume, and carries the OCI labels. Containers cannot be
//! started on these machines, so the image's own binary is run by `chroot` into its mounted root file
//! system, as the hearth user: it prints its version and makes a consortium PKI in the image's /tmp.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

struct Store {
    root: tempfile::TempDir,
}

impl Store {
    fn buildah(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root").arg(self.root.path().join("root")).arg("--runroot").arg(self.root.path().join("run"));
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.buildah().args(args).output().expect("run buildah");
        assert!(
            out.status.success(),
            "buildah {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Unmounts and removes the working containers, then the store's layers.
        let _ = self.buildah().args(["rm", "--all"]).output();
        let _ = self.buildah().args(["rmi", "--all", "--force"]).output();
    }
}

fn run_in(rootfs: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("/usr/sbin/chroot")
        .arg("--userspec=10001:10001")
        .arg(rootfs)
        .arg("/usr/local/bin/hearth")
        .args(args)
        .env_clear()
        .env("HOME", "/var/lib/hearth")
        .env("PATH", "/usr/local/bin")
        .output()
        .expect("run chroot");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn the_image_builds_and_runs_from_its_root_file_system() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let store = Store { root: tempfile::tempdir().unwrap() };
    let archive = store.root.path().join("hearth.oci.tar");
    let out = Command::new(root.join("scripts/build-image.sh"))
        .args(["--binary", HEARTH, "--tag", "localhost/hearth:test", "--archive", s(&archive), "--"])
        .arg("--root")
        .arg(store.root.path().join("root"))
        .arg("--runroot")
        .arg(store.root.path().join("run"))
        .output()
        .expect("run scripts/build-image.sh");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "scripts/build-image.sh failed:\n{log}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 64, "the script prints the image id: {log}");
    assert!(std::fs::metadata(&archive).unwrap().len() > 1_000_000, "the OCI archive was written");

    // The configuration: user, entry point, ports, volume, labels.
    let inspect: serde_json::Value =
        serde_json::from_str(&store.ok(&["inspect", "--type", "image", "localhost/hearth:test"])).unwrap();
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(config["User"], "10001:10001", "{config}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/local/bin/hearth"]), "{config}");
    for port in ["7700/tcp", "7800/tcp", "9700/tcp", "9800/tcp"] {
        assert!(config["ExposedPorts"].get(port).is_some(), "{port} not declared: {config}");
    }
    assert!(config["Volumes"].get("/var/lib/hearth").is_some(), "{config}");
    let labels = &config["Labels"];
    let version = String::from_utf8(hearth_ok(&["--version"]).stdout).unwrap();
    assert_eq!(
        labels["org.opencontainers.image.version"].as_str().unwrap(),
        version.split_whitespace().nth(1).unwrap(),
        "{labels}"
    );
    for label in ["title", "description", "revision", "created", "licenses"] {
        let v = labels[format!("org.opencontainers.image.{label}")].as_str().unwrap_or("");
        assert!(!v.is_empty() && v != "unknown", "label {label} missing: {labels}");
    }
    assert_eq!(inspect["OCIv1"]["architecture"], "amd64");

    // The image's own root file system, mounted: its binary runs as the hearth user.
    let container = store.ok(&["from", "--pull-never", "localhost/hearth:test"]);
    let rootfs = store.ok(&["mount", &container]);
    let rootfs = Path::new(&rootfs);
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("hearth:x:10001:10001:"), "{passwd}");
    assert!(
        !rootfs.join("bin/sh").exists() && !rootfs.join("usr/bin/apt-get").exists(),
        "no shell, no package manager"
    );
    let (ok, said) = run_in(rootfs, &["--version"]);
    assert!(ok && said.trim() == version.trim(), "hearth --version in the image: {said}");
    let (ok, said) =
        run_in(rootfs, &["pki", "init", "--dir", "/tmp/pki", "--participants", "bank-a,airline-b"]);
    assert!(ok, "hearth pki init in the image, as the hearth user: {said}");
    assert!(rootfs.join("tmp/pki/ca.pem").is_file() && rootfs.join("tmp/pki/bank-a.pem").is_file(), "{said}");
    let owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(rootfs.join("tmp/pki/ca.pem")).unwrap());
    assert_eq!(owner, 10001, "written as the hearth user");
    store.ok(&["umount", &container]);
}
