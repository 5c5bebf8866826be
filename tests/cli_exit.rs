//! The CLI as scripts use it: one exit code per kind of failure (the same with `--output json`,
//! which also puts the error on stderr as JSON), the token from a file or standard input,
//! `config check`, shell completions loaded by a real bash, and the help and man page.

mod support;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::{KEYWARD_BIN, Keyward};

/// `keyward ARGS` against `keyward`'s admin API with `token` in KEYWARD_TOKEN (if any).
fn run(keyward: &Keyward, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(KEYWARD_BIN);
    command
        .args(args)
        .env("KEYWARD_SERVER", format!("http://{}", keyward.admin))
        .env_remove("KEYWARD_TOKEN")
        .env_remove("KEYWARD_TOKEN_FILE")
        .env_remove("KEYWARD_CONFIG");
    if let Some(token) = token {
        command.env("KEYWARD_TOKEN", token);
    }
    command.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `args` twice, as a table and as JSON: both exit with `code`; the JSON run's stderr is one
/// JSON error object of that code, naming `needle`; nothing leaks the token or panics.
fn fails_with(keyward: &Keyward, token: Option<&str>, args: &[&str], code: i32, needle: &str) {
    let table = run(keyward, token, args);
    assert_eq!(
        table.status.code(),
        Some(code),
        "{args:?}: {}",
        stderr(&table)
    );
    assert!(
        stderr(&table).contains(needle),
        "{args:?}: {}",
        stderr(&table)
    );
    // One line, except clap's usage errors, which add a tip.
    if !args.contains(&"frobnicate") {
        assert_eq!(
            stderr(&table).trim().lines().count(),
            1,
            "{}",
            stderr(&table)
        );
    }

    let mut json_args = args.to_vec();
    json_args.extend(["--output", "json"]);
    let json = run(keyward, token, &json_args);
    assert_eq!(
        json.status.code(),
        Some(code),
        "{json_args:?}: {}",
        stderr(&json)
    );
    assert!(json.stdout.is_empty(), "{json_args:?} printed a result");
    let error: Value = serde_json::from_str(stderr(&json).trim()).unwrap_or_else(|e| {
        panic!(
            "{json_args:?}: stderr is not one JSON object ({e}): {}",
            stderr(&json)
        )
    });
    assert_eq!(error["error"]["exit_code"], code, "{error}");
    assert!(
        error["error"]["message"].as_str().unwrap().contains(needle),
        "{error}"
    );
    for out in [&table, &json] {
        let text = stderr(out);
        assert!(!text.contains("panicked"), "{text}");
        assert!(
            !text.contains(&keyward.owner_token),
            "the token leaked: {text}"
        );
        if let Some(token) = token {
            assert!(!text.contains(token), "the token leaked: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_failure_has_its_exit_code_in_table_and_json() {
    let keyward = Keyward::start().await;
    let owner = Some(keyward.owner_token.as_str());
    let ok = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        let out = run(&keyward, owner, &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    ok(&["projects", "create", "acme"]);
    ok(&["deployments", "create", "acme/chat", "--model", "m"]);

    // 2: usage, from clap, from the CLI's own checks and from the server's INVALID_ARGUMENT.
    fails_with(&keyward, owner, &["keys", "frobnicate"], 2, "frobnicate");
    fails_with(
        &keyward,
        owner,
        &["projects", "create", "Not_A_Slug"],
        2,
        "Not_A_Slug",
    );
    fails_with(
        &keyward,
        owner,
        &["deployments", "set-auth", "acme/chat"],
        2,
        "nothing to change",
    );
    // 3: not found.
    fails_with(
        &keyward,
        owner,
        &["keys", "revoke", "nope"],
        3,
        "key nope not found",
    );
    fails_with(
        &keyward,
        owner,
        &["policies", "show", "ghost"],
        3,
        "policy ghost not found",
    );
    // 4: no token, a malformed one, one the server refuses (revoked).
    fails_with(&keyward, None, &["keys", "list"], 4, "no control token");
    fails_with(
        &keyward,
        Some("ik_sdk_garbage"),
        &["keys", "list"],
        4,
        "malformed",
    );
    let control = ok(&["keys", "create", "--plane", "control", "--scope", "acme"]);
    let control_token = control["token"].as_str().unwrap().to_owned();
    let control_id = control["id"].as_str().unwrap().to_owned();
    // 5: a valid token whose key is scoped to acme cannot manage members organization-wide.
    fails_with(
        &keyward,
        Some(&control_token),
        &["members", "add", "eve@example.com"],
        5,
        "",
    );
    ok(&["keys", "revoke", &control_id]);
    fails_with(&keyward, Some(&control_token), &["projects", "list"], 4, "");
    // 6: conflict.
    fails_with(
        &keyward,
        owner,
        &["projects", "create", "acme"],
        6,
        "already exists",
    );
    // 7: unavailable: nothing listens there.
    let mut unreachable = Command::new(KEYWARD_BIN);
    let out = unreachable
        .args(["keys", "list", "--server", "http://127.0.0.1:1"])
        .env("KEYWARD_TOKEN", &keyward.owner_token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));
    // 8: bad configuration, for serve and config check alike.
    let out = Command::new(KEYWARD_BIN)
        .args(["serve"])
        .env("KEYWARD_CHECK_ADDR", "nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(stderr(&out).contains("KEYWARD_CHECK_ADDR"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_comes_from_a_file_or_standard_input() {
    let keyward = Keyward::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{}\n", keyward.owner_token)).unwrap();
    let server = format!("http://{}", keyward.admin);

    let out = Command::new(KEYWARD_BIN)
        .args(["projects", "create", "acme", "--token-file"])
        .arg(&file)
        .env("KEYWARD_SERVER", &server)
        .env("KEYWARD_TOKEN", "ik_sdk_garbage") // the file wins
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let mut child = Command::new(KEYWARD_BIN)
        .args(["projects", "list", "--output", "json", "--token-file", "-"])
        .env("KEYWARD_SERVER", &server)
        .env_remove("KEYWARD_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "  {}  ", keyward.owner_token).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let projects: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(projects[0]["slug"], "acme");

    // Missing and empty files are named (exit 2 and 4); the content is never shown.
    let secret_file = dir.path().join("wrong");
    std::fs::write(&secret_file, "not-a-token-hunter2\n").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    for (path, code, needle) in [
        (dir.path().join("absent"), 2, "absent"),
        (empty, 4, "no control token"),
        (secret_file, 4, "malformed"),
    ] {
        let out = Command::new(KEYWARD_BIN)
            .args(["projects", "list", "--token-file"])
            .arg(&path)
            .env("KEYWARD_SERVER", &server)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
        assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    }
}

#[test]
fn config_check_prints_the_example_and_names_every_bad_value() {
    let example = support::repo().join("examples/keyward.toml");
    let out = Command::new(KEYWARD_BIN)
        .args(["config", "check"])
        .arg(&example)
        .env_remove("KEYWARD_CACHE_TTL_SECS")
        .env("KEYWARD_DATABASE_URL", "postgres://kw:hunter2@db/kw")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    // Every key of the example is printed with its source.
    let example_text = std::fs::read_to_string(&example).unwrap();
    let mut section = String::new();
    let mut keys = 0;
    for line in example_text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let line = line.strip_prefix("# ").unwrap_or(line);
        if let Some((key, _)) = line.split_once(" = ")
            && !key.starts_with(' ')
            && !key.contains(' ')
        {
            let full = format!("{section}.{key}");
            assert!(
                text.contains(&format!("{full} = ")) || text.contains(&format!("# {full} (unset)")),
                "{full} missing from config check:\n{text}"
            );
            keys += 1;
        }
    }
    assert!(keys >= 25, "only {keys} keys found in the example");
    assert!(
        text.contains("database.url = \"postgres://kw:REDACTED@db/kw\""),
        "{text}"
    );
    assert!(text.contains("KEYWARD_DATABASE_URL"), "{text}");
    assert!(
        text.contains("cache.ttl_secs = 300") && text.contains("# file"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[cache]\nttl_secs = \"soon\"\n").unwrap();
    let out = Command::new(KEYWARD_BIN)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8));
    assert!(stderr(&out).contains("ttl_secs"), "{}", stderr(&out));

    let bad = dir.path().join("bad2.toml");
    std::fs::write(&bad, "[cache]\ncapacity = 0\n[verify]\nnice = 40\n").unwrap();
    let out = Command::new(KEYWARD_BIN)
        .args(["config", "check", "--output", "json"])
        .arg(&bad)
        .env("KEYWARD_PROPAGATION_HEARTBEAT_MS", "1ms")
        .env("KEYWARD_CACHE_TTL", "5m")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].to_string();
    for needle in ["cache.capacity", "verify.nice", "propagation.heartbeat_ms"] {
        assert!(problems.contains(needle), "{needle}: {problems}");
    }
    assert_eq!(report["valid"], false);
    assert!(
        report["warnings"]
            .to_string()
            .contains("KEYWARD_CACHE_TTL ")
    );
    let error: Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(error["error"]["kind"], "config");
}

#[test]
fn completions_load_in_a_real_bash() {
    let script = format!(
        "source <('{KEYWARD_BIN}' completions bash) && complete -p keyward && \
         COMP_WORDS=(keyward ke) COMP_CWORD=1 COMP_LINE='keyward ke' COMP_POINT=10 && \
         _keyward keyward ke keyward && echo \"candidates: ${{COMPREPLY[*]}}\""
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", stderr(&out));
    assert!(text.contains("-F _keyward keyward"), "{text}");
    assert!(text.contains("candidates: keys"), "{text}");
    for shell in ["zsh", "fish"] {
        let out = Command::new(KEYWARD_BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let out = Command::new(KEYWARD_BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_and_the_man_page_document_the_exit_codes() {
    let text = |args: &[&str]| {
        let out = Command::new(KEYWARD_BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(text(&["--help"]).contains("3 not found"));
    let codes = text(&["help", "exit-codes"]);
    for needle in ["not_found", "permission_denied", "unavailable", "141"] {
        assert!(codes.contains(needle), "{codes}");
    }
    assert!(text(&["help", "keys", "rotate"]).contains("--grace"));
    let out = Command::new(KEYWARD_BIN)
        .args(["help", "no-such-topic"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no-such-topic"));
    assert!(text(&["help", "environment"]).contains("KEYWARD_TLS_ADMIN_CLIENT_CA"));
    let man = text(&["man"]);
    assert!(man.contains(".TH") && man.contains("EXIT STATUS"), "{man}");
}
