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
        RepoOptions {
            repo_name: m.repo_name.clone(),
            options: m.options.clone().unwrap_or_default(),
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
        for (i, o) in options.iter().enumerate() {
            if o.starts_with("--target-action") {
                errs.push(
                    format!("{base}.restore.options[{i}]"),
                    "--target-action is managed by Tusk",
                );
            }
        }
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
            check_restore_options(errs, "spec.dataSource.postgresCluster.options", &options);
            Some(DataSourceSettings::PostgresCluster {
                cluster_name: pc.cluster_name.clone(),
                cluster_namespace: pc.cluster_namespace.clone(),
                repo_name: pc.repo_name.clone(),
                options,
            })
        }
        (None, Some(pb)) => {
            let options = pb.options.clone().unwrap_or_default();
            check_restore_options(errs, "spec.dataSource.pgbackrest.options", &options);
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
            })
        }
        (None, None) => None,
    }
}

fn check_restore_options(errs: &mut Errors, path: &str, options: &[String]) {
    for (i, o) in options.iter().enumerate() {
        for managed in ["--target-action", "--pg1-path", "--stanza", "--repo="] {
            if o.starts_with(managed) {
                errs.push(
                    format!("{path}[{i}]"),
                    format!("{managed} is managed by Tusk"),
                );
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
