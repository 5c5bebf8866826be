//! Envoy with keyward's dynamic module (`module/`, built here on first use) in front of
//! keyward, for tests/module_e2e.rs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::process::Command;

use super::{Envoy, envoy_bin, eventually, repo};

/// The module as built for this test build's profile (`target/<profile>/`), built by cargo
/// once per test process: the whole suite (`cargo nextest run --workspace`) builds it anyway;
/// a narrow run (`--test module_e2e`) does not.
pub fn module_lib() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/<test binary>
            let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
            let mut build = std::process::Command::new(env!("CARGO"));
            build
                .args(["build", "-p", "keyward-envoy-module"])
                .current_dir(repo());
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            let built = build
                .output()
                .expect("run cargo build -p keyward-envoy-module");
            assert!(
                built.status.success(),
                "building the module failed: {}",
                String::from_utf8_lossy(&built.stderr)
            );
            let lib = profile_dir.join("libkeyward_envoy_module.so");
            assert!(lib.exists(), "{} was not built", lib.display());
            lib
        })
        .clone()
}

/// Feed timings for tests: keyward holds a poll 200 ms; hits stop 400 ms after the last answer.
pub const FEED_WAIT_MS: &str = "200";
pub const FEED_STALE_MS: &str = "400";

impl Envoy {
    /// Envoy rendered with `KEYWARD_MODULE=on` (and `render_env`), `concurrency` workers.
    pub async fn start_module(
        keyward_checks: &[SocketAddr],
        backend: SocketAddr,
        render_env: &[(&str, &str)],
        concurrency: u32,
    ) -> Envoy {
        let lib = module_lib();
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let gen_certs = std::process::Command::new("bash")
            .arg(repo().join("envoy/gen-certs.sh"))
            .arg(&certs)
            .output()
            .unwrap();
        assert!(gen_certs.status.success());
        let rendered = std::process::Command::new("sh")
            .arg(repo().join("envoy/render.sh"))
            .env("CERT_DIR", &certs)
            .env("PUBLIC_PORT", "0")
            .env("PRIVATE_PORT", "0")
            .env("ADMIN_PORT", "0")
            .env(
                "KEYWARD_ADDRS",
                keyward_checks
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .env("BACKEND_HOST", backend.ip().to_string())
            .env(
                super::TEST_EXT_AUTHZ_TIMEOUT.0,
                super::TEST_EXT_AUTHZ_TIMEOUT.1,
            )
            .env("BACKEND_PORT", backend.port().to_string())
            .env("KEYWARD_MODULE", "on")
            .env("KEYWARD_MODULE_PATH", &lib)
            .env("KEYWARD_MODULE_FEED_WAIT_MS", FEED_WAIT_MS)
            .env("KEYWARD_MODULE_FEED_STALE_MS", FEED_STALE_MS)
            .envs(render_env.iter().copied())
            .output()
            .unwrap();
        assert!(
            rendered.status.success(),
            "render: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, &rendered.stdout).unwrap();
        let admin_path = dir.path().join("admin.addr");
        let log = std::fs::File::create(dir.path().join("envoy.log")).unwrap();
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["--use-dynamic-base-id", "--concurrency"])
            .arg(concurrency.to_string())
            .args(["-l", "info", "--file-flush-interval-msec", "100"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start envoy");
        let admin: SocketAddr = eventually("envoy admin address", Duration::from_secs(60), || {
            let admin_path = admin_path.clone();
            async move {
                std::fs::read_to_string(&admin_path)
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            }
        })
        .await;
        let http = reqwest::Client::new();
        eventually("envoy ready", Duration::from_secs(60), || {
            let http = http.clone();
            async move {
                let r = http
                    .get(format!("http://{admin}/ready"))
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        let listeners: serde_json::Value = http
            .get(format!("http://{admin}/listeners?format=json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let port = |name: &str| -> u16 {
            listeners["listener_statuses"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["name"] == name)
                .and_then(|l| l["local_address"]["socket_address"]["port_value"].as_u64())
                .unwrap_or_else(|| panic!("listener {name} not in {listeners}")) as u16
        };
        Envoy {
            public: port("public"),
            private: port("private"),
            admin,
            child,
            dir,
        }
    }
}
