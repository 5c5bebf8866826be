//! The Kubernetes and Istio manifests under `deploy/` pass the real offline validators
//! (`kubernetes-validate --strict` for Kubernetes schemas, Istio's CRD schemas from
//! `@kubernetes-models/istio`, both run by `scripts/validate-manifests`), the validators reject
//! what they should, and the ConfigMap's `keyward.toml` is a configuration keyward accepts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validate(files: &[&Path]) -> Output {
    Command::new(root().join("scripts/validate-manifests"))
        .args(files)
        .output()
        .expect("scripts/validate-manifests runs (bash)")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A copy of `deploy/RELATIVE` with `from` replaced by `to` (which must occur), in `dir`.
fn broken_copy(dir: &Path, relative: &str, from: &str, to: &str) -> PathBuf {
    let original = std::fs::read_to_string(root().join("deploy").join(relative)).unwrap();
    assert!(
        original.contains(from),
        "{relative} no longer contains {from:?}"
    );
    let path = dir.join(relative.replace('/', "-"));
    std::fs::write(&path, original.replacen(from, to, 1)).unwrap();
    path
}

#[test]
fn every_shipped_manifest_passes_both_validators() {
    let output = validate(&[]);
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains("6 Kubernetes and 5 Istio files valid"),
        "{said}"
    );
}

#[test]
fn the_validators_reject_broken_manifests_and_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // A misspelt field is an error, not silently dropped.
        (
            "kubernetes/deployment.yaml",
            "  replicas: 2",
            "  replcas: 2",
            "replcas",
        ),
        (
            "kubernetes/service.yaml",
            "port: 9191",
            "port: nine",
            "nine",
        ),
        (
            "istio/authorization-policy.yaml",
            "notPaths:",
            "notPathz:",
            "additional properties",
        ),
        (
            "istio/authorization-policy.yaml",
            "action: CUSTOM",
            "action: CUSTM",
            "allowed values",
        ),
        // keyward's own rules for its provider: fail closed, 503 on error.
        (
            "istio/mesh-config.yaml",
            "failOpen: false",
            "failOpen: true",
            "failOpen must be false",
        ),
        (
            "istio/mesh-config.yaml",
            "statusOnError: \"503\"",
            "statusOnError: \"401\"",
            "503",
        ),
        (
            "istio/mesh-config.yaml",
            "failOpen:",
            "failOpn:",
            "unknown envoyExtAuthzGrpc field",
        ),
    ];
    for (file, from, to, expected) in cases {
        let broken = broken_copy(dir.path(), file, from, to);
        let output = validate(&[&broken]);
        let said = text(&output);
        assert!(
            !output.status.success(),
            "{file} with {to:?} passed: {said}"
        );
        assert!(said.contains(expected), "{file} with {to:?}: {said}");
        let name = broken.file_name().unwrap().to_str().unwrap();
        assert!(
            said.contains(name),
            "the error names the file {name}: {said}"
        );
    }
}

#[test]
fn the_configmap_holds_a_configuration_keyward_accepts() {
    let manifest =
        std::fs::read_to_string(root().join("deploy/kubernetes/configmap.yaml")).unwrap();
    let (_, block) = manifest
        .split_once("keyward.toml: |\n")
        .expect("the ConfigMap has a keyward.toml block");
    let toml: String = block
        .lines()
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    let mut config = keyward::config::Config::from_toml(&toml).expect("keyward.toml parses");
    config.validate().expect("keyward.toml validates");
    assert_eq!(config.listen.check.to_string(), "0.0.0.0:9191");
    assert!(
        config.listen.admin.ip().is_loopback(),
        "the admin API stays on the pod's loopback"
    );
}

/// `promtool` from Debian's `prometheus` package (installed by scripts/setup.sh); a missing
/// promtool fails the test rather than skipping it.
fn promtool(args: &[&str], dir: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool is required ({e}): apt-get install prometheus, or run scripts/test")
        })
}

#[test]
fn the_prometheus_scrape_config_and_alert_rules_pass_promtool() {
    let dir = root().join("deploy/prometheus");
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "rules", "alerts.yml"],
        // Each alert fires on the series that should fire it, and not on healthy ones.
        &["test", "rules", "alerts_test.yml"],
    ] {
        let output = promtool(args, &dir);
        assert!(
            output.status.success(),
            "promtool {args:?}: {}",
            text(&output)
        );
    }
}

#[test]
fn promtool_rejects_broken_alert_rules() {
    let dir = tempfile::tempdir().unwrap();
    let original = root().join("deploy/prometheus");
    for file in ["alerts.yml", "alerts_test.yml", "prometheus.yml"] {
        std::fs::copy(original.join(file), dir.path().join(file)).unwrap();
    }
    let alerts = std::fs::read_to_string(dir.path().join("alerts.yml")).unwrap();
    let cases = [
        // Not PromQL: `check rules` says so.
        ("keyward_ready == 0 or", "keyward_ready === 0 or", "check"),
        // Valid PromQL on a metric keyward does not export: the alert never fires.
        (
            "keyward_propagation_connected == 0",
            "keyward_propagation_up == 0",
            "test",
        ),
    ];
    for (from, to, command) in cases {
        assert!(
            alerts.contains(from),
            "alerts.yml no longer contains {from:?}"
        );
        std::fs::write(dir.path().join("alerts.yml"), alerts.replacen(from, to, 1)).unwrap();
        let args = match command {
            "check" => ["check", "rules", "alerts.yml"],
            _ => ["test", "rules", "alerts_test.yml"],
        };
        let output = promtool(&args, dir.path());
        assert!(!output.status.success(), "{to:?} passed: {}", text(&output));
    }
}
