//! Validation of `spec.backups`, `spec.dataSource` and `spec.standby`: repos, schedules, repo
//! references and the pgBackRest options Tusk manages.
//! Part of [`super`]'s validation; reads only the raw spec it is given. No I/O.

use super::*;

pub(super) fn backups(errs: &mut Errors, b: &PgBackRestSpec) -> BackupSettings {
    let base = "spec.backups.pgbackrest";
    if b.repos.is_empty() {
        errs.push(format!("{base}.repos"), "at least one repo is required");
    }
    if b.repos.len() > 4 {
        errs.push(format!("{base}.repos"), "at most four repos");
    }
    let mut seen = BTreeSet::new();
    let mut repos = Vec::new();
    for (i, r) in b.repos.iter().enumerate() {
        let path = format!("{base}.repos[{i}]");
        if !seen.insert(r.name.clone()) {
            errs.push(format!("{path}.name"), format!("duplicate {:?}", r.name));
        }
        if let Some(repo) = repo(errs, &path, r) {
            repos.push(repo);
        }
    }
    let known = |name: &str| b.repos.iter().any(|r| r.name == name);
    let manual = b.manual.as_ref().map(|m| {
        if !known(&m.repo_name) {
            errs.push(
                format!("{base}.manual.repoName"),
                format!("{:?} is not a repo in {base}.repos", m.repo_name),
            );
        }
        let options = m.options.clone().unwrap_or_default();
        check_options(
            errs,
            &format!("{base}.manual.options"),
            &options,
            MANAGED_BACKUP,
        );
        RepoOptions {
            repo_name: m.repo_name.clone(),
            options,
        }
    });
    let restore = b.restore.as_ref().map(|r| {
        if !known(&r.repo_name) {
            errs.push(
                format!("{base}.restore.repoName"),
                format!("{:?} is not a repo in {base}.repos", r.repo_name),
            );
        }
        let options = r.options.clone().unwrap_or_default();
        check_options(
            errs,
            &format!("{base}.restore.options"),
            &options,
            MANAGED_IN_PLACE_RESTORE,
        );
        RestoreSettings {
            enabled: r.enabled,
            repo_name: r.repo_name.clone(),
            options,
        }
    });
    let global = string_map(b.global.as_ref());
    for k in global.keys() {
        if let Some(n) = k
            .strip_prefix("repo")
            .and_then(|rest| rest.split('-').next())
            .and_then(|n| n.parse::<u8>().ok())
        {
            if !known(&format!("repo{n}")) {
                errs.push(
                    format!("{base}.global.{k}"),
                    format!("repo{n} is not in {base}.repos"),
                );
            }
        }
    }
    BackupSettings {
        image: b.image.clone(),
        configuration: b.configuration.clone().unwrap_or_default(),
        global,
        repos,
        manual,
        restore,
        repo_host: b.repo_host.clone().unwrap_or_default(),
        jobs: b.jobs.clone().unwrap_or_default(),
        metadata: metadata_settings(errs, &format!("{base}.metadata"), b.metadata.as_ref()),
    }
}

fn string_map(m: Option<&StringMap>) -> BTreeMap<String, String> {
    m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
        .unwrap_or_default()
}

