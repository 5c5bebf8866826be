//! `keyward apply` / `keyward export` through the real CLI binary against a real server:
//! idempotence, round trip onto an empty database, dry run, and all-or-nothing rejection
//! naming the line.

mod support;

use std::process::Output;

use support::{KEYWARD_BIN, Keyward};

const STATE: &str = r#"
[[projects]]
slug = "acme"

[[projects]]
slug = "beta"

[[deployments]]
name = "acme/chat"
model = "llama-3.1-8b"
public_auth = true
private_auth = false

[[workloads]]
id = "w-1"
project = "acme"

[[members]]
email = "alice@example.com"

[[applications]]
name = "ci"

[[permission_sets]]
name = "Deployer"
description = "write workloads, read and call"
actions = ["deployments.write"]
includes = ["InferenceReadOnly"]

[[policies]]
name = "ci-deploy"
principal = "app:ci"

  [[policies.rules]]
  projects = ["acme"]
  permission_sets = ["Deployer"]
  source_ips = ["10.0.0.0/8", "2001:db8::/32"]
  user_agents = [{ prefix = "terraform/" }]
  not_before = "2025-01-01T00:00:00Z"
  not_after = "2035-01-01T00:00:00Z"

[[policies]]
name = "alice-read"
principal = "user:alice@example.com"

  [[policies.rules]]
  all_projects = true
  permission_sets = ["InferenceReadOnly"]

  [[policies.rules]]
  organization = true
  permission_sets = ["AllProductsFullAccess"]
"#;

async fn cli(keyward: &Keyward, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = tokio::process::Command::new(KEYWARD_BIN);
    command
        .args(args)
        .env("KEYWARD_SERVER", format!("http://{}", keyward.admin))
        .env("KEYWARD_TOKEN", &keyward.owner_token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    if let Some(input) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().await.unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "keyward failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_is_idempotent_and_export_round_trips() {
    let first = Keyward::start().await;

    let dry = stdout(&cli(&first, &["apply", "-f", "-", "--dry-run"], Some(STATE)).await);
    assert!(dry.contains("+ policy ci-deploy"), "{dry}");
    assert!(dry.contains("dry run: nothing changed"), "{dry}");
    let empty = stdout(&cli(&first, &["export"], None).await);
    assert!(
        !empty.contains("[[projects]]"),
        "dry run changed nothing: {empty}"
    );

    let applied = stdout(&cli(&first, &["apply", "-f", "-"], Some(STATE)).await);
    assert!(applied.contains("+ project acme"), "{applied}");
    assert!(applied.contains("+ member alice@example.com"), "{applied}");
    let again = stdout(&cli(&first, &["apply", "-f", "-"], Some(STATE)).await);
    assert_eq!(again.trim(), "no changes", "second apply is a no-op");

    let exported = stdout(&cli(&first, &["export"], None).await);
    assert!(!exported.contains("ik_"), "no secret in an export");
    assert!(!exported.contains(&first.owner_token));
    let reapplied = stdout(&cli(&first, &["apply", "-f", "-"], Some(&exported)).await);
    assert_eq!(reapplied.trim(), "no changes", "{exported}");

    // Onto an empty database: the same state.
    let second = Keyward::start().await;
    stdout(&cli(&second, &["apply", "-f", "-"], Some(&exported)).await);
    let reproduced = stdout(&cli(&second, &["export"], None).await);
    assert_eq!(reproduced, exported);

    // A change shows as an update; --prune removes what the file omits.
    let changed = STATE.replace("private_auth = false", "private_auth = true");
    let diff = stdout(&cli(&first, &["apply", "-f", "-", "--dry-run"], Some(&changed)).await);
    assert_eq!(
        diff.lines().next().unwrap_or_default(),
        "~ deployment acme/chat (model llama-3.1-8b, public_auth on, private_auth on)"
    );
    let without_alice = STATE
        .split("[[policies]]\nname = \"alice-read\"")
        .next()
        .unwrap()
        .replace("[[members]]\nemail = \"alice@example.com\"\n", "");
    let pruned = stdout(
        &cli(
            &first,
            &["apply", "-f", "-", "--prune", "--dry-run"],
            Some(&without_alice),
        )
        .await,
    );
    assert!(pruned.contains("- policy alice-read"), "{pruned}");
    assert!(
        pruned.contains("- principal user:alice@example.com"),
        "{pruned}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_rejected_whole_with_the_line() {
    let keyward = Keyward::start().await;
    let before = stdout(&cli(&keyward, &["export"], None).await);
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let cases = [
        (
            STATE.replace("[\"Deployer\"]", "[\"Nope\"]"),
            "[\"Nope\"]",
            "unknown permission set",
        ),
        (
            STATE.replace("10.0.0.0/8", "10.0.0.0/40"),
            "10.0.0.0/40",
            "invalid CIDR",
        ),
        (
            STATE.replace("\"2035-01-01T00:00:00Z\"", "\"2035-01-01 noon\""),
            "noon",
            "invalid time",
        ),
        (
            STATE.replace("all_projects = true\n", ""),
            "all_projects",
            "empty rule",
        ),
        (
            STATE.replace(
                "includes = [\"InferenceReadOnly\"]",
                "includes = [\"Deployer\"]",
            ),
            "name = \"Deployer\"",
            "cycle",
        ),
        (
            STATE.replace("principal = \"app:ci\"", "principal = \"app:ghost\""),
            "name = \"ci-deploy\"",
            "app:ghost does not exist",
        ),
        (
            STATE.replace("projects = [\"acme\"]", "projects = [\"gamma\"]"),
            "projects = [\"gamma\"]",
            "project gamma does not exist",
        ),
    ];
    for (text, needle, reason) in cases {
        let out = cli(&keyward, &["apply", "-f", "-"], Some(&text)).await;
        assert!(!out.status.success(), "{reason}: accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(reason), "{reason}: {err}");
        // The empty-rule case points at the rule that lost its scope, one line above the
        // removed key; every other case at the offending line or its item.
        let expected = match reason {
            "empty rule" => line_of(STATE, needle) - 1,
            _ => line_of(&text, needle),
        };
        let near = (expected.saturating_sub(2)..=expected + 1)
            .any(|l| err.contains(&format!("line {l}:")));
        assert!(near, "{reason}: expected near line {expected}: {err}");
    }
    let after = stdout(&cli(&keyward, &["export"], None).await);
    assert_eq!(after, before, "nothing changed");
}

/// The declarative state moves between backends: SQLite's export applied onto PostgreSQL
/// exports identically, and applying it again there is a no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_moves_from_sqlite_to_postgres() {
    let sqlite = Keyward::start().await;
    stdout(&cli(&sqlite, &["apply", "-f", "-"], Some(STATE)).await);
    let exported = stdout(&cli(&sqlite, &["export"], None).await);

    let postgres = Keyward::start_postgres().await;
    let applied = stdout(&cli(&postgres, &["apply", "-f", "-"], Some(&exported)).await);
    assert!(applied.contains("+ policy"), "{applied}");
    assert_eq!(stdout(&cli(&postgres, &["export"], None).await), exported);
    let again = stdout(&cli(&postgres, &["apply", "-f", "-"], Some(&exported)).await);
    assert_eq!(again.trim(), "no changes");
}
