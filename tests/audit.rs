//! Issue 15, items 3 and 5, on both backends, through the real `keyward` binary against a real
//! server: a scripted admin session leaves exactly the expected audit trail (writes and denied
//! calls, who, what, where), no token or hash reaches the audit table, the audit is read only
//! with `audit.read`, records past the retention are pruned by the server; and `keys list`
//! finds keys as a user looks for them (by deployment, expiring, unused by last use written by
//! another replica).

mod support;

use std::time::Duration;

use keyward::config::Config;
use serde_json::Value;
use sqlx::{AnyPool, Row};
use support::cli::Cli;
use support::{KEYWARD_BIN, Keyward, PgDatabase, data_status, eventually, init, test_config};

/// `audit list --output json`, one JSON object a line, as a user reads the audit.
trait AuditLog {
    fn audit(&self, filters: &[&str]) -> Vec<Value>;
}

impl AuditLog for Cli<'_> {
    fn audit(&self, filters: &[&str]) -> Vec<Value> {
        let mut args = vec!["audit", "list", "--output", "json"];
        args.extend(filters);
        self.ok(&args)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

fn created_key(created: &Value) -> (String, String) {
    (
        created["id"].as_str().unwrap().to_owned(),
        created["token"].as_str().unwrap().to_owned(),
    )
}

async fn raw_pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(url).await.unwrap()
}

