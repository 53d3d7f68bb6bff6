//! What the containers of every pod Tusk renders run, and where they write:
//!
//! - each names its program (`command`): none but the user's own containers depends on the
//!   image's ENTRYPOINT, which in the one database image is Patroni (the exporter, rendered
//!   with `args` only, ran Patroni with the exporter's flags);
//! - without `RELATED_IMAGE_PGBACKREST`, `_PGBOUNCER` and `_EXPORTER` (the install manifests
//!   leave them empty) every container runs the cluster's own database image, which holds all
//!   those programs;
//! - every container that runs pgBackRest has its configured `log-path` on a writable volume,
//!   and an init container created that directory first (pgBackRest does not create it, so
//!   every command warned that it could not open its log file).
//!
//! Pods: every reference manifest's StatefulSets, Deployments and CronJobs, plus the one-shot
//! Jobs the controller creates (stanza-create, manual backup, clone and in-place restores).

#[path = "fixtures/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use support::*;
use tusk_api::{naming, ValidatedCluster};
use tusk_operator::build::backup_jobs::{manual_backup_job, stanza_create_job};
use tusk_operator::build::Managed;
use tusk_operator::controller::restore::{
    clone_objects, clone_source_from_cluster, restore_job_for, RestorePhase,
};

/// The programs the database image provides to the operator's containers (its Dockerfile
/// installs them from Debian: `/usr/bin/patroni`, `/usr/bin/pgbackrest`, `/usr/sbin/pgbouncer`,
/// `/usr/bin/prometheus-postgres-exporter`, `python3` with the Kubernetes client, and the
/// base system's shells and coreutils).
const IMAGE_PROGRAMS: &[&str] = &[
    "patroni",
    "pgbackrest",
    "pgbouncer",
    "prometheus-postgres-exporter",
    "python3",
    "sh",
    "bash",
    "mkdir",
];

/// Every manifest feature at once: pooling, monitoring, a volume and a cloud repo.
const EVERYTHING: &str = r#"
apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {name: hippo, namespace: tusk}
spec:
  postgresVersion: 15
  instances:
    - name: instance1
      replicas: 2
      dataVolumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
      walVolumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
  backups:
    pgbackrest:
      manual: {repoName: repo1}
      repos:
        - name: repo1
          volume: {volumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}
          schedules: {full: "0 1 * * 0", incremental: "0 1 * * 1-6"}
        - name: repo2
          s3: {bucket: b, endpoint: s3.example, region: r}
  proxy:
    pgBouncer: {replicas: 1}
  monitoring:
    pgmonitor:
      exporter: {}
"#;

