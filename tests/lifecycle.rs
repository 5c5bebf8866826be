//! Deployments and projects through their whole lifecycle (issue 15 items 1 and 4) and workload
//! ids unique per project (issue 16 finding 6), on both backends: private-only deployments
//! through a real Envoy in front of two replicas, updates, deletions and what they refuse, and
//! `/api/workloads/:id` resolved within the presenting key's own project.

mod support;

use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use keyward::pb::{self, Plane};
use reqwest::StatusCode;
use support::{Admin, Backend, Envoy, Keyward, check_request, eventually, http_status};
use tonic::Code;
use tonic::transport::Channel;

/// A liveness guard for cross-replica propagation, not a performance assertion.
const WATCHDOG: Duration = Duration::from_secs(15);

/// One Check as Envoy sends it: `method path` on a route with these context extensions.
async fn check(
    client: &AuthorizationClient<Channel>,
    extensions: &[(&str, &str)],
    method: &str,
    path: &str,
    token: Option<&str>,
) -> CheckResponse {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    let mut request = check_request(extensions, &headers);
    let http = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    http.method = method.into();
    http.path = path.into();
    client.clone().check(request).await.unwrap().into_inner()
}

async fn data(
    client: &AuthorizationClient<Channel>,
    endpoint: &str,
    deployment: &str,
    token: Option<&str>,
) -> u16 {
    let route = [
        ("plane", "data"),
        ("endpoint", endpoint),
        ("deployment", deployment),
    ];
    http_status(&check(client, &route, "POST", "/v1/chat/completions", token).await)
}

/// The status of `GET /api/workloads/:id` with `token`, and the project keyward resolved
/// (the `x-keyward-project` header it sets upstream) when allowed.
async fn workload(
    client: &AuthorizationClient<Channel>,
    id: &str,
    token: &str,
) -> (u16, Option<String>) {
    let route = [("plane", "control"), ("endpoint", "public")];
    let path = format!("/api/workloads/{id}");
    let response = check(client, &route, "GET", &path, Some(token)).await;
    let project = match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == "x-keyward-project")
            .map(|h| h.value.clone()),
        _ => None,
    };
    (http_status(&response), project)
}

async fn register(admin: &mut Admin, id: &str, project: &str) -> Result<(), tonic::Status> {
    admin
        .client
        .register_workload(pb::Workload {
            id: id.into(),
            project: project.into(),
        })
        .await
        .map(|_| ())
}

