//! The `keyward` binary as users run it: against a running server, with bad input named in one
//! line and a non-zero exit, and nothing stored lost.

mod support;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use serde_json::Value;
use support::cli::Cli;
use support::{KEYWARD_BIN, Keyward, check_request, http_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_lifecycle_through_the_cli() {
    let keyward = Keyward::start().await;
    let cli = Cli::owner(&keyward);
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
    let cli = Cli::owner(&keyward);
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
    let cli = Cli::owner(&keyward);
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

/// What keyward decides for a Check with no context extensions (so the route table routes it)
/// for `host` and `path`: the HTTP status and, when denied, the error code.
async fn routed_check(keyward: &Keyward, host: &str, path: &str, token: &str) -> (u16, String) {
    let bearer = format!("Bearer {token}");
    let mut request = check_request(&[], &[("authorization", bearer.as_str())]);
    let http = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    http.host = host.to_owned();
    http.path = path.to_owned();
    let mut client = AuthorizationClient::connect(format!("http://{}", keyward.check))
        .await
        .unwrap();
    let response = client.check(request).await.unwrap().into_inner();
    let code = match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => {
            let body: Value = serde_json::from_str(&denied.body).unwrap();
            body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
        _ => String::new(),
    };
    (http_status(&response), code)
}

const API_HOST: &str = "api.example.com";
const CHAT_PATH: &str = "/v1/chat/completions";

/// `keyward routes add|list|remove`, `apply` and `export` against a real server: each change
/// decides the very next Check that carries no context extensions.
async fn routes_through_the_cli(keyward: Keyward) {
    let cli = Cli::owner(&keyward);
    cli.ok(&["projects", "create", "acme"]);
    cli.ok(&["deployments", "create", "acme/chat", "--model", "m"]);
    let key = cli.json(&["keys", "create", "--plane", "data", "--scope", "acme/chat"]);
    let token = key["token"].as_str().unwrap();
    let owner = keyward.owner_token.as_str();
    let decide = |host: &'static str, path: &'static str, token: &str| {
        let token = token.to_owned();
        let keyward = &keyward;
        async move { routed_check(keyward, host, path, &token).await }
    };
    let unrouted = (403, "route_not_configured".to_owned());
    let allowed = (200, String::new());
    assert_eq!(decide(API_HOST, CHAT_PATH, token).await, unrouted);

    let added = cli.json(&[
        "routes",
        "add",
        "--host",
        "API.example.com",
        "--prefix",
        "/v1/chat",
        "--deployment",
        "acme/chat",
        "--endpoint",
        "public",
    ]);
    assert_eq!(added[0]["host"], API_HOST, "normalized: {added}");
    assert_eq!(added[0]["plane"], "data", "{added}");
    assert_eq!(decide(API_HOST, CHAT_PATH, token).await, allowed);
    assert_eq!(
        decide("api.example.com:8443", "/v1/chat", token).await,
        allowed
    );
    assert_eq!(
        decide("other.example.com", CHAT_PATH, token).await,
        unrouted
    );
    assert_eq!(decide(API_HOST, "/v1/chatty", token).await, unrouted);

    cli.ok(&[
        "routes",
        "add",
        "--host",
        "ops.example.com",
        "--prefix",
        "/api",
        "--control-project",
        "acme",
    ]);
    let workloads = "/api/projects/acme/workloads";
    assert_eq!(decide("ops.example.com", workloads, owner).await, allowed);
    assert_eq!(
        decide("ops.example.com", workloads, token).await.1,
        "wrong_plane"
    );

    let table = cli.ok(&["routes", "list"]);
    assert!(
        table.starts_with("HOST") && table.contains("acme/chat") && table.contains("project acme"),
        "{table}"
    );
    let listed = cli.json(&["routes", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed[0]["deployment"], "acme/chat", "{listed}");
    assert_eq!(listed[1]["plane"], "control", "{listed}");
    assert_eq!(listed[1]["control_project"], "acme", "{listed}");

    // Bad input is named; nothing stored is lost.
    let add = |host: &'static str, prefix: &'static str, target: [&'static str; 2]| {
        let mut args = vec!["routes", "add", "--host", host, "--prefix", prefix];
        args.extend(target);
        args
    };
    let chat = ["--deployment", "acme/chat"];
    cli.fails(&add(API_HOST, "/v1/chat/", chat), "already exists");
    cli.fails(
        &add("a.*.com", "/v1", chat),
        "invalid route host \"a.*.com\"",
    );
    cli.fails(&add(API_HOST, "v1", chat), "must start with /");
    cli.fails(
        &add(API_HOST, "/v2", ["--deployment", "acme/ghost"]),
        "deployment acme/ghost not found",
    );
    cli.fails(
        &add(API_HOST, "/v2", ["--control-project", "ghost"]),
        "project ghost not found",
    );
    cli.fails(
        &["routes", "remove", "--host", API_HOST, "--prefix", "/v2"],
        "not found",
    );
    let mut private = add(API_HOST, "/v1/chat", chat);
    private.extend(["--endpoint", "private", "--replace"]);
    assert_eq!(cli.json(&private)[0]["endpoint"], "private");
    assert_eq!(cli.json(&["routes", "list"]).as_array().unwrap().len(), 2);

    // export shows the table; remove unroutes; applying the export restores it.
    let exported = cli.ok(&["export"]);
    assert!(
        exported.contains(
            "[[routes]]\nhost = \"api.example.com\"\npath_prefix = \"/v1/chat\"\n\
             endpoint = \"private\"\ndeployment = \"acme/chat\"\n"
        ) && exported.contains("control_project = \"acme\""),
        "{exported}"
    );
    let removed = cli.ok(&[
        "routes", "remove", "--host", API_HOST, "--prefix", "/v1/chat",
    ]);
    assert!(
        removed.contains("removed route api.example.com/v1/chat"),
        "{removed}"
    );
    assert_eq!(decide(API_HOST, CHAT_PATH, token).await, unrouted);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.toml");
    std::fs::write(&file, &exported).unwrap();
    let file = file.to_str().unwrap();
    let applied = cli.ok(&["apply", "-f", file]);
    assert_eq!(
        applied.trim(),
        "+ route api.example.com/v1/chat (private, deployment acme/chat)",
        "only the removed route is new"
    );
    assert_eq!(decide(API_HOST, CHAT_PATH, token).await, allowed);
    assert_eq!(cli.ok(&["export"]), exported, "the round trip is exact");
    assert_eq!(cli.ok(&["apply", "-f", file]).trim(), "no changes");

    // --prune removes the routes a file leaves out.
    std::fs::write(
        dir.path().join("bare.toml"),
        "[[projects]]\nslug = \"acme\"\n",
    )
    .unwrap();
    let bare = dir.path().join("bare.toml");
    let pruned = cli.ok(&["apply", "--prune", "-f", bare.to_str().unwrap()]);
    assert!(
        pruned.contains("- route api.example.com/v1/chat")
            && pruned.contains("- route ops.example.com/api"),
        "{pruned}"
    );
    assert_eq!(decide(API_HOST, CHAT_PATH, token).await, unrouted);
    assert_eq!(decide("ops.example.com", workloads, owner).await, unrouted);

    // routes.manage: an application with inference rights on every project may not touch the
    // table; one holding only routes.manage on the organization may, and nothing more.
    let principals = r#"
[[applications]]
name = "deployer"

[[applications]]
name = "router"

[[permission_sets]]
name = "RouteOperator"
actions = ["routes.manage"]

[[policies]]
name = "deployer-everywhere"
principal = "app:deployer"

  [[policies.rules]]
  all_projects = true
  permission_sets = ["InferenceFullAccess"]

[[policies]]
name = "router-routes"
principal = "app:router"

  [[policies.rules]]
  organization = true
  permission_sets = ["RouteOperator"]
"#;
    let principals_file = dir.path().join("principals.toml");
    std::fs::write(&principals_file, principals).unwrap();
    cli.ok(&["apply", "-f", principals_file.to_str().unwrap()]);
    let control_key = |bearer: &str| {
        let key = cli.json(&[
            "keys", "create", "--plane", "control", "--scope", "*", "--bearer", bearer,
        ]);
        key["token"].as_str().unwrap().to_owned()
    };
    let deployer_token = control_key("app:deployer");
    let router_token = control_key("app:router");
    let deployer = Cli::with_token(&keyward, &deployer_token);
    let missing = "missing permission routes.manage on the organization";
    deployer.fails(&add(API_HOST, "/v1/chat", chat), missing);
    deployer.fails(&["routes", "list"], missing);
    deployer.fails(
        &[
            "routes", "remove", "--host", API_HOST, "--prefix", "/v1/chat",
        ],
        missing,
    );
    let mut grpc = support::Admin::connect(keyward.admin, &deployer_token).await;
    let denied = grpc
        .client
        .list_routes(keyward::pb::ListRoutesRequest {})
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert_eq!(decide(API_HOST, CHAT_PATH, token).await, unrouted);

    let router = Cli::with_token(&keyward, &router_token);
    router.ok(&add(API_HOST, "/v1/chat", chat));
    assert_eq!(decide(API_HOST, CHAT_PATH, token).await, allowed);
    router.fails(&["apps", "create", "intruder"], "iam.manage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_through_the_cli_on_sqlite() {
    routes_through_the_cli(Keyward::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_through_the_cli_on_postgres() {
    routes_through_the_cli(Keyward::start_postgres().await).await;
}
