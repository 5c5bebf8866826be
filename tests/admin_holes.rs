//! The admin API's own authorization holes (issue 16, findings 1-5), each reproduced through a
//! real gRPC client against a real server and store.

mod support;

use std::time::Duration;

use keyward::clock::now_unix;
use keyward::pb::{self, Plane, expiry};
use keyward::store::Change;
use support::{Admin, KEYWARD_BIN, Keyward};
use tokio::process::Command;
use tonic::Code;

fn rule(sets: &[&str], scope: impl FnOnce(&mut pb::Rule)) -> pb::Rule {
    let mut rule = pb::Rule {
        permission_sets: sets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    scope(&mut rule);
    rule
}

async fn grant(owner: &mut Admin, name: &str, principal: &str, rule: pb::Rule) {
    owner
        .client
        .put_policy(pb::Policy {
            name: name.into(),
            description: String::new(),
            principal: principal.into(),
            rules: vec![rule],
        })
        .await
        .unwrap();
}

fn create_key(bearer: &str, plane: Plane, scope: &[&str], at: Option<i64>) -> pb::CreateKeyRequest {
    pb::CreateKeyRequest {
        plane: plane as i32,
        scope: scope.iter().map(|s| s.to_string()).collect(),
        bearer: bearer.into(),
        expiry: at.map(|at| pb::Expiry {
            kind: Some(expiry::Kind::At(at)),
        }),
        ..Default::default()
    }
}

/// A control key borne by `bearer`, minted by the owner; connected.
async fn connect_as(keyward: &Keyward, owner: &mut Admin, bearer: &str, scope: &str) -> Admin {
    let created = owner
        .client
        .create_key(create_key(bearer, Plane::Control, &[scope], None))
        .await
        .unwrap()
        .into_inner();
    Admin::connect(keyward.admin, &created.token).await
}

/// An IAM manager (ops, AllProductsFullAccess on the organization) with an organization key.
async fn manager(keyward: &Keyward, owner: &mut Admin) -> Admin {
    let manage = rule(&["AllProductsFullAccess"], |r| r.organization = true);
    app(keyward, owner, "ops", manage, "*").await
}

/// Application `name` with one policy of `rule`, connected with a control key of `scope`.
async fn app(
    keyward: &Keyward,
    owner: &mut Admin,
    name: &str,
    rule: pb::Rule,
    scope: &str,
) -> Admin {
    owner
        .client
        .create_application(pb::CreateApplicationRequest { name: name.into() })
        .await
        .unwrap();
    let principal = format!("app:{name}");
    grant(owner, name, &principal, rule).await;
    connect_as(keyward, owner, &principal, scope).await
}

fn assert_denied(err: &tonic::Status, message: &str) {
    assert_eq!(
        (err.code(), err.message()),
        (Code::PermissionDenied, message)
    );
}

async fn run_init(args: &[&str]) -> std::process::Output {
    Command::new(KEYWARD_BIN)
        .arg("init")
        .args(args)
        .output()
        .await
        .expect("run keyward init")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iam_manager_cannot_become_the_owner() {
    let keyward = Keyward::start().await;
    let mut owner = keyward.admin().await;
    owner.project("acme").await;
    let mut ops = manager(&keyward, &mut owner).await;
    let owner_key = owner
        .client
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
        .key_id;

    let err = ops
        .client
        .create_key(create_key("owner", Plane::Control, &["*"], None))
        .await
        .expect_err("an IAM manager mints no owner-borne key");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(err.message(), "only the owner manages the owner's keys");
    let err = ops
        .client
        .create_key(create_key("owner", Plane::Data, &["acme/*"], None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let id = || owner_key.clone();
    let denied = [
        ops.client
            .revoke_key(pb::RevokeKeyRequest { id: id() })
            .await
            .map(drop),
        ops.client
            .delete_key(pb::DeleteKeyRequest { id: id() })
            .await
            .map(drop),
        ops.client
            .rotate_key(pb::RotateKeyRequest {
                id: id(),
                grace_seconds: 0,
            })
            .await
            .map(drop),
        ops.client
            .update_key(pb::UpdateKeyRequest {
                id: id(),
                name: Some("mine now".into()),
                ..Default::default()
            })
            .await
            .map(drop),
    ];
    for (call, result) in ["revoke", "delete", "rotate", "update"].iter().zip(denied) {
        let err = result.expect_err(call);
        assert_eq!(err.code(), Code::PermissionDenied, "{call}: {err:?}");
    }
    // The owner's key is untouched and still works; the manager still manages the rest.
    let shown = owner
        .client
        .get_key(pb::GetKeyRequest { id: id() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (shown.revoked_at, shown.name.as_str()),
        (None, "owner bootstrap")
    );
    ops.client
        .create_key(create_key("app:ops", Plane::Data, &["acme/*"], None))
        .await
        .expect("a manager still mints keys for principals other than the owner");
    // The owner manages its own keys.
    let created = owner
        .client
        .create_key(create_key("owner", Plane::Control, &["*"], None))
        .await
        .unwrap()
        .into_inner();
    owner
        .client
        .delete_key(pb::DeleteKeyRequest {
            id: created.key.unwrap().id,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_out_owner_recovers_with_init_recover() {
    let keyward = Keyward::start().await;
    let mut owner = keyward.admin().await;
    let owner_key = owner
        .client
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
        .key_id;
    owner.revoke(&owner_key).await;
    let url = keyward.database_url.as_str();

    let again = run_init(&["--database", url]).await;
    assert!(!again.status.success(), "plain init refuses a second time");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("init --recover"),
        "the refusal names the recovery path: {}",
        String::from_utf8_lossy(&again.stderr)
    );

    let recovered = run_init(&["--recover", "--database", url, "--output", "json"]).await;
    let stderr = String::from_utf8_lossy(&recovered.stderr);
    assert!(recovered.status.success(), "{stderr}");
    let printed: serde_json::Value = serde_json::from_slice(&recovered.stdout).unwrap();
    let token = printed["token"].as_str().unwrap();
    let key_id = printed["key_id"].as_str().unwrap();
    assert!(
        stderr.contains("owner key recovered") && stderr.contains(key_id),
        "an audit line names the new key: {stderr}"
    );
    assert!(
        !stderr.contains(token),
        "the token is never logged: {stderr}"
    );
    let me = Admin::connect(keyward.admin, token)
        .await
        .client
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("the recovered owner key works at once")
        .into_inner();
    assert_eq!(
        (me.principal_kind.as_str(), me.scope.as_str()),
        ("owner", "*")
    );

    let dir = tempfile::tempdir().unwrap();
    let fresh = format!("sqlite://{}", dir.path().join("k.db").display());
    let refused = run_init(&["--recover", "--database", &fresh]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not initialized"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_update_is_checked_like_a_creation() {
    let keyward = Keyward::start().await;
    let mut owner = keyward.admin().await;
    for d in ["acme/bot", "beta/bot"] {
        owner.project(d.split('/').next().unwrap()).await;
        owner.deployment(d).await;
    }
    owner
        .client
        .add_member(pb::AddMemberRequest {
            email: "alice@example.com".into(),
        })
        .await
        .unwrap();
    grant(
        &mut owner,
        "alice",
        "user:alice@example.com",
        rule(&["InferenceFullAccess"], |r| {
            r.projects = vec!["acme".into()]
        }),
    )
    .await;
    let mut alice = connect_as(&keyward, &mut owner, "user:alice@example.com", "*").await;
    let key = |at| create_key("", Plane::Data, &["acme/bot"], at);
    let own = alice
        .client
        .create_key(key(None))
        .await
        .unwrap()
        .into_inner();
    let own_id = own.key.unwrap().id;

    let err = alice
        .client
        .update_key(pb::UpdateKeyRequest {
            id: own_id.clone(),
            attach: vec!["beta/bot".into()],
            ..Default::default()
        })
        .await
        .expect_err("alice has no rights on beta");
    assert_denied(&err, "missing permission inference.call on project beta");
    let err = alice
        .client
        .update_key(pb::UpdateKeyRequest {
            id: own_id.clone(),
            expiry: Some(pb::Expiry {
                kind: Some(expiry::Kind::At(now_unix() - 10)),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(err.message(), "the expiry is in the past");

    // An expired key is terminal, like a revoked one.
    let at = now_unix() + 1;
    let short = alice
        .client
        .create_key(key(Some(at)))
        .await
        .unwrap()
        .into_inner();
    let short_id = short.key.unwrap().id;
    support::eventually("the key to expire", Duration::from_secs(5), || async {
        (now_unix() > at).then_some(())
    })
    .await;
    let err = alice
        .client
        .update_key(pb::UpdateKeyRequest {
            id: short_id.clone(),
            expiry: Some(pb::Expiry {
                kind: Some(expiry::Kind::Never(true)),
            }),
            ..Default::default()
        })
        .await
        .expect_err("an expired key does not come back");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let shown = owner
        .client
        .get_key(pb::GetKeyRequest { id: short_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.expires_at, Some(at));

    // What creation allows, an update allows.
    let kept = alice
        .update(pb::UpdateKeyRequest {
            id: own_id,
            expiry: Some(pb::Expiry {
                kind: Some(expiry::Kind::At(now_unix() + 3600)),
            }),
            ..Default::default()
        })
        .await;
    assert_eq!(kept.scope, ["acme/bot"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_deployment_to_anonymous_callers_is_its_own_action() {
    let keyward = Keyward::start().await;
    let mut owner = keyward.admin().await;
    owner.project("acme").await;
    owner.deployment("acme/bot").await;
    let full = rule(&["InferenceFullAccess"], |r| r.all_projects = true);
    let mut deployer = app(&keyward, &mut owner, "deployer", full, "acme").await;
    let set_auth = |public: bool| pb::SetDeploymentAuthRequest {
        project: "acme".into(),
        slug: "bot".into(),
        public_auth: Some(public),
        private_auth: None,
    };
    let err = deployer
        .client
        .set_deployment_auth(set_auth(false))
        .await
        .expect_err("deployments.write does not open an endpoint");
    assert_denied(&err, "missing permission deployments.auth on project acme");
    let err = deployer
        .client
        .create_deployment(pb::CreateDeploymentRequest {
            project: "acme".into(),
            slug: "open".into(),
            model: "m".into(),
            public_auth: Some(false),
            private_auth: None,
        })
        .await
        .expect_err("nor creates an open one");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // Closing is always allowed with deployments.write.
    deployer
        .client
        .set_deployment_auth(set_auth(true))
        .await
        .unwrap();

    owner
        .client
        .put_permission_set(pb::PermissionSet {
            name: "Opener".into(),
            actions: vec!["deployments.auth".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    grant(
        &mut owner,
        "opener",
        "app:deployer",
        rule(&["Opener"], |r| r.projects = vec!["acme".into()]),
    )
    .await;
    let opened = deployer
        .client
        .set_deployment_auth(set_auth(false))
        .await
        .expect("granted explicitly")
        .into_inner();
    assert!(!opened.public_auth);
}

/// N writers each add one include to a ring of permission sets; together they would close a
/// cycle. Serialized, every write validates against the state the previous one left.
async fn concurrent_iam_writers_are_serialized(keyward: Keyward) {
    const N: usize = 6;
    let mut owner = keyward.admin().await;
    let name = |i: usize| format!("Ring{}", i % N);
    for i in 0..N {
        owner
            .client
            .put_permission_set(pb::PermissionSet {
                name: name(i),
                actions: vec!["deployments.read".into()],
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // Its own origin, so the server's change events read back as changes.
    let store = &keyward::store::Store::open(&keyward.database_url, 2)
        .await
        .unwrap();
    let before = store.latest_change().await.unwrap();
    let mut writers = Vec::new();
    for i in 0..N {
        let mut admin = keyward.admin().await;
        let set = pb::PermissionSet {
            name: name(i),
            actions: vec!["deployments.read".into()],
            includes: vec![name(i + 1)],
            ..Default::default()
        };
        writers.push(tokio::spawn(async move {
            admin.client.put_permission_set(set).await.map(drop)
        }));
    }
    let mut written = 0;
    for writer in writers {
        match writer.await.unwrap() {
            Ok(()) => written += 1,
            Err(err) => {
                assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
                assert!(err.message().contains("cycle"), "{err:?}");
            }
        }
    }
    assert_eq!(
        written,
        N - 1,
        "exactly the write closing the ring is refused"
    );
    let state = store.load_state().await.unwrap();
    keyward::state::validate(&state).expect("no cycle in the stored state");
    let events = store.changes_since(before, 1000).await.unwrap();
    let sets: Vec<_> = events
        .iter()
        .filter(|(_, c)| matches!(c, Some(Change::PermissionSet(_))))
        .collect();
    assert_eq!(
        sets.len(),
        written,
        "one change event per write: {events:?}"
    );
    // A non-owner decision still resolves its grants.
    owner
        .client
        .list_permission_sets(pb::ListPermissionSetsRequest {})
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_iam_writers_are_serialized_on_sqlite() {
    concurrent_iam_writers_are_serialized(Keyward::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_iam_writers_are_serialized_on_postgres() {
    concurrent_iam_writers_are_serialized(Keyward::start_postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_is_one_transaction() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    // The schema exists (a first run that failed later), and storing a key fails.
    let store = keyward::store::Store::open(&url, 1).await.unwrap();
    store.close().await;
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let trigger = "CREATE TRIGGER no_keys BEFORE INSERT ON api_keys \
                   BEGIN SELECT RAISE(ABORT, 'injected failure'); END";
    sqlx::query(trigger).execute(&mut conn).await.unwrap();
    let failed = run_init(&["--database", &url]).await;
    assert!(!failed.status.success());
    sqlx::query("DROP TRIGGER no_keys")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let retried = run_init(&["--database", &url, "--output", "json"]).await;
    assert!(
        retried.status.success(),
        "a failed init leaves nothing behind: {}",
        String::from_utf8_lossy(&retried.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_descriptions_are_bounded_and_printable() {
    let keyward = Keyward::start().await;
    let mut owner = keyward.admin().await;
    owner.project("acme").await;
    let key = |name: String, description: String| pb::CreateKeyRequest {
        name,
        description,
        ..create_key("", Plane::Control, &["acme"], None)
    };
    let cases = [
        (key("k".repeat(65_536), String::new()), "key name"),
        (key(String::new(), "d".repeat(2_500_000)), "key description"),
        (key("\u{1b}[2Jowned".into(), String::new()), "key name"),
        (
            key("ok".into(), "line\u{1b}]0;title\u{7}".into()),
            "key description",
        ),
    ];
    for (request, field) in cases {
        let err = owner
            .client
            .create_key(request)
            .await
            .map(drop)
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
        assert!(
            err.message().len() < 200,
            "the error does not echo the value"
        );
    }
    let created = owner
        .client
        .create_key(key("deploy bot".into(), "for CI\nrotated monthly".into()))
        .await
        .expect("ordinary text, with a newline in the description")
        .into_inner();
    let err = owner
        .client
        .update_key(pb::UpdateKeyRequest {
            id: created.key.unwrap().id,
            name: Some("x".repeat(129)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("key name"), "{}", err.message());
    for (set_description, policy_description, field) in [
        ("\u{1b}[31m", "", "permission set description"),
        ("", "p".repeat(5000).as_str(), "policy description"),
    ] {
        let err = owner
            .client
            .put_permission_set(pb::PermissionSet {
                name: "Reader".into(),
                description: set_description.into(),
                actions: vec!["deployments.read".into()],
                ..Default::default()
            })
            .await
            .and(
                owner
                    .client
                    .put_policy(pb::Policy {
                        name: "reader".into(),
                        description: policy_description.into(),
                        principal: String::new(),
                        rules: vec![rule(&["Reader"], |r| r.all_projects = true)],
                    })
                    .await
                    .map(drop)
                    .map(|_| tonic::Response::new(pb::PermissionSet::default())),
            )
            .unwrap_err();
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }
    let document = "[[permission_sets]]\nname = \"Reader\"\n\
                    description = \"\\u001b[2J\"\nactions = [\"deployments.read\"]\n";
    let err = owner
        .client
        .apply(pb::ApplyRequest {
            document: document.into(),
            dry_run: false,
            prune: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "line 1: permission set description contains control characters (escape sequences are not allowed)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_and_confusable_principal_names_are_refused() {
    let keyward = Keyward::start().await;
    // The owner is named by email.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    let init = run_init(&[
        "--database",
        &url,
        "--owner",
        "boss@example.com",
        "--output",
        "json",
    ])
    .await;
    assert!(init.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&init.stdout).unwrap();
    let mut config = support::test_config(&url);
    config.database.url = url.clone();
    let other = Keyward::on(config, printed["token"].as_str().unwrap().into()).await;
    let mut owner = other.admin().await;
    let err = owner
        .client
        .add_member(pb::AddMemberRequest {
            email: "boss@example.com".into(),
        })
        .await
        .map(drop)
        .expect_err("a member named like the owner could never be removed");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let err = owner
        .client
        .create_application(pb::CreateApplicationRequest {
            name: "anonymous".into(),
        })
        .await
        .expect_err("`anonymous` is what the backend sees for anonymous traffic");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Reading permission sets is IAM management; naming a bearer is authorized before the
    // bearer is looked up.
    let mut owner = keyward.admin().await;
    owner.project("acme").await;
    let read_only = rule(&["InferenceReadOnly"], |r| r.all_projects = true);
    let mut ci = app(&keyward, &mut owner, "ci", read_only, "acme").await;
    let err = ci
        .client
        .list_permission_sets(pb::ListPermissionSetsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    for bearer in ["user:ghost@example.com", "app:ops", "app:nobody"] {
        let err = ci
            .client
            .create_key(create_key(bearer, Plane::Data, &["acme/*"], None))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (
                Code::PermissionDenied,
                "missing permission iam.manage on the organization"
            ),
            "{bearer}: existing or not, the same answer"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_listed_in_pages() {
    let keyward = Keyward::start().await;
    let mut owner = keyward.admin().await;
    owner.project("acme").await;
    let read_only = rule(&["InferenceReadOnly"], |r| r.all_projects = true);
    let mut ci = app(&keyward, &mut owner, "ci", read_only, "acme").await;
    for _ in 0..6 {
        owner.key(Plane::Data, &["acme/*"]).await;
    }
    let own = ci
        .client
        .create_key(create_key("", Plane::Data, &["acme/*"], None))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .id;
    let list = |page_size: u32, page_token: String| pb::ListKeysRequest {
        project: String::new(),
        page_size,
        page_token,
        ..Default::default()
    };
    let all: Vec<String> = owner
        .client
        .list_keys(list(0, String::new()))
        .await
        .unwrap()
        .into_inner()
        .keys
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(
        all.len(),
        9,
        "owner bootstrap, ci's control key, 6 + 1 data keys"
    );
    let (mut paged, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = owner
            .client
            .list_keys(list(4, token))
            .await
            .unwrap()
            .into_inner();
        assert!(page.keys.len() <= 4);
        paged.extend(page.keys.into_iter().map(|k| k.id));
        pages += 1;
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!((paged, pages), (all, 3), "the same keys, in the same order");
    // A caller seeing 2 keys among 9 gets them in one page.
    let page = ci
        .client
        .list_keys(list(2, String::new()))
        .await
        .unwrap()
        .into_inner();
    let seen: Vec<_> = page.keys.iter().map(|k| k.id.as_str()).collect();
    assert!(seen.contains(&own.as_str()) && seen.len() == 2, "{seen:?}");
    for (request, message) in [
        (list(1001, String::new()), "page_size must be at most 1000"),
        (list(1, "x".into()), "invalid page_token"),
        (list(1, "1:../../".into()), "invalid page_token"),
    ] {
        let err = owner.client.list_keys(request).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::InvalidArgument, message)
        );
    }
}
