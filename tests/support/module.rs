//! Envoy with keyward's dynamic module (`module/`, built here on first use) in front of
//! keyward, for tests/module_e2e.rs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use super::{Envoy, repo};

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
        let lib = lib.to_str().expect("a UTF-8 path to the module");
        let mut env = vec![
            ("KEYWARD_MODULE", "on"),
            ("KEYWARD_MODULE_PATH", lib),
            ("KEYWARD_MODULE_FEED_WAIT_MS", FEED_WAIT_MS),
            ("KEYWARD_MODULE_FEED_STALE_MS", FEED_STALE_MS),
        ];
        env.extend_from_slice(render_env);
        Envoy::start_configured(keyward_checks, backend, &env, concurrency, "info").await
    }
}