fn repo(errs: &mut Errors, path: &str, r: &PgBackRestRepo) -> Option<RepoSettings> {
    let index = match r
        .name
        .strip_prefix("repo")
        .and_then(|n| n.parse::<u8>().ok())
    {
        Some(n @ 1..=4) if r.name.len() == 5 => n,
        _ => {
            errs.push(
                format!("{path}.name"),
                format!("{:?} must be repo1..repo4", r.name),
            );
            return None;
        }
    };
    let mut kinds = Vec::new();
    if let Some(v) = &r.volume {
        check_volume(
            errs,
            &format!("{path}.volume.volumeClaimSpec"),
            &v.volume_claim_spec,
        );
        kinds.push(RepoStorage::Volume(v.volume_claim_spec.clone()));
    }
    if let Some(s) = &r.s3 {
        kinds.push(RepoStorage::S3 {
            bucket: s.bucket.clone(),
            endpoint: s.endpoint.clone(),
            region: s.region.clone(),
        });
    }
    if let Some(g) = &r.gcs {
        kinds.push(RepoStorage::Gcs {
            bucket: g.bucket.clone(),
        });
    }
    if let Some(a) = &r.azure {
        kinds.push(RepoStorage::Azure {
            container: a.container.clone(),
        });
    }
    if kinds.len() != 1 {
        errs.push(
            path.to_owned(),
            format!(
                "exactly one of volume, s3, gcs, azure is required, found {}",
                kinds.len()
            ),
        );
        return None;
    }
    let schedules = r.schedules.clone().unwrap_or_default();
    for (field, value) in [
        ("full", &schedules.full),
        ("differential", &schedules.differential),
        ("incremental", &schedules.incremental),
    ] {
        if let Some(v) = value {
            if let Err(reason) = crate::cron::check(v) {
                errs.push(format!("{path}.schedules.{field}"), reason);
            }
        }
    }
    Some(RepoSettings {
        name: r.name.clone(),
        index,
        storage: kinds.remove(0),
        schedules: Schedules {
            full: schedules.full,
            differential: schedules.differential,
            incremental: schedules.incremental,
        },
    })
}

pub(super) fn data_source(errs: &mut Errors, d: &DataSource) -> Option<DataSourceSettings> {
    match (&d.postgres_cluster, &d.pgbackrest) {
        (Some(_), Some(_)) => {
            errs.push(
                "spec.dataSource",
                "at most one of postgresCluster, pgbackrest",
            );
            None
        }
        (Some(pc), None) => {
            let options = pc.options.clone().unwrap_or_default();
            check_options(
                errs,
                "spec.dataSource.postgresCluster.options",
                &options,
                MANAGED_BOOTSTRAP_RESTORE,
            );
            Some(DataSourceSettings::PostgresCluster {
                cluster_name: pc.cluster_name.clone(),
                cluster_namespace: pc.cluster_namespace.clone(),
                repo_name: pc.repo_name.clone(),
                options,
                job: JobScheduling {
                    resources: pc.resources.clone(),
                    affinity: pc.affinity.clone(),
                    tolerations: pc.tolerations.clone().unwrap_or_default(),
                    priority_class_name: pc.priority_class_name.clone(),
                },
            })
        }
        (None, Some(pb)) => {
            let options = pb.options.clone().unwrap_or_default();
            check_options(
                errs,
                "spec.dataSource.pgbackrest.options",
                &options,
                MANAGED_BOOTSTRAP_RESTORE,
            );
            let repo = repo(errs, "spec.dataSource.pgbackrest.repo", &pb.repo)?;
            if matches!(repo.storage, RepoStorage::Volume(_)) {
                errs.push(
                    "spec.dataSource.pgbackrest.repo",
                    "must be a cloud repo (s3, gcs, azure)",
                );
            }
            Some(DataSourceSettings::PgBackRest {
                stanza: pb.stanza.clone().unwrap_or_else(|| "db".to_owned()),
                configuration: pb.configuration.clone().unwrap_or_default(),
                global: string_map(pb.global.as_ref()),
                repo,
                options,
                job: JobScheduling {
                    resources: pb.resources.clone(),
                    affinity: pb.affinity.clone(),
                    tolerations: pb.tolerations.clone().unwrap_or_default(),
                    priority_class_name: pb.priority_class_name.clone(),
                },
            })
        }
        (None, None) => None,
    }
}

/// pgBackRest options Tusk sets itself on every backup (the repo comes from `repoName` or
/// `tusk local backup --repo`); `--type` stays the user's (`--type=full` in PGO manuals).
const MANAGED_BACKUP: &[&str] = &["--stanza", "--pg1-path", "--repo"];
/// ... on a restore into a new cluster (`tusk_config::restore`): `--target-action=promote`
/// comes with every target so the restored cluster can be led by Patroni.
const MANAGED_BOOTSTRAP_RESTORE: &[&str] = &["--target-action", "--pg1-path", "--stanza", "--repo"];
/// ... on an in-place restore, which is always `--delta`.
const MANAGED_IN_PLACE_RESTORE: &[&str] = &[
    "--target-action",
    "--pg1-path",
    "--stanza",
    "--repo",
    "--delta",
];

