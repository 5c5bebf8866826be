//! IAM end to end through a real Envoy: policies, permission sets and conditions decided on
//! what Envoy reports (the peer address, not X-Forwarded-For), control routes resolving their
//! project, and every admin change taking effect on the very next request.

mod support;

use keyward::pb::{self, Plane};
use reqwest::{Method, StatusCode};
use serde_json::Value;

type World = support::Gateway;

/// Projects demo and beta, deployment demo/chat, workloads w-1 (demo) and w-b (beta).
async fn world() -> World {
    let mut w = World::start().await;
    w.admin.project("demo").await;
    w.admin.project("beta").await;
    w.admin.deployment("demo/chat").await;
    w.admin.workload("w-1", "demo").await;
    w.admin.workload("w-b", "beta").await;
    w
}

fn rule(projects: &[&str], sets: &[&str]) -> pb::Rule {
    pb::Rule {
        projects: projects.iter().map(|s| s.to_string()).collect(),
        permission_sets: sets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

impl World {
    async fn put_policy(&mut self, name: &str, principal: &str, rules: Vec<pb::Rule>) {
        self.admin
            .client
            .put_policy(pb::Policy {
                name: name.into(),
                description: String::new(),
                principal: principal.into(),
                rules,
            })
            .await
            .unwrap();
    }

    async fn key_for(&mut self, bearer: &str, plane: Plane, scope: &[&str]) -> String {
        self.admin
            .client
            .create_key(pb::CreateKeyRequest {
                plane: plane as i32,
                scope: scope.iter().map(|s| s.to_string()).collect(),
                name: "iam".into(),
                description: String::new(),
                expiry: None,
                bearer: bearer.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .token
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, self.envoy.public_url(path))
            .bearer_auth(token);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if path.ends_with("/completions") {
            request = request.json(&serde_json::json!({"model": "standin-model",
                "messages": [{"role": "user", "content": "hi"}]}));
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

const CHAT: &str = "/demo/chat/v1/chat/completions";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_use_the_address_envoy_reports_and_the_user_agent() {
    let mut w = world().await;
    w.admin
        .client
        .create_application(pb::CreateApplicationRequest { name: "ci".into() })
        .await
        .unwrap();
    let mut in_ten = rule(&["demo"], &["InferenceReadOnly"]);
    in_ten.source_ips = vec!["10.0.0.0/8".into()];
    w.put_policy("ci-net", "app:ci", vec![in_ten]).await;
    let token = w.key_for("app:ci", Plane::Data, &["demo/chat"]).await;

    // The client claims 10.1.2.3; Envoy reports the loopback peer, and that is what counts.
    for spoof in [
        ("x-forwarded-for", "10.1.2.3"),
        ("x-real-ip", "10.1.2.3"),
        ("forwarded", "for=10.1.2.3"),
    ] {
        let (status, body) = w.send(Method::POST, CHAT, &token, &[spoof]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{spoof:?}: {body}");
        assert_eq!(body["error"]["code"], "conditions_not_met", "{body}");
        assert_eq!(
            body["error"]["message"],
            "request did not satisfy the policy conditions"
        );
        assert!(!body.to_string().contains("ci-net"), "no policy names leak");
    }

    // The policy changed to the loopback range: the very next request passes.
    let mut loopback = rule(&["demo"], &["InferenceReadOnly"]);
    loopback.source_ips = vec!["127.0.0.0/8".into(), "::1/128".into()];
    w.put_policy("ci-net", "app:ci", vec![loopback.clone()])
        .await;
    let (status, body) = w.send(Method::POST, CHAT, &token, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keyward_headers"]["x-keyward-principal"], "ci");

    // A user-agent condition on top (kinds AND together).
    loopback.user_agents = vec![pb::UserAgent {
        r#match: "prefix".into(),
        pattern: "terraform/".into(),
    }];
    w.put_policy("ci-net", "app:ci", vec![loopback]).await;
    let (status, _) = w
        .send(
            Method::POST,
            CHAT,
            &token,
            &[("user-agent", "terraform/1.9.0")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = w
        .send(Method::POST, CHAT, &token, &[("user-agent", "curl/8.5.0")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "conditions_not_met");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_members_control_scope_and_immediate_changes() {
    let mut w = world().await;
    w.admin
        .client
        .add_member(pb::AddMemberRequest {
            email: "alice@example.com".into(),
        })
        .await
        .unwrap();
    let alice = "user:alice@example.com";
    w.put_policy(
        "alice",
        alice,
        vec![rule(&["demo", "beta"], &["InferenceReadOnly"])],
    )
    .await;
    let data = w.key_for(alice, Plane::Data, &["demo/chat"]).await;
    let control = w.key_for(alice, Plane::Control, &["demo"]).await;

    let (status, body) = w.send(Method::POST, CHAT, &data, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for path in ["/api/projects/demo/workloads", "/api/workloads/w-1"] {
        let (status, body) = w.send(Method::GET, path, &control, &[]).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    }
    for (method, path) in [
        (Method::POST, "/api/projects/demo/workloads"),
        (Method::PATCH, "/api/workloads/w-1"),
        (Method::DELETE, "/api/workloads/w-1"),
    ] {
        let (status, body) = w.send(method.clone(), path, &control, &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert_eq!(
            body["error"]["message"],
            "missing permission deployments.write on project demo"
        );
    }

    // The key is for demo: beta's routes are out of reach whatever the policy grants, and a
    // workload of beta reads exactly like an unregistered one.
    let (status, body) = w
        .send(Method::GET, "/api/projects/beta/workloads", &control, &[])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "key_not_in_scope");
    for path in ["/api/workloads/w-b", "/api/workloads/w-unknown"] {
        let (status, body) = w.send(Method::DELETE, path, &control, &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(body["error"]["code"], "key_not_in_scope");
        assert!(!body.to_string().contains("beta"), "{body}");
    }
    // A data key never passes a control route.
    let (status, body) = w
        .send(Method::GET, "/api/projects/demo/workloads", &data, &[])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "wrong_plane");

    // Granting InferenceFullAccess: the next PATCH passes.
    w.put_policy(
        "alice",
        alice,
        vec![rule(&["demo"], &["InferenceFullAccess"])],
    )
    .await;
    let (status, _) = w
        .send(Method::PATCH, "/api/workloads/w-1", &control, &[])
        .await;
    assert_eq!(status, StatusCode::OK);

    // Detaching the policy: the next request is denied.
    w.put_policy("alice", "", vec![rule(&["demo"], &["InferenceFullAccess"])])
        .await;
    let (status, body) = w.send(Method::POST, CHAT, &data, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["error"]["message"],
        "missing permission inference.call on project demo"
    );

    // Re-attached, then the policy deleted.
    w.put_policy(
        "alice",
        alice,
        vec![rule(&["demo"], &["InferenceReadOnly"])],
    )
    .await;
    assert_eq!(
        w.send(Method::POST, CHAT, &data, &[]).await.0,
        StatusCode::OK
    );
    w.admin
        .client
        .delete_policy(pb::DeletePolicyRequest {
            name: "alice".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        w.send(Method::POST, CHAT, &data, &[]).await.0,
        StatusCode::FORBIDDEN
    );

    // Removing the member disables its keys at once.
    w.put_policy(
        "alice",
        alice,
        vec![rule(&["demo"], &["InferenceReadOnly"])],
    )
    .await;
    assert_eq!(
        w.send(Method::POST, CHAT, &data, &[]).await.0,
        StatusCode::OK
    );
    let removed = w
        .admin
        .client
        .remove_principal(pb::RemovePrincipalRequest {
            principal: alice.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.keys_deleted, 2);
    assert_eq!(
        w.send(Method::POST, CHAT, &data, &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        w.send(Method::GET, "/api/workloads/w-1", &control, &[])
            .await
            .0,
        StatusCode::FORBIDDEN
    );
}
