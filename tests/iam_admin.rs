//! The admin API is authorized by the same model as Check: the owner and IAM managers manage
//! everything; a project-scoped control key stays in its project and within its bearer's
//! policies.

mod support;

use keyward::pb::{self, Plane};
use support::{Admin, Keyward};
use tonic::Code;

async fn key(admin: &mut Admin, bearer: &str, plane: Plane, scope: &[&str]) -> String {
    admin
        .client
        .create_key(pb::CreateKeyRequest {
            plane: plane as i32,
            scope: scope.iter().map(|s| s.to_string()).collect(),
            name: String::new(),
            description: String::new(),
            expiry: None,
            bearer: bearer.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

fn policy(name: &str, principal: &str, rule: pb::Rule) -> pb::Policy {
    pb::Policy {
        name: name.into(),
        description: String::new(),
        principal: principal.into(),
        rules: vec![rule],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_follow_the_bearers_policies() {
    let keyward = Keyward::start().await;
    let mut owner = keyward.admin().await;
    owner.project("acme").await;
    owner.project("beta").await;
    for name in ["ops", "deployer"] {
        owner
            .client
            .create_application(pb::CreateApplicationRequest { name: name.into() })
            .await
            .unwrap();
    }
    // ops: IAM management through an organization-scope rule, with an organization key.
    owner
        .client
        .put_policy(policy(
            "ops",
            "app:ops",
            pb::Rule {
                organization: true,
                permission_sets: vec!["AllProductsFullAccess".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let ops_token = key(&mut owner, "app:ops", Plane::Control, &["*"]).await;
    let mut ops = Admin::connect(keyward.admin, &ops_token).await;
    ops.client
        .add_member(pb::AddMemberRequest {
            email: "bob@example.com".into(),
        })
        .await
        .expect("an IAM manager adds members");

    // deployer: InferenceReadOnly on acme only, with an acme control key.
    let deployer_token = key(&mut owner, "app:deployer", Plane::Control, &["acme"]).await;
    let mut deployer = Admin::connect(keyward.admin, &deployer_token).await;
    let create = |project: &str| pb::CreateDeploymentRequest {
        project: project.into(),
        slug: "bot".into(),
        model: "m".into(),
        public_auth: None,
        private_auth: None,
    };
    let err = deployer
        .client
        .create_deployment(create("acme"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "missing permission deployments.write on project acme"
    );
    let err = deployer
        .client
        .add_member(pb::AddMemberRequest {
            email: "eve@example.com".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    ops.client
        .put_policy(policy(
            "deployer",
            "app:deployer",
            pb::Rule {
                all_projects: true,
                permission_sets: vec!["InferenceFullAccess".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    deployer
        .client
        .create_deployment(create("acme"))
        .await
        .expect("granted on the next call");
    // The key is for acme: beta stays out of reach although the policy covers all projects.
    let err = deployer
        .client
        .create_deployment(create("beta"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Own keys in its project, yes; keys for another bearer, no.
    key(&mut deployer, "", Plane::Data, &["acme/bot"]).await;
    let err = deployer
        .client
        .create_key(pb::CreateKeyRequest {
            plane: Plane::Data as i32,
            scope: vec!["acme/*".into()],
            bearer: "app:ops".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // It sees only its own keys.
    let keys = deployer
        .client
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(keys.iter().all(|k| k.principal == "deployer"), "{keys:?}");
    assert_eq!(keys.len(), 2);

    // Removing the IAM manager's policy takes its powers away at once.
    owner
        .client
        .delete_policy(pb::DeletePolicyRequest { name: "ops".into() })
        .await
        .unwrap();
    let err = ops
        .client
        .list_principals(pb::ListPrincipalsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}