/// Every column of every audit row, as stored.
async fn raw_audit_rows(url: &str) -> Vec<String> {
    let pool = raw_pool(url).await;
    let rows = sqlx::query(
        "SELECT CAST(id AS TEXT) AS id, CAST(at AS TEXT) AS at, principal, key_id, peer, action, \
         target, summary, outcome FROM audit_log ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let rows = rows
        .iter()
        .map(|r| {
            (0..9)
                .map(|i| r.try_get::<String, _>(i).unwrap())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    pool.close().await;
    rows
}

/// Every secret hash (current and previous) the store holds.
async fn stored_hashes(url: &str) -> Vec<String> {
    let pool = raw_pool(url).await;
    let rows = sqlx::query("SELECT secret_hash, previous_secret_hash FROM api_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut hashes = Vec::new();
    for r in &rows {
        hashes.push(r.try_get::<String, _>(0).unwrap());
        if let Some(previous) = r.try_get::<Option<String>, _>(1).unwrap() {
            hashes.push(previous);
        }
    }
    pool.close().await;
    hashes
}

/// The owner's key id: the one in the owner's token.
fn key_id_of(token: &str) -> String {
    keyward::token::Token::parse(token)
        .unwrap()
        .key_id
        .to_owned()
}

async fn scripted_session_leaves_the_expected_trail(keyward: &Keyward) {
    let owner = Cli::owner(keyward);
    let owner_key = key_id_of(&keyward.owner_token);

    owner.ok(&["projects", "create", "acme"]);
    owner.ok(&[
        "deployments",
        "create",
        "acme/bot",
        "--model",
        "llama-3.1-8b",
    ]);
    owner.ok(&["apps", "create", "ci"]);
    owner.ok(&[
        "policies",
        "create",
        "ci-read",
        "--principal",
        "app:ci",
        "--projects",
        "acme",
        "--sets",
        "InferenceReadOnly",
    ]);
    let (data_id, data_token) = created_key(&owner.json(&[
        "keys", "create", "--plane", "data", "--scope", "acme/bot", "--name", "bot",
    ]));
    let (ci_id, _) = created_key(&owner.json(&[
        "keys", "create", "--plane", "control", "--scope", "acme", "--name", "ci", "--bearer",
        "app:ci",
    ]));
    owner.ok(&["keys", "revoke", &data_id]);
    owner.ok(&["deployments", "set-auth", "acme/bot", "--private", "off"]);
    let (_, ci_token) = created_key(&owner.json(&["keys", "rotate", &ci_id]));
    owner.ok(&["keys", "update", &ci_id, "--name", "ci2"]);
    owner.ok(&["workloads", "register", "w-1", "--project", "acme"]);
    owner.ok(&[
        "routes",
        "add",
        "--host",
        "api.example.com",
        "--prefix",
        "/v1/chat",
        "--deployment",
        "acme/bot",
    ]);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "[[members]]\nemail = \"alice@example.com\"\n").unwrap();
    owner.ok(&["apply", "-f", file.path().to_str().unwrap()]);
    owner.ok(&["apply", "-f", file.path().to_str().unwrap(), "--dry-run"]);
    owner.ok(&["keys", "delete", &data_id]);
    // A write that fails (the project exists) leaves no record: the record is in its
    // transaction.
    owner.fails(&["projects", "create", "acme"], "already exists");
    // A local command on the store itself.
    let recovered = std::process::Command::new(KEYWARD_BIN)
        .args([
            "init",
            "--recover",
            "--database",
            &keyward.database_url,
            "--output",
            "json",
        ])
        .env_remove("KEYWARD_CONFIG")
        .output()
        .unwrap();
    assert!(recovered.status.success(), "{recovered:?}");
    let recovered: Value = serde_json::from_slice(&recovered.stdout).unwrap();
    let recovered_token = recovered["token"].as_str().unwrap().to_owned();
    let recovered_id = key_id_of(&recovered_token);
    let ci = Cli::with_token(keyward, &ci_token);
    // Denied: a project key creating a project; a key it may not see (reads as absent, and
    // the audit mark never reaches the caller); reading the audit without audit.read.
    ci.fails(&["projects", "create", "beta"], "organization");
    ci.fails(&["keys", "revoke", &owner_key], "not found");
    ci.fails(&["audit", "list"], "organization");

    let trail = owner.audit(&[]);
    // Principals' ids are whatever the store gave them: `principal:N`.
    let principal_id = |t: String| match t.strip_prefix("principal:") {
        Some(id) if id.bytes().all(|b| b.is_ascii_digit()) => "principal:N".to_owned(),
        _ => t,
    };
    let got: Vec<(String, String, String, String, String)> = trail
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_owned();
            (
                s("action"),
                s("outcome"),
                s("principal"),
                s("key_id"),
                principal_id(s("target")),
            )
        })
        .collect();
    let row = |action: &str, outcome: &str, principal: &str, key: &str, target: &str| {
        (
            action.to_owned(),
            outcome.to_owned(),
            principal.to_owned(),
            key.to_owned(),
            target.to_owned(),
        )
    };
    let app_target = "principal:N";
    let expected = vec![
        row(
            "init",
            "ok",
            "",
            "",
            &format!("principal:1, key:{owner_key}"),
        ),
        row("create_project", "ok", "owner", &owner_key, "project:acme"),
        row(
            "create_deployment",
            "ok",
            "owner",
            &owner_key,
            "deployment:acme/bot",
        ),
        row("create_application", "ok", "owner", &owner_key, app_target),
        row("put_policy", "ok", "owner", &owner_key, "policy:ci-read"),
        row(
            "create_key",
            "ok",
            "owner",
            &owner_key,
            &format!("key:{data_id}"),
        ),
        row(
            "create_key",
            "ok",
            "owner",
            &owner_key,
            &format!("key:{ci_id}"),
        ),
        row(
            "revoke_key",
            "ok",
            "owner",
            &owner_key,
            &format!("key:{data_id}"),
        ),
        row(
            "set_deployment_auth",
            "ok",
            "owner",
            &owner_key,
            "deployment:acme/bot",
        ),
        row(
            "rotate_key",
            "ok",
            "owner",
            &owner_key,
            &format!("key:{ci_id}"),
        ),
        row(
            "update_key",
            "ok",
            "owner",
            &owner_key,
            &format!("key:{ci_id}"),
        ),
        row(
            "register_workload",
            "ok",
            "owner",
            &owner_key,
            "workload:w-1",
        ),
        row(
            "put_route",
            "ok",
            "owner",
            &owner_key,
            "route:api.example.com/v1/chat",
        ),
        row("apply", "ok", "owner", &owner_key, "principal:N"),
        row(
            "delete_key",
            "ok",
            "owner",
            &owner_key,
            &format!("key:{data_id}"),
        ),
        row("init_recover", "ok", "", "", &format!("key:{recovered_id}")),
        row("create_project", "denied", "app:ci", &ci_id, "project:beta"),
        row(
            "revoke_key",
            "denied",
            "app:ci",
            &ci_id,
            &format!("key:{owner_key}"),
        ),
        row("list_audit", "denied", "app:ci", &ci_id, ""),
    ];
    assert_eq!(got, expected);

    // What and where: summaries describe the change; remote calls come from the CLI's address.
    let summary = |i: usize| trail[i]["summary"].as_str().unwrap().to_owned();
    for (i, record) in trail.iter().enumerate() {
        let peer = record["peer"].as_str().unwrap();
        match i {
            0 | 15 => assert_eq!(peer, "local"),
            _ => assert!(peer.starts_with("127.0.0.1:"), "{peer}"),
        }
        assert!(record["at"].as_str().unwrap().ends_with('Z'), "{record}");
    }
    assert_eq!(summary(1), "project acme created");
    assert!(summary(2).contains("model llama-3.1-8b"), "{}", summary(2));
    assert_eq!(summary(3), "+ application ci");
    assert!(summary(4).contains("+ policy ci-read"), "{}", summary(4));
    assert!(summary(5).contains("scope acme/bot"), "{}", summary(5));
    assert!(summary(6).contains("for app:ci"), "{}", summary(6));
    assert_eq!(summary(7), "revoked");
    assert_eq!(summary(8), "deployment acme/bot, private_auth off");
    assert_eq!(summary(9), "rotated; the previous secret stopped at once");
    assert_eq!(summary(10), "updated: name \"ci2\"");
    assert_eq!(summary(11), "+ workload w-1 (project acme)");
    assert!(
        summary(12).contains("deployment acme/bot"),
        "{}",
        summary(12)
    );
    assert_eq!(summary(13), "+ member alice@example.com");
    assert_eq!(summary(14), "deleted");
    assert_eq!(summary(15), format!("owner key {recovered_id} minted"));
    assert!(summary(16).contains("organization"), "{}", summary(16));
    assert_eq!(summary(17), format!("key {owner_key} not found"));
    assert!(summary(18).contains("organization"), "{}", summary(18));

    // Filters, server side.
    let actions = |records: Vec<Value>| -> Vec<String> {
        records
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r["action"].as_str().unwrap(),
                    r["outcome"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        actions(owner.audit(&["--principal", "app:ci"])),
        [
            "create_project/denied",
            "revoke_key/denied",
            "list_audit/denied"
        ]
    );
    assert_eq!(
        actions(owner.audit(&["--action", "revoke_key"])),
        ["revoke_key/ok", "revoke_key/denied"]
    );
    assert_eq!(
        actions(owner.audit(&["--target", "acme/bot"])),
        ["create_deployment/ok", "set_deployment_auth/ok"]
    );
    assert_eq!(
        actions(owner.audit(&["--target", &data_id, "--principal", "owner"])),
        ["create_key/ok", "revoke_key/ok", "delete_key/ok"]
    );
    assert!(owner.audit(&["--since", "2999-01-01"]).is_empty());
    assert_eq!(owner.audit(&["--since", "1h"]).len(), trail.len());
    // Pages: two records a page, oldest first, every record once.
    let first = owner.run(&["audit", "list", "--output", "json", "--limit", "2"]);
    let stderr = String::from_utf8_lossy(&first.stderr).to_string();
    let token = stderr
        .trim()
        .strip_prefix("more records: --page-token ")
        .unwrap_or_else(|| panic!("{stderr}"));
    let second = owner.audit(&["--limit", "2", "--page-token", token]);
    assert_eq!(second[0]["id"], trail[2]["id"]);
    owner.fails(&["audit", "list", "--since", "yesterday"], "--since");

    // No token, secret or hash in any column of any row, as stored.
    let rows = raw_audit_rows(&keyward.database_url).await;
    assert_eq!(rows.len(), trail.len());
    let mut secrets = vec![
        keyward.owner_token.clone(),
        data_token,
        ci_token,
        recovered_token,
    ];
    for token in secrets.clone() {
        // The secret and its checksum: what follows the key id.
        secrets.push(token.rsplit('_').next().unwrap().to_owned());
    }
    secrets.extend(stored_hashes(&keyward.database_url).await);
    for row in &rows {
        for secret in &secrets {
            assert!(!row.contains(secret.as_str()), "a secret in {row}");
        }
        assert!(!row.contains("$argon2"), "a hash in {row}");
        assert!(
            !row.contains("ik_sdk_") && !row.contains("ik_live_"),
            "{row}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_session_is_audited_on_sqlite() {
    let keyward = Keyward::start().await;
    scripted_session_leaves_the_expected_trail(&keyward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_session_is_audited_on_postgres() {
    let keyward = Keyward::start_postgres().await;
    scripted_session_leaves_the_expected_trail(&keyward).await;
}

/// An audit record as old as `days`, written as a write path would.
async fn old_record(keyward: &Keyward, days: i64, action: &str) {
    let record = keyward::audit::Record {
        at: keyward::clock::now_unix() - days * 86_400,
        principal: "owner".into(),
        key_id: String::new(),
        peer: "local".into(),
        action: action.into(),
        target: String::new(),
        summary: String::new(),
        outcome: keyward::audit::Outcome::Ok,
    };
    keyward.services.store.append_audit(&record).await.unwrap();
}

async fn retention_is_enforced_by_the_server(database_url: &str, owner_token: String) {
    // A first server writes records of various ages and stops.
    let mut config = test_config(database_url);
    let mut first = Keyward::on(config.clone(), owner_token.clone()).await;
    old_record(&first, 40, "ancient").await;
    old_record(&first, 20, "recent").await;
    first.stop().await;
    // A server keeping 30 days prunes the older one on its own, and keeps the rest.
    config.audit.retention_days = 30;
    let keyward = Keyward::on(config, owner_token).await;
    let owner = Cli::owner(&keyward);
    eventually(
        "the upkeep task prunes the audit log",
        Duration::from_secs(20),
        || async {
            let actions: Vec<String> = owner
                .audit(&[])
                .iter()
                .map(|r| r["action"].as_str().unwrap().to_owned())
                .collect();
            (!actions.contains(&"ancient".to_owned())).then_some(actions)
        },
    )
    .await
    .contains(&"recent".to_owned())
    .then_some(())
    .expect("records within the retention are kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_records_are_pruned_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("keyward.db").display());
    let token = init(&sqlite).await;
    retention_is_enforced_by_the_server(&sqlite, token).await;
    let postgres = PgDatabase::create().await;
    let token = init(&postgres.url).await;
    retention_is_enforced_by_the_server(&postgres.url, token).await;
}

/// Two replicas writing last use every second.
async fn replicas(database_url: &str, owner_token: &str) -> (Keyward, Keyward) {
    let config = |url: &str| -> Config {
        let mut config = test_config(url);
        config.usage.flush_interval_secs = 1;
        config
    };
    let a = Keyward::on(config(database_url), owner_token.to_owned()).await;
    let b = Keyward::on(config(database_url), owner_token.to_owned()).await;
    (a, b)
}

fn ids(listed: &Value) -> Vec<String> {
    let mut ids: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    ids.sort();
    ids
}

async fn keys_as_a_user_looks_for_them(database_url: &str, owner_token: &str) {
    let (a, b) = replicas(database_url, owner_token).await;
    let on_a = Cli::with_token(&a, owner_token);
    let on_b = Cli::with_token(&b, owner_token);
    on_a.ok(&["projects", "create", "acme"]);
    for d in ["acme/bot", "acme/chat"] {
        on_a.ok(&["deployments", "create", d, "--model", "m"]);
    }
    let now = keyward::clock::now_unix();
    let day = |days: i64| {
        time::OffsetDateTime::from_unix_timestamp(now + days * 86_400)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let create = |scope: &str, expires: Option<String>| {
        let mut args = vec!["keys", "create", "--plane", "data", "--scope", scope];
        let expires = expires.unwrap_or_else(|| "never".into());
        args.extend(["--expires", &expires]);
        created_key(&on_a.json(&args))
    };
    let (bot, bot_token) = create("acme/bot", None);
    let (project, _) = create("acme/*", None);
    let (soon, _) = create("acme/chat", Some(day(3)));
    let (later, _) = create("acme/chat", Some(day(30)));

    // By deployment: attached to it, or to its whole project.
    let listed = on_b.json(&["keys", "list", "--deployment", "acme/bot"]);
    assert_eq!(ids(&listed), sorted(&[&bot, &project]));
    on_b.fails(&["keys", "list", "--deployment", "acme"], "PROJECT/SLUG");

    // Expiring within 7 days: the filter, the JSON field, the table's mark and stderr's line.
    let listed = on_b.json(&["keys", "list", "--expiring", "7d"]);
    assert_eq!(ids(&listed), sorted(&[&soon]));
    let all = on_b.json(&["keys", "list"]);
    for key in all.as_array().unwrap() {
        let expected = key["id"] == soon.as_str();
        assert_eq!(key["expiring_soon"], expected, "{key}");
    }
    let out = on_b.run(&["keys", "list"]);
    let (table, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let marked: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("EXPIRES SOON"))
        .collect();
    assert!(marked.len() == 1 && marked[0].contains(&soon), "{table}");
    assert!(
        stderr.contains("warning: 1 key expires within 7 days") && stderr.contains(&soon),
        "{stderr}"
    );
    assert!(!stderr.contains(&later), "{stderr}");
    // JSON carries the field instead: stdout stays one document and stderr stays quiet.
    let json = on_b.run(&["keys", "list", "--output", "json"]);
    assert!(json.status.success() && json.stderr.is_empty(), "{json:?}");

    // Unused for 30 days, by last use on any replica. The keys were made 90 days old.
    let pool = raw_pool(database_url).await;
    sqlx::query("UPDATE api_keys SET created_at = created_at - 7776000 WHERE plane = 'data'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let stale = on_b.json(&["keys", "list", "--unused-for", "30d"]);
    assert_eq!(ids(&stale), sorted(&[&bot, &project, &soon, &later]));
    // The bot key is used through replica A's Check; replica B learns it from the store once A
    // has written its batch (at most usage.flush_interval_secs later).
    let mut check = a.check_client().await;
    assert_eq!(
        data_status(&mut check, "acme/bot", Some(&bot_token)).await,
        200
    );
    eventually(
        "replica B sees A's last use",
        Duration::from_secs(20),
        || async {
            let stale = on_b.json(&["keys", "list", "--unused-for", "30d"]);
            (ids(&stale) == sorted(&[&project, &soon, &later])).then_some(())
        },
    )
    .await;
    let shown = on_b.json(&["keys", "show", &bot]);
    assert_ne!(shown[0]["last_used_at"], "-", "{shown}");
    // Filters combine, and page like an unfiltered list.
    let both = on_b.json(&[
        "keys",
        "list",
        "--deployment",
        "acme/bot",
        "--unused-for",
        "30d",
    ]);
    assert_eq!(ids(&both), sorted(&[&project]));
    let page = on_b.json(&["keys", "list", "--unused-for", "30d", "--limit", "1"]);
    assert_eq!(page.as_array().unwrap().len(), 1);
    on_b.fails(
        &["keys", "list", "--unused-for", "30 days"],
        "invalid duration",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_found_by_deployment_expiry_and_use_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keyward.db").display());
    let token = init(&url).await;
    keys_as_a_user_looks_for_them(&url, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_found_by_deployment_expiry_and_use_on_postgres() {
    let postgres = PgDatabase::create().await;
    let token = init(&postgres.url).await;
    keys_as_a_user_looks_for_them(&postgres.url, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_denial_reads_as_absent_and_is_audited() {
    let keyward = Keyward::start().await;
    let mut owner = keyward.admin().await;
    owner.project("acme").await;
    owner
        .client
        .create_application(keyward::pb::CreateApplicationRequest { name: "ci".into() })
        .await
        .unwrap();
    let mut request = support::key_request(keyward::pb::Plane::Control, &["acme"], None);
    request.bearer = "app:ci".into();
    let ci_token = owner
        .client
        .create_key(request)
        .await
        .unwrap()
        .into_inner()
        .token;
    let owner_key = key_id_of(&keyward.owner_token);
    let mut ci = support::Admin::connect(keyward.admin, &ci_token).await;
    let hidden = ci
        .client
        .revoke_key(keyward::pb::RevokeKeyRequest {
            id: owner_key.clone(),
        })
        .await
        .unwrap_err();
    let absent = ci
        .client
        .revoke_key(keyward::pb::RevokeKeyRequest {
            id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
        })
        .await
        .unwrap_err();
    // The caller cannot tell the hidden key from an absent one: same code, no extra metadata.
    assert_eq!(hidden.code(), tonic::Code::NotFound);
    assert_eq!(absent.code(), tonic::Code::NotFound);
    let names = |s: &tonic::Status| -> Vec<String> {
        s.metadata()
            .keys()
            .map(|k| format!("{k:?}"))
            .filter(|k| k.contains("keyward"))
            .collect()
    };
    assert!(names(&hidden).is_empty(), "{:?}", hidden.metadata());
    assert_eq!(names(&hidden), names(&absent));
    // Only the hidden one was an access denial; the absent key is a plain failure.
    let denied = keyward
        .services
        .store
        .list_audit(
            &keyward::audit::Filter {
                action: "revoke_key".into(),
                ..Default::default()
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].record.target, format!("key:{owner_key}"));
    assert_eq!(denied[0].record.outcome, keyward::audit::Outcome::Denied);
}
