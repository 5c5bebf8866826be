//! The `keyward` binary as users run it: against a running server, with bad input named in one
//! line and a non-zero exit, and nothing stored lost.

mod support;

use std::process::Output;

use serde_json::Value;
use support::{KEYWARD_BIN, Keyward};

struct Cli<'a> {
    keyward: &'a Keyward,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Output {
        std::process::Command::new(KEYWARD_BIN)
            .args(args)
            .env("KEYWARD_SERVER", format!("http://{}", self.keyward.admin))
            .env("KEYWARD_TOKEN", &self.keyward.owner_token)
            .env_remove("KEYWARD_CONFIG")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// Fails with a one-line error that mentions `needle`.
    fn fails(&self, args: &[&str], needle: &str) {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} lacks {needle:?}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !stderr.contains(&self.keyward.owner_token),
            "the token leaked: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_lifecycle_through_the_cli() {
    let keyward = Keyward::start().await;
    let cli = Cli { keyward: &keyward };
    cli.ok(&["projects", "create", "acme"]);
    cli.ok(&[
        "deployments",
        "create",
        "acme/bot",
        "--model",
        "llama-3.1-8b",
    ]);
    cli.ok(&[
        "deployments",
        "create",
        "acme/embed",
        "--model",
        "bge",
        "--private-auth",
        "off",
    ]);
    let listed = cli.json(&["deployments", "list"]);
    assert_eq!(listed[1]["deployment"], "acme/embed");
    assert_eq!(listed[1]["private_auth"], "off");

    let created = cli.json(&[
        "keys",
        "create",
        "--plane",
        "data",
        "--scope",
        "acme/bot",
        "--name",
        "ci",
        "--description",
        "CI runner",
        "--expires",
        "2099-01-31",
    ]);
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created["token"].as_str().unwrap().starts_with("ik_live_"));
    assert_eq!(created["expires_at"], "2099-01-31T00:00:00Z");

    let listed = cli.ok(&["keys", "list", "--project", "acme"]);
    assert!(
        listed.contains(&id) && !listed.contains("ik_live_"),
        "no secrets in lists: {listed}"
    );
    let shown = cli.json(&["keys", "show", &id]);
    assert_eq!(shown[0]["description"], "CI runner");

    let updated = cli.json(&[
        "keys",
        "update",
        &id,
        "--attach",
        "acme/embed",
        "--detach",
        "acme/bot",
        "--expires",
        "never",
    ]);
    assert_eq!(updated[0]["scope"], serde_json::json!(["acme/embed"]));
    assert_eq!(updated[0]["expires_at"], "never");

    let revoked = cli.json(&["keys", "revoke", &id]);
    assert_eq!(revoked[0]["status"], "revoked");
    cli.ok(&["keys", "delete", &id]);
    cli.fails(&["keys", "show", &id], "not found");

    let control = cli.json(&["keys", "create", "--plane", "control", "--scope", "acme"]);
    assert!(control["token"].as_str().unwrap().starts_with("ik_sdk_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_named_and_loses_nothing() {
    let keyward = Keyward::start().await;
    let cli = Cli { keyward: &keyward };
    cli.ok(&["projects", "create", "acme"]);
    cli.ok(&["deployments", "create", "acme/bot", "--model", "m"]);
    let key = cli.json(&["keys", "create", "--plane", "data", "--scope", "acme/bot"]);

    cli.fails(
        &["projects", "create", "acme"],
        "project acme already exists",
    );
    cli.fails(&["projects", "create", "Not_A_Slug"], "\"Not_A_Slug\"");
    cli.fails(
        &["deployments", "create", "acme/bot", "--model", "m"],
        "deployment acme/bot already exists",
    );
    cli.fails(
        &["deployments", "create", "ghost/bot", "--model", "m"],
        "project ghost not found",
    );
    cli.fails(
        &[
            "deployments",
            "create",
            "acme/x",
            "--model",
            "m",
            "--public-auth",
            "yes",
        ],
        "--public-auth",
    );
    cli.fails(
        &["deployments", "set-auth", "acme/bot"],
        "nothing to change",
    );
    cli.fails(
        &[
            "keys",
            "create",
            "--plane",
            "data",
            "--scope",
            "acme/bot",
            "--expires",
            "2099-02-30",
        ],
        "2099-02-30",
    );
    cli.fails(
        &[
            "keys",
            "create",
            "--plane",
            "data",
            "--scope",
            "acme/bot",
            "--expires",
            "2001-01-01",
        ],
        "in the past",
    );
    cli.fails(
        &["keys", "create", "--plane", "data", "--scope", "acme"],
        "\"acme\"",
    );
    cli.fails(
        &["keys", "create", "--plane", "data", "--scope", "acme/ghost"],
        "deployment acme/ghost not found",
    );
    cli.fails(
        &[
            "keys", "create", "--plane", "control", "--scope", "acme", "beta",
        ],
        "exactly one PROJECT",
    );
    cli.fails(
        &["keys", "create", "--plane", "sideways", "--scope", "acme"],
        "sideways",
    );
    cli.fails(
        &[
            "keys",
            "update",
            key["id"].as_str().unwrap(),
            "--detach",
            "acme/bot",
        ],
        "attached to nothing",
    );
    cli.fails(&["keys", "revoke", "nope"], "key nope not found");
    cli.fails(&["keys", "frobnicate"], "frobnicate");

    let bad_token = std::process::Command::new(KEYWARD_BIN)
        .args(["keys", "list"])
        .env("KEYWARD_SERVER", format!("http://{}", keyward.admin))
        .env("KEYWARD_TOKEN", "ik_sdk_garbage")
        .output()
        .unwrap();
    assert!(!bad_token.status.success());
    assert!(String::from_utf8_lossy(&bad_token.stderr).contains("malformed"));
    let no_server = std::process::Command::new(KEYWARD_BIN)
        .args(["keys", "list", "--server", "http://127.0.0.1:1"])
        .env("KEYWARD_TOKEN", &keyward.owner_token)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&no_server.stderr);
    assert!(
        !no_server.status.success() && stderr.contains("127.0.0.1:1"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // Everything stored before the errors is still there, unchanged.
    let keys = cli.json(&["keys", "list"]);
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == key["id"] && k["scope"] == serde_json::json!(["acme/bot"]))
    );
    assert_eq!(
        cli.json(&["deployments", "list"]).as_array().unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_the_cli_quietly_without_a_panic() {
    let keyward = Keyward::start().await;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(KEYWARD_BIN)
        .args(["keys", "list"])
        .env("KEYWARD_SERVER", format!("http://{}", keyward.admin))
        .env("KEYWARD_TOKEN", &keyward.owner_token)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_malformed_config_names_the_field_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[cache]\nttl_sec = 5\n", "ttl_sec"),
        ("[listen]\ncheck = \"not an address\"\n", "check"),
        ("[argon2]\nmemory_kib = 1\n", "argon2"),
        ("[database\n", "config file"),
    ];
    for (text, needle) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(KEYWARD_BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} accepted");
        assert!(stderr.contains(needle), "{stderr:?} lacks {needle:?}");
    }
    let out = std::process::Command::new(KEYWARD_BIN)
        .args(["serve"])
        .env("KEYWARD_CHECK_ADDR", "nowhere")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEYWARD_CHECK_ADDR"));
}