/// A pod of `what`, with the cluster it belongs to and the ConfigMaps it may read.
struct Pod {
    what: String,
    spec: PodSpec,
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

fn config_maps(objects: &[Managed]) -> BTreeMap<String, BTreeMap<String, String>> {
    objects
        .iter()
        .filter_map(|o| match o {
            Managed::ConfigMap(c) => Some((
                c.metadata.name.clone().unwrap(),
                c.data.clone().unwrap_or_default(),
            )),
            _ => None,
        })
        .collect()
}

/// The pod templates of `objects` (the built ones and `jobs`).
fn pods_of(
    cluster: &ValidatedCluster,
    objects: &[Managed],
    jobs: &[k8s_openapi::api::batch::v1::Job],
) -> Vec<Pod> {
    let maps = config_maps(objects);
    let pod = |what: String, spec: Option<PodSpec>| Pod {
        what: format!("{}: {what}", cluster.name()),
        spec: spec.expect("a pod spec"),
        config_maps: maps.clone(),
    };
    let mut pods = Vec::new();
    for o in objects {
        let what = format!("{} {}", o.kind(), o.name());
        match o {
            Managed::StatefulSet(s) => pods.push(pod(what, s.spec.clone().unwrap().template.spec)),
            Managed::Deployment(d) => pods.push(pod(what, d.spec.clone().unwrap().template.spec)),
            Managed::CronJob(c) => {
                let job = c.spec.clone().unwrap().job_template.spec.unwrap();
                pods.push(pod(what, job.template.spec));
            }
            _ => {}
        }
    }
    for job in jobs {
        let what = format!("Job {}", job.metadata.name.clone().unwrap());
        pods.push(pod(what, job.spec.clone().unwrap().template.spec));
    }
    pods
}

/// Every pod of every reference manifest and of [`EVERYTHING`], with their one-shot Jobs.
fn every_pod(images: &tusk_operator::images::Images) -> Vec<Pod> {
    let mut clusters: Vec<ValidatedCluster> =
        example_paths().iter().map(|p| validate_file(p)).collect();
    clusters.push(validate(EVERYTHING));
    let mut pods = Vec::new();
    for cluster in &clusters {
        let mut objects = build(cluster, images);
        let image = images.pgbackrest(cluster);
        let mut jobs: Vec<_> = stanza_create_job(cluster, &image).into_iter().collect();
        jobs.extend(manual_backup_job(cluster, &image, "now"));
        let instance = fixed_plan(cluster).instances().next().unwrap().1.to_owned();
        if let Some(backups) = &cluster.backups {
            // In place, from the cluster's own repo.
            let phase = RestorePhase::InPlace {
                id: "now".into(),
                instance: instance.clone(),
            };
            jobs.extend(restore_job_for(
                cluster,
                &phase,
                None,
                &images.database(cluster),
            ));
            // A clone of this cluster's first repo, into a new cluster of the same shape.
            let repo = &backups.repos[0].name;
            let source = clone_source_from_cluster(cluster, repo, &[]).unwrap();
            objects.extend(clone_objects(cluster, Some(&source)));
            let phase = RestorePhase::Clone { instance };
            jobs.extend(restore_job_for(
                cluster,
                &phase,
                Some(&source),
                &images.database(cluster),
            ));
        }
        pods.extend(pods_of(cluster, &objects, &jobs));
    }
    assert!(pods.len() >= 40, "only {} pods", pods.len());
    pods
}

fn build(cluster: &ValidatedCluster, images: &tusk_operator::images::Images) -> Vec<Managed> {
    let material = tusk_operator::material::Material::placeholders(cluster);
    tusk_operator::build::build(&tusk_operator::build::BuildInput {
        cluster,
        images,
        plan: &fixed_plan(cluster),
        material: &material,
    })
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

#[test]
fn every_container_names_a_program_the_database_image_has() {
    let mut checked = 0;
    let mut exporters = 0;
    for pod in every_pod(&fixed_images()) {
        for container in all_containers(&pod.spec) {
            let command = container.command.clone().unwrap_or_default();
            if container.name == naming::CONTAINER_FENCER {
                // The one container of the operator's image: `tusk`, not the image's default.
                assert_eq!(command[..2], ["tusk", "fence"], "{}", pod.what);
                checked += 1;
                continue;
            }
            let program = command.first().map(String::as_str).unwrap_or("");
            assert!(
                IMAGE_PROGRAMS.contains(&program),
                "{} container {}: command {command:?} (args {:?}) does not name a program of \
                 the database image; without one the image's ENTRYPOINT (Patroni) runs",
                pod.what,
                container.name,
                container.args
            );
            if container.name == naming::CONTAINER_EXPORTER {
                assert_eq!(command, ["prometheus-postgres-exporter"], "{}", pod.what);
                let args = container.args.clone().unwrap_or_default();
                assert!(
                    args.iter().any(|a| a.starts_with("--extend.query-path=")),
                    "{}: {args:?}",
                    pod.what
                );
                exporters += 1;
            }
            checked += 1;
        }
    }
    assert!(exporters >= 2, "{exporters} exporters seen");
    assert!(checked >= 100, "only {checked} containers");
}

#[test]
fn the_users_own_containers_keep_their_image_entrypoint() {
    // The rule above is about Tusk's containers: a user's sidecar is rendered as written.
    let cluster = validate(&EVERYTHING.replace(
        "      walVolumeClaimSpec",
        "      containers: [{name: shipper, image: registry.example/shipper:1}]\n      walVolumeClaimSpec",
    ));
    let objects = build(&cluster, &fixed_images());
    let sts = statefulsets(&objects)[0];
    let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let shipper = pod.containers.iter().find(|c| c.name == "shipper").unwrap();
    assert_eq!(shipper.command, None);
}

#[test]
fn without_component_images_every_container_runs_the_clusters_database_image() {
    // As the install manifests configure the operator: only RELATED_IMAGE_POSTGRES_15.
    let images = fixed_images();
    assert_eq!(
        (&images.pgbackrest, &images.pgbouncer, &images.exporter),
        (&None, &None, &None)
    );
    // The fencer alone runs the operator's image (`tusk fence`).
    let expected = |name: &str| match name {
        naming::CONTAINER_FENCER => "registry.example/tusk/tusk-operator:0.1.0",
        _ => "registry.example/tusk/postgres:15.8-0",
    };
    let mut fencers = 0;
    for pod in every_pod(&images) {
        for container in all_containers(&pod.spec) {
            fencers += usize::from(container.name == naming::CONTAINER_FENCER);
            assert_eq!(
                container.image.as_deref(),
                Some(expected(&container.name)),
                "{} container {}",
                pod.what,
                container.name
            );
        }
    }
    assert!(fencers >= 2, "every instance pod has a fencer ({fencers})");
    // `spec.image` moves every component with it (pgBackRest must match on every side).
    let custom = validate(&EVERYTHING.replace(
        "  postgresVersion: 15\n",
        "  postgresVersion: 15\n  image: registry.example/own/postgres:15\n",
    ));
    for sts in statefulsets(&build(&custom, &images)) {
        let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        for container in all_containers(pod) {
            let image = match container.name.as_str() {
                naming::CONTAINER_FENCER => "registry.example/tusk/tusk-operator:0.1.0",
                _ => "registry.example/own/postgres:15",
            };
            assert_eq!(
                container.image.as_deref(),
                Some(image),
                "{}",
                container.name
            );
        }
    }
    // A RELATED_IMAGE_* of a component still wins over the database image.
    let pinned = tusk_operator::images::Images::from_vars([
        (
            "RELATED_IMAGE_POSTGRES_15",
            "registry.example/tusk/postgres:15.8-0",
        ),
        ("RELATED_IMAGE_EXPORTER", "registry.example/exporter:1"),
    ]);
    let cluster = validate(EVERYTHING);
    assert_eq!(pinned.exporter(&cluster), "registry.example/exporter:1");
    assert_eq!(
        pinned.pgbackrest(&cluster),
        "registry.example/tusk/postgres:15.8-0"
    );
}

/// `key=value` of a pgBackRest file's `[global]` section.
fn global_option(conf: &str, key: &str) -> Option<String> {
    let mut in_global = false;
    for line in conf.lines() {
        if line.starts_with('[') {
            in_global = line == "[global]";
        } else if in_global {
            if let Some(value) = line.strip_prefix(&format!("{key}=")) {
                return Some(value.to_owned());
            }
        }
    }
    None
}

/// The pgBackRest file the pod's `pgbackrest-config` volume projects from Tusk's ConfigMap.
fn pgbackrest_file(pod: &Pod) -> Option<String> {
    let volume = pod
        .spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == naming::CONTAINER_PGBACKREST_CONFIG)?;
    let sources = volume.projected.as_ref()?.sources.as_ref()?;
    let projection = sources.iter().find_map(|s| s.config_map.as_ref())?;
    let key = &projection.items.as_ref()?.first()?.key;
    pod.config_maps.get(&projection.name)?.get(key).cloned()
}

/// Whether `container` runs pgBackRest in its own process tree: it reads the configuration and
/// starts `pgbackrest` (as its program or in its script), or it is the database container,
/// whose `archive_command` and `restore_command` are pgBackRest. (A backup Job's container
/// only execs pgBackRest in another pod; a reload sidecar only signals it.)
fn runs_pgbackrest(container: &Container) -> bool {
    let reads_config = container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.name == naming::CONTAINER_PGBACKREST_CONFIG);
    let words = container.command.iter().flatten();
    let starts_it = words
        .clone()
        .any(|w| w == "pgbackrest" || w.contains("pgbackrest \""));
    reads_config && (container.name == naming::CONTAINER_DATABASE || starts_it)
}