/// Options are shell words as in the PGO family's manifests (`--target="2021-06-09
/// 14:15:11-04"`); each must split, and none may name an option Tusk manages.
fn check_options(errs: &mut Errors, path: &str, options: &[String], managed: &[&str]) {
    for (i, option) in options.iter().enumerate() {
        let Some(words) = shlex::split(option).filter(|w| !w.is_empty()) else {
            errs.push(
                format!("{path}[{i}]"),
                "not a complete option (unbalanced quotes, or empty)",
            );
            continue;
        };
        for word in &words {
            let name = word.split('=').next().unwrap_or_default();
            if managed.contains(&name) {
                errs.push(format!("{path}[{i}]"), format!("{name} is managed by Tusk"));
            }
        }
    }
}

pub(super) fn standby(
    errs: &mut Errors,
    s: &StandbySpec,
    backups: Option<&BackupSettings>,
) -> StandbySettings {
    if s.enabled && s.repo_name.is_none() && s.host.is_none() {
        errs.push(
            "spec.standby",
            "an enabled standby needs repoName, host, or both",
        );
    }
    if let Some(repo) = &s.repo_name {
        if !backups.is_some_and(|b| b.repos.iter().any(|r| &r.name == repo)) {
            errs.push(
                "spec.standby.repoName",
                format!("{repo:?} is not a repo in spec.backups.pgbackrest.repos"),
            );
        }
    }
    if s.port.is_some() && s.host.is_none() {
        errs.push("spec.standby.port", "requires spec.standby.host");
    }
    let port = s.port.and_then(|p| {
        u16::try_from(p).ok().filter(|p| *p > 0).or_else(|| {
            errs.push("spec.standby.port", format!("{p} is out of range 1..65535"));
            None
        })
    });
    StandbySettings {
        enabled: s.enabled,
        repo_name: s.repo_name.clone(),
        host: s.host.clone(),
        port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(path: &str, options: &[&str], managed: &[&str]) -> Vec<String> {
        let mut errs = Errors::default();
        let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        check_options(&mut errs, path, &options, managed);
        errs.0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn in_place_restore_options_tusk_manages_are_named_by_position() {
        let base = "spec.backups.pgbackrest.restore.options";
        assert_eq!(
            reasons(
                base,
                &[
                    "--type=time",
                    "--target-action=pause",
                    "--delta",
                    "--repo=2"
                ],
                MANAGED_IN_PLACE_RESTORE
            ),
            [
                format!("{base}[1]: --target-action is managed by Tusk"),
                format!("{base}[2]: --delta is managed by Tusk"),
                format!("{base}[3]: --repo is managed by Tusk"),
            ]
        );
        // What users do set, including PGO's quoted target and a repo's own option.
        assert!(reasons(
            base,
            &[
                "--type=time",
                r#"--target="2021-06-09 14:15:11-04""#,
                "--set=20240501-000000F",
                "--db-include=zoo",
                "--target-timeline=current",
                "--repo1-path=/elsewhere",
            ],
            MANAGED_IN_PLACE_RESTORE
        )
        .is_empty());
    }

    #[test]
    fn clones_may_not_name_the_stanza_or_data_directory_but_may_use_delta() {
        let base = "spec.dataSource.postgresCluster.options";
        assert_eq!(
            reasons(
                base,
                &["--stanza db", "--pg1-path=/x", "--delta"],
                MANAGED_BOOTSTRAP_RESTORE
            ),
            [
                format!("{base}[0]: --stanza is managed by Tusk"),
                format!("{base}[1]: --pg1-path is managed by Tusk"),
            ]
        );
        assert_eq!(
            reasons(base, &["--target=\"2021"], MANAGED_BOOTSTRAP_RESTORE),
            [format!(
                "{base}[0]: not a complete option (unbalanced quotes, or empty)"
            )]
        );
    }

    #[test]
    fn manual_backups_keep_their_type_but_not_the_repo() {
        let base = "spec.backups.pgbackrest.manual.options";
        assert!(reasons(base, &["--type=full", "--start-fast"], MANAGED_BACKUP).is_empty());
        assert_eq!(
            reasons(
                base,
                &["--repo=1", "--target-action=promote"],
                MANAGED_BACKUP
            ),
            [format!("{base}[0]: --repo is managed by Tusk")]
        );
    }
}
