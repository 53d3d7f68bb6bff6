//! The checked-in CRD against a real kube-apiserver (scripts/kube-testenv): the server
//! accepts and establishes it, stores the reference manifests, and itself rejects what the
//! OpenAPI schema forbids, naming the field. Starts its own control plane; writes only there.

mod kube_support;

use kube_support::objects::{clusters, create_cluster, install_crd, manifest};
use kube_support::{skipped, ControlPlane};
use serde_json::{json, Value};

/// The server's refusal of `object`, as its message; panics if the server accepted it.
async fn refusal(client: &kube::Client, namespace: &str, object: Value) -> String {
    match create_cluster(client, namespace, object).await {
        Ok(stored) => panic!(
            "the server accepted an invalid PostgresCluster: {}",
            serde_json::to_string(&stored.data).unwrap()
        ),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "expected a validation error: {status:?}");
            status.message
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

fn hippo(name: &str) -> Value {
    let mut object = manifest(&kube_support::repo_root().join("examples/01-hippo-basic.yaml"));
    object["metadata"]["name"] = json!(name);
    object
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_accepts_the_crd_and_enforces_its_schema() {
    if skipped() {
        return;
    }
    let plane = ControlPlane::start();
    let client = plane.client().await;
    let crd = install_crd(&client).await;
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1beta1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "the status subresource is served (the operator patches status through it)"
    );

    // Every reference manifest is stored as written.
    let examples = kube_support::repo_root().join("examples");
    let mut stored = 0;
    for entry in std::fs::read_dir(&examples).expect("shared/examples") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let object = manifest(&path);
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        // Several manifests reuse a name: each goes under its own name here.
        let mut object = object;
        object["metadata"]["name"] = json!(format!("{name}-{stored}"));
        create_cluster(&client, "default", object.clone())
            .await
            .unwrap_or_else(|e| panic!("{} refused: {e}", path.display()));
        let back = clusters(&client, "default")
            .get(&format!("{name}-{stored}"))
            .await
            .expect("stored");
        assert_eq!(
            back.data["spec"]["postgresVersion"],
            object["spec"]["postgresVersion"],
            "{}",
            path.display()
        );
        stored += 1;
    }
    assert!(
        stored >= 7,
        "expected the 7 reference manifests, stored {stored}"
    );

    // What the OpenAPI schema says, the server enforces, naming the field.
    let mut too_new = hippo("too-new");
    too_new["spec"]["postgresVersion"] = json!(99);
    let message = refusal(&client, "default", too_new).await;
    assert!(message.contains("spec.postgresVersion"), "{message}");

    let mut bad_repo = hippo("bad-repo");
    bad_repo["spec"]["backups"]["pgbackrest"]["repos"][0]["name"] = json!("repo9");
    let message = refusal(&client, "default", bad_repo).await;
    // 1.20 names the list field without the index (`repos.name`); newer servers add `[0]`.
    assert!(
        message.contains("spec.backups.pgbackrest.repos"),
        "{message}"
    );
    assert!(
        message.contains("name") && message.contains("repo9"),
        "{message}"
    );
    assert!(message.contains("repo[1-4]"), "{message}");

    let mut no_port = hippo("bad-port");
    no_port["spec"]["port"] = json!("five-four-three-two");
    let message = refusal(&client, "default", no_port).await;
    assert!(message.contains("spec.port"), "{message}");
}
