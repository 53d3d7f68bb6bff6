//! The reload sidecars in the built pods: every pod running `pgbackrest server` (instances
//! with backups, the repo host) has a `pgbackrest-config` container that can see and signal
//! it and watches the directory it reads. (Apart from build_properties.rs for that file's
//! size; its `sidecars_follow_the_database_container` covers `tls-reload` and a cluster
//! without backups, whose pods have no `pgbackrest-config`.)

#[path = "fixtures/support.rs"]
mod support;

use k8s_openapi::api::core::v1::Container;
use tusk_api::naming;
use tusk_operator::build::pgbackrest::SERVER_SIGNAL_ARG;
use tusk_operator::build::reload_sidecar::{ENV_SIGNAL_ARG, ENV_WATCH_DIR};
use tusk_operator::build::Managed;

use support::*;

/// Every argument a container's processes start with: its command and exec probes (probe
/// processes share the pod's process namespace too).
fn argv(c: &Container) -> Vec<&str> {
    let mut argv: Vec<&String> = c.command.iter().chain(&c.args).flatten().collect();
    for probe in [&c.liveness_probe, &c.readiness_probe, &c.startup_probe] {
        let exec = probe.as_ref().and_then(|p| p.exec.as_ref());
        argv.extend(exec.and_then(|e| e.command.as_ref()).into_iter().flatten());
    }
    argv.into_iter().map(String::as_str).collect()
}

#[test]
fn every_pgbackrest_server_has_a_config_reloader_beside_it() {
    let cluster = example("01");
    let objects = build_placeholders(&cluster);
    let mut pods_with_server = Vec::new();
    // Every StatefulSet: the repo host's too.
    for object in &objects {
        let Managed::StatefulSet(sts) = object else {
            continue;
        };
        let name = sts.metadata.name.clone().unwrap();
        let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let container = |n: &str| pod.containers.iter().find(|c| c.name == n);
        let Some(server) = container(naming::CONTAINER_PGBACKREST) else {
            continue;
        };
        let reloader = container(naming::CONTAINER_PGBACKREST_CONFIG)
            .unwrap_or_else(|| panic!("{name} has no pgbackrest-config container"));
        assert_eq!(pod.share_process_namespace, Some(true), "{name}");
        assert_eq!(reloader.image, Some(fixed_images().database(&cluster)));
        let env: Vec<(&str, &str)> = reloader
            .env
            .iter()
            .flatten()
            .map(|v| (v.name.as_str(), v.value.as_deref().unwrap()))
            .collect();
        let config_dir = tusk_config::pgbackrest::CONFIG_DIR;
        assert!(env.contains(&(ENV_WATCH_DIR, config_dir)), "{env:?}");
        assert!(
            env.contains(&(ENV_SIGNAL_ARG, SERVER_SIGNAL_ARG)),
            "{env:?}"
        );

        // It watches, read-only, the very volume and directory the server reads.
        let [watched] = reloader.volume_mounts.as_deref().unwrap() else {
            panic!("{name}: the reloader has one mount");
        };
        assert_eq!(watched.read_only, Some(true));
        assert_eq!(watched.mount_path, config_dir);
        assert!(
            server
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == watched.name && m.mount_path == watched.mount_path),
            "{name}: the server does not read the watched volume there"
        );

        // The signalled argument starts the server and nothing else in the pod.
        for c in &pod.containers {
            assert_eq!(
                argv(c).contains(&SERVER_SIGNAL_ARG),
                c.name == naming::CONTAINER_PGBACKREST,
                "{name}/{}: {:?}",
                c.name,
                argv(c)
            );
        }
        pods_with_server.push(name);
    }
    pods_with_server.sort();
    assert_eq!(
        pods_with_server,
        ["hippo-instance1-wm5p", "hippo-repo-host"]
    );
}
