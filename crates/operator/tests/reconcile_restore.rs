//! Reconcile sequences of restores against kube-fake-client: a clone from `spec.dataSource`
//! (no instance before the restore Job succeeded) and an in-place restore (stop, restore with
//! `--delta`, the restored instance first, then the others). Job and StatefulSet status is
//! set by the test, as their controllers would.

mod backups_support;
mod common;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use kube::api::{Api, ListParams};
use tusk_api::naming;

use backups_support::*;

const DATA_SOURCE: &str = r#"  dataSource:
    pgbackrest:
      stanza: db
      configuration: [{secret: {name: hippo-s3-creds}}]
      global: {repo1-path: /pgbackrest/old/repo1}
      repo:
        name: repo1
        s3: {bucket: my-bucket, endpoint: s3.example.com, region: eu-west-1}
      options: [--type=time, "--target=2024-05-01 10:00:00+00"]"#;

#[tokio::test]
async fn a_clone_restores_before_any_instance_exists() {
    let h = Harness::new(manifest(2, "", DATA_SOURCE)).await;
    h.reconcile().await;
    h.reconcile().await;
    assert!(
        h.instance_sets().await.is_empty(),
        "no instance before the restore"
    );
    let claims: Vec<PersistentVolumeClaim> = Api::namespaced(h.client.clone(), NS)
        .list(&ListParams::default().labels(&format!("{}=pgdata", naming::LABEL_VOLUME_ROLE)))
        .await
        .unwrap()
        .items;
    assert_eq!(claims.len(), 2, "the volumes exist for the restore to fill");
    let job = h
        .jobs()
        .get("hippo-pgbackrest-restore")
        .await
        .expect("restore Job");
    assert_eq!(
        label(&job.metadata.labels, naming::LABEL_PGBACKREST_RESTORE),
        NAME
    );
    let cmd = command(&job);
    for arg in [
        "--stanza=db",
        "--repo=1",
        "--type=time",
        "--target-action=promote",
        "restore",
    ] {
        assert!(cmd.contains(&arg.to_owned()), "{arg} missing from {cmd:?}");
    }
    assert!(!cmd.contains(&"--delta".to_owned()));
    let pod = job.spec.unwrap().template.spec.unwrap();
    let claim = pod.volumes.as_ref().unwrap()[0]
        .persistent_volume_claim
        .clone()
        .unwrap()
        .claim_name;
    assert!(claims
        .iter()
        .any(|c| c.metadata.name.as_deref() == Some(claim.as_str())));
    let config: ConfigMap = Api::namespaced(h.client.clone(), NS)
        .get("hippo-pgbackrest-restore")
        .await
        .expect("the source repo's file");
    let text = config.data.unwrap()["tusk-instance.conf"].clone();
    assert!(text.contains("repo1-s3-bucket=my-bucket"), "{text}");
    assert!(text.contains("repo1-path=/pgbackrest/old/repo1"), "{text}");
    let restoring = h.condition("Restoring").await;
    assert_eq!(
        (restoring.status.as_str(), restoring.reason.as_str()),
        ("True", "RestoreRunning")
    );

    h.finish_job("hippo-pgbackrest-restore", true).await;
    h.reconcile().await;
    h.reconcile().await;
    assert_eq!(
        h.instance_sets().await.len(),
        2,
        "instances after the restore"
    );
    let restoring = h.condition("Restoring").await;
    assert_eq!(
        (restoring.status.as_str(), restoring.reason.as_str()),
        ("False", "RestoreSucceeded")
    );
    let restore = h
        .cluster()
        .await
        .status
        .unwrap()
        .pgbackrest
        .unwrap()
        .restore
        .unwrap();
    assert_eq!(
        (restore.id.as_str(), restore.succeeded),
        ("dataSource", Some(1))
    );
    let gone = Api::<ConfigMap>::namespaced(h.client.clone(), NS)
        .get_opt("hippo-pgbackrest-restore")
        .await
        .unwrap();
    assert!(gone.is_none(), "the source's file goes with the restore");
}

#[tokio::test]
async fn in_place_restore_stops_restores_and_starts_the_restored_instance_first() {
    let h = Harness::new(manifest(2, IN_PLACE, "")).await;
    h.reconcile().await;
    h.set_running(1).await;
    assert!(h.replicas().await.iter().all(|(_, r)| *r == 1));

    h.annotate(naming::ANNOTATION_RESTORE, "id1").await;
    h.reconcile().await;
    assert!(h.replicas().await.iter().all(|(_, r)| *r == 0), "stopped");
    assert!(
        !h.job_names().await.contains("hippo-pgbackrest-restore"),
        "pods still running"
    );
    let restoring = h.condition("Restoring").await;
    assert_eq!(restoring.reason, "StoppingInstances");
    assert_eq!(
        h.cluster()
            .await
            .status
            .unwrap()
            .pgbackrest
            .unwrap()
            .restore
            .unwrap()
            .id,
        "id1"
    );

    h.set_running(0).await;
    h.reconcile().await;
    let job = h
        .jobs()
        .get("hippo-pgbackrest-restore")
        .await
        .expect("restore Job");
    let cmd = command(&job);
    assert!(cmd.contains(&"--delta".to_owned()), "{cmd:?}");
    assert!(
        cmd.contains(&"--target-action=promote".to_owned()),
        "{cmd:?}"
    );
    h.reconcile().await;
    assert!(
        h.replicas().await.iter().all(|(_, r)| *r == 0),
        "still stopped while restoring"
    );

    h.finish_job("hippo-pgbackrest-restore", true).await;
    h.reconcile().await;
    h.reconcile().await;
    let replicas = h.replicas().await;
    let restored = &replicas[0].0;
    assert_eq!(
        replicas.iter().filter(|(_, r)| *r == 1).collect::<Vec<_>>(),
        [&(restored.clone(), 1)],
        "only the restored instance starts first: {replicas:?}"
    );
    h.primary_pod(restored).await;
    h.reconcile().await;
    assert!(
        h.replicas().await.iter().all(|(_, r)| *r == 1),
        "then every instance"
    );
    h.reconcile().await;
    assert!(
        h.replicas().await.iter().all(|(_, r)| *r == 1),
        "and they stay up"
    );
    let restoring = h.condition("Restoring").await;
    assert_eq!(
        (restoring.status.as_str(), restoring.reason.as_str()),
        ("False", "RestoreSucceeded")
    );
}