/// `(volume, path inside it)` where `path` lands in `container`, if on a writable volume
/// mount (not read-only, and a volume that can be written: a claim or an emptyDir).
fn writable_location(pod: &PodSpec, container: &Container, path: &str) -> Option<(String, String)> {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| Path::new(path).starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())?;
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)?;
    let writable_volume = volume.persistent_volume_claim.is_some() || volume.empty_dir.is_some();
    if mount.read_only == Some(true) || !writable_volume {
        return None;
    }
    let inside = Path::new(path).strip_prefix(&mount.mount_path).ok()?;
    Some((mount.name.clone(), inside.to_string_lossy().into_owned()))
}

#[test]
fn every_container_running_pgbackrest_has_its_log_path_on_a_writable_volume_made_first() {
    let mut checked = 0;
    for pod in every_pod(&fixed_images()) {
        let runners: Vec<&Container> = pod
            .spec
            .containers
            .iter()
            .filter(|c| runs_pgbackrest(c))
            .collect();
        if runners.is_empty() {
            continue;
        }
        let conf = pgbackrest_file(&pod)
            .unwrap_or_else(|| panic!("{}: no pgBackRest file projected", pod.what));
        let log_path = global_option(&conf, "log-path")
            .unwrap_or_else(|| panic!("{}: no log-path in\n{conf}", pod.what));
        // Where an init container's `mkdir -p` arguments land.
        let made_first: Vec<(String, String)> = pod
            .spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| {
                let command = c.command.clone().unwrap_or_default();
                command.starts_with(&["mkdir".to_owned(), "-p".to_owned()])
            })
            .flat_map(|c| {
                let dirs = c.command.clone().unwrap_or_default().split_off(2);
                dirs.into_iter()
                    .filter_map(|d| writable_location(&pod.spec, c, &d))
                    .collect::<Vec<_>>()
            })
            .collect();
        for container in runners {
            let location =
                writable_location(&pod.spec, container, &log_path).unwrap_or_else(|| {
                    panic!(
                        "{} container {}: log-path {log_path} is not on a writable volume",
                        pod.what, container.name
                    )
                });
            assert!(
                made_first.contains(&location),
                "{} container {}: nothing creates log-path {log_path} ({location:?}) before it \
                 starts; init containers create {made_first:?}",
                pod.what,
                container.name
            );
            checked += 1;
        }
    }
    // Database and sidecar of every instance with backups, repo hosts, restore Jobs.
    assert!(checked >= 20, "only {checked} containers run pgBackRest");
}