async fn set_public_endpoint(admin: &mut Admin, name: &str, enabled: bool) -> pb::Deployment {
    let (project, slug) = name.split_once('/').unwrap();
    admin
        .client
        .set_public_endpoint(pb::SetPublicEndpointRequest {
            project: project.into(),
            slug: slug.into(),
            enabled,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn delete_deployment(admin: &mut Admin, name: &str) -> Result<i64, tonic::Status> {
    let (project, slug) = name.split_once('/').unwrap();
    admin
        .client
        .delete_deployment(pb::DeleteDeploymentRequest {
            project: project.into(),
            slug: slug.into(),
        })
        .await
        .map(|r| r.into_inner().keys_detached)
}

async fn delete_project(admin: &mut Admin, slug: &str) -> Result<(), tonic::Status> {
    admin
        .client
        .delete_project(pb::DeleteProjectRequest { slug: slug.into() })
        .await
        .map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// Workload ids are unique per project (issue 16 finding 6).
// ---------------------------------------------------------------------------------------------

/// The same workload id registers in two projects (before: the second was refused, which told
/// project B that project A holds that id); each project's key reaches its own workload only;
/// an organization-wide key that reaches both is denied (ambiguous, fail closed).
async fn workload_ids_per_project(keyward: &Keyward) {
    let mut admin = keyward.admin().await;
    for p in ["acme", "beta", "gamma"] {
        admin.project(p).await;
    }
    register(&mut admin, "w-1", "acme").await.unwrap();
    register(&mut admin, "w-1", "beta")
        .await
        .expect("another project's id neither stands in the way nor is revealed");
    let again = register(&mut admin, "w-1", "acme").await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    let (_, acme) = admin.key(Plane::Control, &["acme"]).await;
    let (_, beta) = admin.key(Plane::Control, &["beta"]).await;
    let (_, gamma) = admin.key(Plane::Control, &["gamma"]).await;
    // A project-scoped key registering in its own project learns nothing about the others.
    let mut gamma_admin = Admin::connect(keyward.admin, &gamma).await;
    register(&mut gamma_admin, "w-1", "gamma").await.unwrap();
    let refused = register(&mut gamma_admin, "w-2", "acme").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let client = keyward.check_client().await;
    assert_eq!(
        workload(&client, "w-1", &acme).await,
        (200, Some("acme".into()))
    );
    assert_eq!(
        workload(&client, "w-1", &beta).await,
        (200, Some("beta".into()))
    );
    assert_eq!(
        workload(&client, "w-1", &gamma).await,
        (200, Some("gamma".into()))
    );
    assert_eq!(workload(&client, "w-9", &acme).await.0, 403, "unregistered");
    let owner = &keyward.owner_token;
    assert_eq!(
        workload(&client, "w-1", owner).await.0,
        403,
        "an organization key reaching three holders of w-1 is ambiguous: denied"
    );

    // Deleting beta's and gamma's w-1 leaves acme's alone; then the id is unambiguous.
    let several = admin
        .client
        .delete_workload(pb::DeleteWorkloadRequest {
            id: "w-1".into(),
            project: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(several.code(), Code::InvalidArgument, "{several:?}");
    for project in ["beta", "gamma"] {
        admin
            .client
            .delete_workload(pb::DeleteWorkloadRequest {
                id: "w-1".into(),
                project: project.into(),
            })
            .await
            .unwrap();
    }
    assert_eq!(workload(&client, "w-1", &beta).await.0, 403);
    assert_eq!(
        workload(&client, "w-1", &acme).await,
        (200, Some("acme".into()))
    );
    assert_eq!(
        workload(&client, "w-1", owner).await,
        (200, Some("acme".into()))
    );
    let listed = admin
        .client
        .list_workloads(pb::ListWorkloadsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workloads;
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[tokio::test]
async fn workload_ids_are_unique_per_project_on_sqlite() {
    workload_ids_per_project(&Keyward::start().await).await;
}

#[tokio::test]
async fn workload_ids_are_unique_per_project_on_postgres() {
    workload_ids_per_project(&Keyward::start_postgres().await).await;
}

// ---------------------------------------------------------------------------------------------
// Update and delete (issue 15 item 4).
// ---------------------------------------------------------------------------------------------

/// Deleting a deployment takes its keys' attachments with it: on the next request on the
/// writing replica (and, once the change has propagated, on `other`) its keys are denied,
/// `P/*` keys keep the other deployments, and a key attached elsewhere too keeps those.
async fn deployment_and_project_lifecycle(keyward: &Keyward, other: &Keyward) {
    let mut admin = keyward.admin().await;
    admin.project("acme").await;
    admin.deployment("acme/chat").await;
    admin.deployment("acme/embed").await;
    let (only_chat_id, only_chat) = admin.key(Plane::Data, &["acme/chat"]).await;
    let (both_id, both) = admin.key(Plane::Data, &["acme/chat", "acme/embed"]).await;
    let (_, project_wide) = admin.key(Plane::Data, &["acme/*"]).await;

    // Update: model and description; the project's description.
    let updated = admin
        .client
        .update_deployment(pb::UpdateDeploymentRequest {
            project: "acme".into(),
            slug: "chat".into(),
            model: Some("llama-3.1-70b".into()),
            description: Some("support assistant".into()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (updated.model.as_str(), updated.description.as_str()),
        ("llama-3.1-70b", "support assistant")
    );
    let bad = admin
        .client
        .update_deployment(pb::UpdateDeploymentRequest {
            project: "acme".into(),
            slug: "chat".into(),
            model: Some(" ".into()),
            description: None,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let project = admin
        .client
        .update_project(pb::UpdateProjectRequest {
            slug: "acme".into(),
            description: Some("Acme's assistants".into()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(project.description, "Acme's assistants");

    let clients = [keyward.check_client().await, other.check_client().await];
    for client in &clients {
        for (token, deployment) in [
            (&only_chat, "acme/chat"),
            (&both, "acme/chat"),
            (&both, "acme/embed"),
            (&project_wide, "acme/chat"),
        ] {
            assert_eq!(data(client, "public", deployment, Some(token)).await, 200);
        }
    }

    // A project-scoped control key of another project cannot delete it.
    admin.project("beta").await;
    let (_, beta) = admin.key(Plane::Control, &["beta"]).await;
    let denied = delete_deployment(&mut Admin::connect(keyward.admin, &beta).await, "acme/chat")
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    // Refused while a route table entry names it.
    admin
        .route("api.example.com", "/acme/chat", "public", Some("acme/chat"))
        .await;
    let refused = delete_deployment(&mut admin, "acme/chat")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("route"), "{refused:?}");
    admin.remove_route("api.example.com", "/acme/chat").await;

    assert_eq!(delete_deployment(&mut admin, "acme/chat").await.unwrap(), 2);
    let writer = &clients[0];
    assert_eq!(
        data(writer, "public", "acme/chat", Some(&only_chat)).await,
        403
    );
    assert_eq!(data(writer, "public", "acme/chat", Some(&both)).await, 403);
    assert_eq!(
        data(writer, "public", "acme/chat", Some(&project_wide)).await,
        403,
        "the deployment is gone: unknown, fail closed"
    );
    assert_eq!(data(writer, "public", "acme/embed", Some(&both)).await, 200);
    assert_eq!(
        data(writer, "public", "acme/embed", Some(&project_wide)).await,
        200
    );
    let reader = &clients[1];
    eventually("the deletion on the other replica", WATCHDOG, || async {
        (data(reader, "public", "acme/chat", Some(&both)).await == 403).then_some(())
    })
    .await;
    assert_eq!(
        data(reader, "public", "acme/chat", Some(&only_chat)).await,
        403
    );
    assert_eq!(data(reader, "public", "acme/embed", Some(&both)).await, 200);
    assert_eq!(
        data(reader, "public", "acme/embed", Some(&project_wide)).await,
        200
    );
    assert_eq!(scope(&mut admin, &both_id).await, ["acme/embed"]);
    assert!(scope(&mut admin, &only_chat_id).await.is_empty());
    // A deployment of the same name later is a new one: old attachments do not come back.
    admin.deployment("acme/chat").await;
    assert_eq!(data(writer, "public", "acme/chat", Some(&both)).await, 403);
    assert_eq!(
        data(writer, "public", "acme/chat", Some(&project_wide)).await,
        200
    );
    let missing = delete_deployment(&mut admin, "acme/ghost")
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    // A project is deleted only once nothing refers to it.
    register(&mut admin, "w-1", "acme").await.unwrap();
    let refused = delete_project(&mut admin, "acme").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    for named in [
        "deployment acme/chat",
        "deployment acme/embed",
        "workload w-1",
    ] {
        assert!(refused.message().contains(named), "{refused:?}");
    }
    for name in ["acme/chat", "acme/embed"] {
        delete_deployment(&mut admin, name).await.unwrap();
    }
    admin
        .client
        .delete_workload(pb::DeleteWorkloadRequest {
            id: "w-1".into(),
            project: "acme".into(),
        })
        .await
        .unwrap();
    let keys_left = delete_project(&mut admin, "acme").await.unwrap_err();
    assert!(
        keys_left.message().contains("1 key(s)"),
        "keys name projects by slug: a key left behind would reach a later acme ({keys_left:?})"
    );
    for token in [&only_chat, &both, &project_wide] {
        let id = token.split('_').nth(2).unwrap().to_owned();
        admin
            .client
            .delete_key(pb::DeleteKeyRequest { id })
            .await
            .unwrap();
    }
    delete_project(&mut admin, "acme").await.unwrap();
    let projects = admin
        .client
        .list_projects(pb::ListProjectsRequest {})
        .await
        .unwrap()
        .into_inner()
        .projects;
    assert_eq!(
        projects.iter().map(|p| p.slug.as_str()).collect::<Vec<_>>(),
        ["beta"]
    );
    let refused = delete_project(&mut admin, "beta").await.unwrap_err();
    assert!(refused.message().contains("key(s)"), "{refused:?}");
}

async fn scope(admin: &mut Admin, id: &str) -> Vec<String> {
    let request = pb::GetKeyRequest { id: id.into() };
    let key = admin.client.get_key(request).await.unwrap().into_inner();
    key.scope
}

#[tokio::test]
async fn deployments_and_projects_are_updated_and_deleted_on_sqlite() {
    let keyward = Keyward::start().await;
    let other = keyward.replica().await;
    deployment_and_project_lifecycle(&keyward, &other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_and_projects_are_updated_and_deleted_on_postgres() {
    let keyward = Keyward::start_postgres().await;
    let other = keyward.replica().await;
    deployment_and_project_lifecycle(&keyward, &other).await;
}

// ---------------------------------------------------------------------------------------------
// Private-only deployments through a real Envoy (issue 15 item 1).
// ---------------------------------------------------------------------------------------------

const CHAT: &str = "/demo/chat/v1/chat/completions";

type Answer = (StatusCode, Vec<(String, String)>, String);

/// Status, headers and body of a POST through Envoy. Left out: the headers that differ per
/// response (`date`, `x-request-id`), and HTTP/1.1's hop-by-hop `connection`: Envoy's own 404
/// answers a POST before reading its body and so closes the connection, where keyward's
/// answers once the (small) body has arrived (see [`get`], and docs/lifecycle.md).
async fn post(http: &reqwest::Client, url: String, token: Option<&str>) -> Answer {
    let mut request = http
        .post(url)
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    answer(request, &["connection"]).await
}

/// The same for a GET (no body): every header compared but `date` and `x-request-id`.
async fn get(http: &reqwest::Client, url: String, token: Option<&str>) -> Answer {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    answer(request, &[]).await
}

async fn answer(request: reqwest::RequestBuilder, ignored: &[&str]) -> Answer {
    let response = request.send().await.unwrap();
    let status = response.status();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id"))
        .filter(|(name, _)| !ignored.contains(&name.as_str()))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    (status, headers, response.text().await.unwrap())
}

/// With the public endpoint removed through replica A, the public listener answers 404 for
/// the deployment exactly as for a path no deployment is routed at (status, headers, body),
/// with or without a key, valid or not; the private listener keeps working. On A from the very
/// next request, through Envoy on both replicas once propagated; restored the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_only_deployment_is_not_there_on_the_public_listener() {
    let a = Keyward::start_postgres().await;
    let b = a.replica().await;
    let backend = Backend::start().await;
    let envoy = Envoy::start_many(&[a.check, b.check], backend.addr).await;
    let http = envoy.client();
    let mut admin = a.admin().await;
    admin.project("demo").await;
    admin.deployment("demo/chat").await;
    let (_, key) = admin.key(Plane::Data, &["demo/chat"]).await;
    let wrong = format!("{}x", &key[..key.len() - 1]);
    for _ in 0..4 {
        assert_eq!(post(&http, envoy.public_url(CHAT), Some(&key)).await.0, 200);
    }
    let (_, _, unauthenticated) = post(&http, envoy.public_url(CHAT), None).await;
    let not_there = post(&http, envoy.public_url("/nothing/routed/here"), Some(&key)).await;
    assert_eq!(not_there.0, StatusCode::NOT_FOUND, "{not_there:?}");
    let not_there_get = get(&http, envoy.public_url("/nothing/routed/here"), Some(&key)).await;

    let off = set_public_endpoint(&mut admin, "demo/chat", false).await;
    assert!(!off.public_endpoint && off.public_auth);
    let writer = a.check_client().await;
    assert_eq!(data(&writer, "public", "demo/chat", Some(&key)).await, 404);
    assert_eq!(data(&writer, "private", "demo/chat", Some(&key)).await, 200);

    let reader = b.check_client().await;
    eventually(
        "the public endpoint gone on replica B",
        WATCHDOG,
        || async { (data(&reader, "public", "demo/chat", Some(&key)).await == 404).then_some(()) },
    )
    .await;
    assert_eq!(data(&reader, "private", "demo/chat", Some(&key)).await, 200);
    eventually(
        "the public endpoint gone on both replicas",
        WATCHDOG,
        || {
            let (http, url, key) = (&http, envoy.public_url(CHAT), key.as_str());
            async move { (post(http, url, Some(key)).await.0 == 404).then_some(()) }
        },
    )
    .await;
    for i in 0..20 {
        for token in [Some(key.as_str()), Some(wrong.as_str()), None] {
            let answer = post(&http, envoy.public_url(CHAT), token).await;
            assert_eq!(answer, not_there, "request {i} with {token:?}");
            let answer = get(&http, envoy.public_url(CHAT), token).await;
            assert_eq!(answer, not_there_get, "GET {i} with {token:?}");
        }
        let private = post(&http, envoy.private_url(CHAT), Some(&key)).await;
        assert_eq!(private.0, 200, "request {i}: {private:?}");
        let (status, _, body) = post(&http, envoy.private_url(CHAT), None).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::UNAUTHORIZED, unauthenticated.as_str()),
            "the private listener still asks for a key"
        );
    }

    // Distinct from `set-auth --public off`: with authentication off too, still 404.
    admin.set_auth("demo/chat", Some(false), None).await;
    assert_eq!(data(&writer, "public", "demo/chat", None).await, 404);

    admin.set_auth("demo/chat", Some(true), None).await;
    let on = set_public_endpoint(&mut admin, "demo/chat", true).await;
    assert!(on.public_endpoint);
    assert_eq!(data(&writer, "public", "demo/chat", Some(&key)).await, 200);
    eventually(
        "the public endpoint back on both replicas",
        WATCHDOG,
        || {
            let (http, url, key) = (&http, envoy.public_url(CHAT), key.as_str());
            async move { (post(http, url, Some(key)).await.0 == 200).then_some(()) }
        },
    )
    .await;
    for i in 0..20 {
        let answer = post(&http, envoy.public_url(CHAT), Some(&key)).await;
        assert_eq!(answer.0, 200, "request {i}: {answer:?}");
    }
}

/// Restoring a public endpoint whose authentication is off opens the deployment to anyone:
/// it needs `deployments.auth`, which `InferenceFullAccess` does not hold; removing one needs
/// only `deployments.write`.
#[tokio::test]
async fn restoring_an_open_public_endpoint_needs_deployments_auth() {
    let keyward = Keyward::start().await;
    let mut admin = keyward.admin().await;
    admin.project("acme").await;
    admin.deployment("acme/chat").await;
    admin
        .client
        .create_application(pb::CreateApplicationRequest { name: "ci".into() })
        .await
        .unwrap();
    admin
        .client
        .put_policy(pb::Policy {
            name: "ci".into(),
            principal: "app:ci".into(),
            rules: vec![pb::Rule {
                projects: vec!["acme".into()],
                permission_sets: vec!["InferenceFullAccess".into()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut request = support::key_request(Plane::Control, &["acme"], None);
    request.bearer = "app:ci".into();
    let token = admin
        .client
        .create_key(request)
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut ci = Admin::connect(keyward.admin, &token).await;
    set_public_endpoint(&mut ci, "acme/chat", false).await;
    set_public_endpoint(&mut ci, "acme/chat", true).await;
    set_public_endpoint(&mut ci, "acme/chat", false).await;
    admin.set_auth("acme/chat", Some(false), None).await;
    let refused = ci
        .client
        .set_public_endpoint(pb::SetPublicEndpointRequest {
            project: "acme".into(),
            slug: "chat".into(),
            enabled: true,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("deployments.auth"),
        "{refused:?}"
    );
    let client = keyward.check_client().await;
    assert_eq!(data(&client, "public", "acme/chat", None).await, 404);
}

// ---------------------------------------------------------------------------------------------
// Migration 0005 keeps what was stored.
// ---------------------------------------------------------------------------------------------

/// A database migrated up to 0004, with rows in it, then opened by keyward (0005 runs): every
/// workload, deployment and project is still there, deployments keep their public endpoint,
/// and the same workload id can now be registered in a second project.
async fn migrates_without_loss(url: &str, backend: &str) {
    use sqlx::Executor;
    let mut migrator =
        sqlx::migrate::Migrator::new(support::repo().join("migrations").join(backend))
            .await
            .unwrap();
    migrator.migrations = std::borrow::Cow::Owned(migrator.migrations[..4].to_vec());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    migrator.run(&pool).await.unwrap();
    for statement in [
        "INSERT INTO organizations (id, name, created_at) VALUES (1, 'default', 1)",
        "INSERT INTO principals (organization_id, kind, name, created_at) \
         VALUES (1, 'owner', 'owner@example.com', 1)",
        "INSERT INTO projects (id, organization_id, slug, created_at) VALUES (10, 1, 'acme', 1)",
        "INSERT INTO projects (id, organization_id, slug, created_at) VALUES (11, 1, 'beta', 1)",
        "INSERT INTO deployments (project_id, slug, model, public_auth, private_auth, created_at) \
         VALUES (10, 'chat', 'llama', 0, 1, 1)",
        "INSERT INTO workloads (id, project_id, created_at) VALUES ('w-1', 10, 1)",
        "INSERT INTO workloads (id, project_id, created_at) VALUES ('w-2', 11, 1)",
    ] {
        pool.execute(statement).await.unwrap();
    }
    pool.close().await;

    let store = keyward::store::Store::open(url, 2).await.unwrap();
    let state = store.load_state().await.unwrap();
    let workloads: Vec<(String, String)> = state
        .workloads
        .iter()
        .map(|w| (w.project.clone(), w.id.clone()))
        .collect();
    assert_eq!(
        workloads,
        [("acme".into(), "w-1".into()), ("beta".into(), "w-2".into())]
    );
    let chat = &state.deployments[&"acme/chat".parse().unwrap()];
    assert_eq!(
        (chat.model.as_str(), chat.public_auth, chat.private_auth),
        ("llama", false, true)
    );
    assert!(chat.public_endpoint && chat.description.is_empty());
    assert_eq!(state.projects.len(), 2);
    store
        .audited(keyward::audit::Record::local("test", String::new()))
        .update_state(|_| {
            Ok::<_, keyward::store::StoreError>(vec![keyward::state::Op::AddWorkload(
                keyward::state::WorkloadRef {
                    project: "beta".into(),
                    id: "w-1".into(),
                },
            )])
        })
        .await
        .unwrap();
    assert_eq!(
        store.workload_projects("w-1").await.unwrap(),
        ["acme", "beta"]
    );
    store.close().await;
}

#[tokio::test]
async fn migration_0005_keeps_every_row_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
    migrates_without_loss(&url, "sqlite").await;
}

#[tokio::test]
async fn migration_0005_keeps_every_row_on_postgres() {
    let database = support::PgDatabase::create().await;
    migrates_without_loss(&database.url, "postgres").await;
}

// ---------------------------------------------------------------------------------------------
// The CLI and the apply/export file.
// ---------------------------------------------------------------------------------------------

fn cli(keyward: &Keyward, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(support::KEYWARD_BIN)
        .args(args)
        .env("KEYWARD_SERVER", format!("http://{}", keyward.admin))
        .env("KEYWARD_TOKEN", &keyward.owner_token)
        .env_remove("KEYWARD_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(keyward: &Keyward, args: &[&str], stdin: Option<&str>) -> String {
    let out = cli(keyward, args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn json(keyward: &Keyward, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.extend(["--output", "json"]);
    serde_json::from_str(&ok(keyward, &args, None)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_through_the_cli_and_the_state_file() {
    let keyward = Keyward::start().await;
    ok(&keyward, &["projects", "create", "acme"], None);
    ok(
        &keyward,
        &["deployments", "create", "acme/bot", "--model", "m"],
        None,
    );
    let updated = json(
        &keyward,
        &[
            "deployments",
            "update",
            "acme/bot",
            "--model",
            "llama-3.1-8b",
            "--description",
            "support bot",
        ],
    );
    assert_eq!(updated[0]["model"], "llama-3.1-8b");
    assert_eq!(updated[0]["description"], "support bot");
    let project = json(
        &keyward,
        &["projects", "update", "acme", "--description", "Acme"],
    );
    assert_eq!(project[0]["description"], "Acme");

    let off = json(
        &keyward,
        &["deployments", "public-endpoint", "acme/bot", "off"],
    );
    assert_eq!(off[0]["public_endpoint"], "off");
    assert_eq!(off[0]["public_auth"], "on");
    let bad = cli(
        &keyward,
        &["deployments", "public-endpoint", "acme/bot", "maybe"],
        None,
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("maybe"),
        "{stderr}"
    );
    let client = keyward.check_client().await;
    assert_eq!(data(&client, "public", "acme/bot", None).await, 404);
    assert_eq!(data(&client, "private", "acme/bot", None).await, 401);

    // The state file carries it: exported here, applied on another keyward.
    let exported = ok(&keyward, &["export"], None);
    for line in [
        "public_endpoint = false",
        "description = \"support bot\"",
        "description = \"Acme\"",
    ] {
        assert!(exported.contains(line), "{line} in\n{exported}");
    }
    let elsewhere = Keyward::start().await;
    ok(&elsewhere, &["apply", "-f", "-"], Some(&exported));
    assert_eq!(ok(&elsewhere, &["export"], None), exported);
    let there = elsewhere.check_client().await;
    assert_eq!(data(&there, "public", "acme/bot", None).await, 404);
    let restored = exported.replace("public_endpoint = false\n", "");
    let planned = ok(&elsewhere, &["apply", "-f", "-"], Some(&restored));
    assert!(planned.contains("~ deployment acme/bot"), "{planned}");
    assert_eq!(data(&there, "public", "acme/bot", None).await, 401);

    ok(
        &keyward,
        &["workloads", "register", "w-1", "--project", "acme"],
        None,
    );
    ok(
        &keyward,
        &["workloads", "delete", "w-1", "--project", "acme"],
        None,
    );
    let refused = cli(&keyward, &["projects", "delete", "acme"], None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("deployment acme/bot"),
        "{stderr}"
    );
    let deleted = ok(&keyward, &["deployments", "delete", "acme/bot"], None);
    assert!(deleted.contains("deleted deployment acme/bot"), "{deleted}");
    ok(&keyward, &["projects", "delete", "acme"], None);
    assert_eq!(json(&keyward, &["projects", "list"]), serde_json::json!([]));
}
