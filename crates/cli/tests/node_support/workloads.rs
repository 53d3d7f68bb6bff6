//! Work run inside the cluster, the way the PGO family's own end-to-end tests check a database:
//! a Job in the cluster's namespace that runs `psql` with the `uri` of a user's Secret and
//! `sslmode=verify-full` against the cluster's CA, so the check goes through cluster DNS, the
//! Service and TLS exactly as an application pod's connection would.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams, PostParams};
use kube::Client;
use serde_json::json;

use super::eventually;

/// How a Job ended, with its pod's log.
pub struct JobResult {
    pub succeeded: bool,
    pub log: String,
}

/// Runs `script` with `bash -ceu` in `image` as a Job named `name`, with `PGURI` from the
/// `uri` key of Secret `user_secret` and libpq set to verify the server against the `ca.crt`
/// of Secret `ca_secret`; waits for it to finish.
pub async fn run_psql_job(
    client: &Client,
    namespace: &str,
    name: &str,
    image: &str,
    user_secret: &str,
    ca_secret: &str,
    script: &str,
) -> JobResult {
    let connection = PsqlConnection {
        user_secret,
        uri_key: "uri",
        ca_secret,
        ca_key: "ca.crt",
    };
    run_psql_job_with(client, namespace, name, image, &connection, script).await
}

/// Which Secret keys a psql Job connects with: `PGURI` is key `uri_key` of `user_secret`
/// (`uri`, `pgbouncer-uri`), the CA is key `ca_key` of `ca_secret` (a custom TLS Secret names
/// its keys as the user chose).
pub struct PsqlConnection<'a> {
    pub user_secret: &'a str,
    pub uri_key: &'a str,
    pub ca_secret: &'a str,
    pub ca_key: &'a str,
}

/// [`run_psql_job`] with the connection's Secret keys given.
pub async fn run_psql_job_with(
    client: &Client,
    namespace: &str,
    name: &str,
    image: &str,
    connection: &PsqlConnection<'_>,
    script: &str,
) -> JobResult {
    let PsqlConnection {
        user_secret,
        uri_key,
        ca_secret,
        ca_key,
    } = connection;
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": true, "runAsUser": 26, "runAsGroup": 26,
                        "seccompProfile": {"type": "RuntimeDefault"}
                    },
                    "containers": [{
                        "name": "psql",
                        "image": image,
                        // As many users' manifests have it: every start pulls from the node's
                        // registry, as in production.
                        "imagePullPolicy": "Always",
                        "command": ["bash", "-ceu", script],
                        "env": [
                            {"name": "PGURI", "valueFrom": {"secretKeyRef": {"name": user_secret, "key": uri_key}}},
                            {"name": "PGSSLMODE", "value": "verify-full"},
                            {"name": "PGSSLROOTCERT", "value": "/tls/ca.crt"},
                            {"name": "PGCONNECT_TIMEOUT", "value": "10"}
                        ],
                        "volumeMounts": [{"name": "ca", "mountPath": "/tls", "readOnly": true}],
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}
                        }
                    }],
                    "volumes": [{
                        "name": "ca",
                        "secret": {"secretName": ca_secret, "items": [{"key": ca_key, "path": "ca.crt"}]}
                    }]
                }
            }
        }
    }))
    .expect("a Job");
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    jobs.create(&PostParams::default(), &job)
        .await
        .unwrap_or_else(|e| panic!("creating Job {name}: {e}"));
    let succeeded = eventually(
        &format!("Job {namespace}/{name} to finish"),
        Duration::from_secs(180),
        || async {
            let status = jobs.get(name).await.ok()?.status?;
            if status.succeeded.unwrap_or(0) > 0 {
                Some(true)
            } else if status.failed.unwrap_or(0) > 0 {
                Some(false)
            } else {
                None
            }
        },
    )
    .await;
    JobResult {
        succeeded,
        log: job_log(client, namespace, name).await,
    }
}

/// The log of the (first) pod of Job `name`.
pub async fn job_log(client: &Client, namespace: &str, name: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await
        .expect("listing the Job's pods");
    let Some(pod) = list.items.first().and_then(|p| p.metadata.name.clone()) else {
        return String::new();
    };
    pods.logs(&pod, &LogParams::default())
        .await
        .unwrap_or_else(|e| format!("(no log: {e})"))
}