#[test]
fn init_twice_refuses_to_mint_a_second_owner_token() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    let first = std::process::Command::new(KEYWARD_BIN)
        .args(["init", "--database", &url])
        .output()
        .unwrap();
    assert!(first.status.success());
    let second = std::process::Command::new(KEYWARD_BIN)
        .args(["init", "--database", &url])
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already initialized"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_list_pages_with_limit_and_page_token() {
    let keyward = Keyward::start().await;
    let cli = Cli { keyward: &keyward };
    cli.ok(&["projects", "create", "acme"]);
    cli.ok(&["keys", "create", "--plane", "control", "--scope", "acme"]);
    let all = cli.json(&["keys", "list"]);
    assert_eq!(all.as_array().unwrap().len(), 2, "every page by default");
    let first = cli.run(&["keys", "list", "--limit", "1", "--output", "json"]);
    assert!(first.status.success());
    let stderr = String::from_utf8_lossy(&first.stderr);
    let token = stderr
        .trim()
        .strip_prefix("more keys: --page-token ")
        .unwrap_or_else(|| panic!("{stderr}"));
    let page: Value = serde_json::from_slice(&first.stdout).unwrap();
    let second = cli.json(&["keys", "list", "--limit", "1", "--page-token", token]);
    assert_eq!(
        [page[0]["id"].clone(), second[0]["id"].clone()],
        [all[0]["id"].clone(), all[1]["id"].clone()]
    );
    cli.fails(
        &["keys", "list", "--page-token", "nonsense"],
        "invalid page_token",
    );
}
