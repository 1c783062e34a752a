//! Every overlay under deploy/k8s/overlays renders with `kubectl kustomize` and validates, strictly,
//! against the Kubernetes 1.32 schemas (kubernetes-validate, installed by scripts/install-api-tools.sh).
//! Then what the manifests promise is checked on the rendered objects: every pod runs as non-root with
//! a read-only root file system, no privilege escalation and no capabilities; probes use the
//! operations endpoints; no Secret holds a private key; the image is the one `scripts/build-image.sh`
//! tags; an institution's participant and inference ports are reachable only from its own namespace;
//! the inference replicas have a HorizontalPodAutoscaler and a PodDisruptionBudget; and the
//! configuration files mounted are the ones `cli/src/config.rs`'s tests load through the services' own
//! loaders.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// The rendered objects of `overlay`.
fn render(overlay: &Path, into: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", overlay.to_str().unwrap()])
        .output()
        .expect("run kubectl (it is on these machines; see deploy/k8s/README.md)");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        overlay.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(into, &out.stdout).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap())
        .collect()
}

use serde::Deserialize;

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn containers(pod: &Value) -> Vec<&Value> {
    let mut all: Vec<&Value> = pod["containers"].as_array().unwrap().iter().collect();
    if let Some(init) = pod["initContainers"].as_array() {
        all.extend(init);
    }
    all
}

#[test]
fn the_kubernetes_overlays_render_and_validate() {
    let bin = api_tools();
    let version = String::from_utf8(hearth_ok(&["--version"]).stdout).unwrap();
    let image = format!("localhost/hearth:{}", version.split_whitespace().nth(1).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let overlays = root().join("deploy/k8s/overlays");
    let mut names: Vec<String> = std::fs::read_dir(&overlays)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["coordinator", "demo", "institution"]);
    for name in &names {
        let file = dir.path().join(format!("{name}.yaml"));
        let objects = render(&overlays.join(name), &file);
        let v = Command::new(bin.join("kubernetes-validate"))
            .args(["--strict", "--quiet", "--kubernetes-version", "1.32.0", s(&file)])
            .output()
            .unwrap();
        assert!(
            v.status.success(),
            "overlay {name} does not validate:\n{}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );

        // Every workload: hardened pods, the image built here, probes on the operations endpoints.
        let workloads: Vec<&Value> =
            objects.iter().filter(|o| o["kind"] == "StatefulSet" || o["kind"] == "Deployment").collect();
        assert!(!workloads.is_empty(), "{name}");
        for w in &workloads {
            let what = format!("{name}: {} {}", w["kind"], w["metadata"]["name"]);
            let pod = &w["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
            assert_eq!(pod["securityContext"]["runAsUser"], 10001, "{what}");
            assert_eq!(pod["automountServiceAccountToken"], false, "{what}");
            for c in containers(pod) {
                let sc = &c["securityContext"];
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{what} {}", c["name"]);
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{what} {}", c["name"]);
                assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{what} {}", c["name"]);
                assert_eq!(c["image"], image.as_str(), "{what} {}", c["name"]);
            }
            let main = &pod["containers"][0];
            assert_eq!(main["livenessProbe"]["httpGet"]["path"], "/healthz", "{what}");
            assert_eq!(main["readinessProbe"]["httpGet"]["path"], "/readyz", "{what}");
            assert_eq!(main["readinessProbe"]["httpGet"]["port"], "ops", "{what}");
            // Stateful services keep their state on a volume of their own.
            if w["kind"] == "StatefulSet" {
                assert_eq!(w["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "state", "{what}");
            } else {
                assert!(w["spec"].get("volumeClaimTemplates").is_none(), "{what}: replicas are stateless");
            }
        }
        // No private key in any Secret: keys are made on the volumes and in the HSM.
        for secret in of_kind(&objects, "Secret") {
            let text = secret.to_string();
            assert!(!text.contains("PRIVATE KEY"), "{name}: {text}");
            for field in ["stringData", "data"] {
                if let Some(keys) = secret[field].as_object() {
                    assert!(keys.keys().all(|k| !k.ends_with(".key")), "{name}: {text}");
                }
            }
        }
        // The configuration files mounted are the ones cli/src/config.rs's tests load through the
        // services' own loaders (the_kubernetes_configurations_load).
        for cm in of_kind(&objects, "ConfigMap") {
            for (file, text) in cm["data"].as_object().unwrap() {
                let base = if file == "coordinator.toml" { "coordinator" } else { "institution" };
                let source =
                    std::fs::read_to_string(root().join("deploy/k8s/base").join(base).join(file)).unwrap();
                assert_eq!(text.as_str().unwrap(), source, "{name}: {file}");
            }
        }

        if name == "coordinator" {
            assert!(named(&objects, "PodDisruptionBudget", "hearth-coordinator").is_some());
            continue;
        }
        // An institution: replicas that scale and survive drains, ports kept inside the namespace.
        let hpa = named(&objects, "HorizontalPodAutoscaler", "hearth-inference").expect("an autoscaler");
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "hearth-inference");
        assert!(hpa["spec"]["maxReplicas"].as_u64().unwrap() > hpa["spec"]["minReplicas"].as_u64().unwrap());
        assert!(named(&objects, "PodDisruptionBudget", "hearth-inference").is_some());
        for (policy, port) in [("hearth-participant", 7800), ("hearth-inference", 7900)] {
            let np = named(&objects, "NetworkPolicy", policy).unwrap_or_else(|| panic!("{name}: {policy}"));
            let rules: Vec<&Value> = np["spec"]["ingress"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["ports"].as_array().unwrap().iter().any(|p| p["port"] == port))
                .collect();
            assert_eq!(rules.len(), 1, "{name}: {policy}");
            assert_eq!(
                rules[0]["from"],
                serde_json::json!([{"podSelector": {}}]),
                "{name}: {policy} port {port}"
            );
        }
        let participant = named(&objects, "StatefulSet", "hearth-participant").unwrap();
        let enrol = &participant["spec"]["template"]["spec"]["initContainers"][0];
        assert_eq!(enrol["env"][0]["value"], "bank-a", "{name}: the institution's id");
    }
}
