//! PostgreSQL parameters: the ones Tusk requires, Tusk's defaults, and the user's
//! `spec.patroni.dynamicConfiguration.postgresql.parameters`.
//!
//! Precedence, lowest first: Tusk's defaults < the user's values < Tusk's requirements. Keys
//! Tusk owns outright (`ssl`, file paths, `archive_command`, ...) are rejected by api
//! validation ([`tusk_api::validate::RESERVED_PARAMETERS`]); the remaining requirements are
//! *floors*: the user may choose a stronger value (`wal_level: logical`,
//! `ssl_min_protocol_version: TLSv1.3`) but never a weaker one, which is silently raised.
//!
//! Parameters are split in two because Patroni keeps them in two places: [`cluster_parameters`]
//! go into the DCS (identical on every member; Patroni insists that e.g. `wal_level` and
//! `max_wal_senders` come from there), [`member_parameters`] into each member's own file
//! (paths differ per member in `tusk local`). Pure functions; no I/O.

use std::collections::BTreeMap;

use serde_json::Value;
use tusk_api::ValidatedCluster;

use crate::paths::{tls_file, TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE};

/// Parameter name -> value as PostgreSQL reads it from `postgresql.conf`.
pub type Parameters = BTreeMap<String, String>;

/// The pgBackRest stanza of every cluster: one cluster per repository path, so a fixed name
/// keeps commands and `pgbackrest.conf` simple.
pub const PGBACKREST_STANZA: &str = "db";

/// `archive_command` when backups are configured. pgBackRest's asynchronous archiving is
/// configured in `pgbackrest.conf`, so the command stays the same either way.
pub fn archive_command() -> String {
    format!("pgbackrest --stanza={PGBACKREST_STANZA} archive-push \"%p\"")
}

/// `restore_command`: fetch WAL from the repository, `repo` (1..=4) pins one repository
/// (a standby cluster follows a named repo); `None` lets pgBackRest try them in order.
pub fn restore_command(repo: Option<u8>) -> String {
    let repo = repo.map(|r| format!(" --repo={r}")).unwrap_or_default();
    format!("pgbackrest --stanza={PGBACKREST_STANZA}{repo} archive-get %f \"%p\"")
}

/// Parameters stored in the DCS: the same on every member.
pub fn cluster_parameters(cluster: &ValidatedCluster) -> Parameters {
    let mut parameters = tusk_defaults(cluster);
    parameters.extend(user_parameters(cluster));
    apply_requirements(&mut parameters, cluster);
    parameters
}

/// Parameters naming this member's files: socket directory and server certificate.
pub fn member_parameters(socket_dir: &str, server_tls_dir: &str) -> Parameters {
    Parameters::from([
        ("unix_socket_directories".into(), socket_dir.into()),
        (
            "ssl_cert_file".into(),
            tls_file(server_tls_dir, TLS_CERT_FILE),
        ),
        (
            "ssl_key_file".into(),
            tls_file(server_tls_dir, TLS_KEY_FILE),
        ),
        // The CA that signed replication client certificates: `cert` authentication in
        // pg_hba checks client certificates against it.
        ("ssl_ca_file".into(), tls_file(server_tls_dir, TLS_CA_FILE)),
    ])
}

/// Defaults a user may override.
fn tusk_defaults(cluster: &ValidatedCluster) -> Parameters {
    let mut p = Parameters::from([
        // Enough for every instance plus pg_basebackup/pg_rewind and backup tooling. Patroni
        // itself refuses fewer than 3 senders / 4 slots.
        ("max_wal_senders".into(), "10".into()),
        ("max_replication_slots".into(), "10".into()),
        // WAL kept beyond what slots hold, so a replica that lost its slot (e.g. recreated)
        // can still catch up by streaming instead of a full re-clone. With backups the
        // archive covers longer gaps; without them this is the only cushion.
        ("wal_keep_size".into(), "512MB".into()),
        // Container logs are the log pipeline: one line per event with its time and session.
        ("log_line_prefix".into(), "%m [%p] %q%u@%d ".into()),
    ]);
    if cluster.backups.is_some() {
        // Bounds how much committed work sits only in an unarchived WAL segment when the
        // primary is idle; a minute is the PGO family's choice.
        p.insert("archive_timeout".into(), "60s".into());
    }
    p
}

/// The user's `dynamicConfiguration.postgresql.parameters`, as strings. Validation already
/// rejected reserved keys and non-scalar values.
pub fn user_parameters(cluster: &ValidatedCluster) -> Parameters {
    cluster
        .patroni
        .dynamic_configuration
        .get("postgresql")
        .and_then(|pg| pg.get("parameters"))
        .and_then(Value::as_object)
        .map(|params| {
            params
                .iter()
                .map(|(name, value)| (name.clone(), scalar_to_setting(value)))
                .collect()
        })
        .unwrap_or_default()
}

/// A YAML scalar as PostgreSQL spells it: booleans become `on`/`off`.
fn scalar_to_setting(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "on".into(),
        Value::Bool(false) => "off".into(),
        other => other.to_string(),
    }
}

/// Settings TLS, HA and archiving depend on. Applied last so nothing can weaken them.
fn apply_requirements(p: &mut Parameters, cluster: &ValidatedCluster) {
    // TLS on every TCP connection; pg_hba refuses non-TLS ones.
    p.insert("ssl".into(), "on".into());
    at_least(p, "ssl_min_protocol_version", SSL_PROTOCOLS, "TLSv1.2");
    // MD5 hashes are replayable and weak; SCRAM is what users' passwords are stored as.
    p.insert("password_encryption".into(), "scram-sha-256".into());

    // Streaming replicas need at least `replica`; `logical` is a superset users may want.
    at_least(p, "wal_level", WAL_LEVELS, "replica");
    // Replicas serve read-only queries (the `-replicas` Service).
    p.insert("hot_standby".into(), "on".into());
    // pg_rewind needs hint-bit changes WAL-logged to rejoin a failed primary as a replica
    // instead of re-cloning it. Data checksums imply this, but clusters from a dataSource may
    // have been created without them.
    p.insert("wal_log_hints".into(), "on".into());

    // Logs go to the container's stderr (kubectl logs / the local runtime's log files); a
    // logging collector would write files inside PGDATA nobody reads.
    p.insert("log_destination".into(), "stderr".into());
    p.insert("logging_collector".into(), "off".into());

    if cluster.backups.is_some() {
        at_least(p, "archive_mode", ARCHIVE_MODES, "on");
        p.insert("archive_command".into(), archive_command());
        p.insert("restore_command".into(), restore_command(None));
    } else {
        // archive_mode without an archive_command keeps every WAL segment forever and fills the
        // disk; with no repository there is nowhere to archive to.
        p.insert("archive_mode".into(), "off".into());
        p.remove("archive_timeout");
    }
}

/// Values of an ordered setting, weakest first; aliases share a rank.
type Ranking = &'static [(&'static str, u8)];

const WAL_LEVELS: Ranking = &[
    ("minimal", 0),
    ("archive", 1),
    ("hot_standby", 1),
    ("replica", 1),
    ("logical", 2),
];
const SSL_PROTOCOLS: Ranking = &[("tlsv1", 0), ("tlsv1.1", 1), ("tlsv1.2", 2), ("tlsv1.3", 3)];
const ARCHIVE_MODES: Ranking = &[
    ("off", 0),
    ("false", 0),
    ("no", 0),
    ("0", 0),
    ("on", 1),
    ("true", 1),
    ("yes", 1),
    ("1", 1),
    ("always", 2),
];

/// Keeps the current value of `name` when it ranks at or above `floor`, else sets `floor`.
/// Unknown spellings are replaced too: PostgreSQL would refuse to start on them.
fn at_least(p: &mut Parameters, name: &str, ranking: Ranking, floor: &str) {
    let rank = |v: &str| {
        let v = v.to_ascii_lowercase();
        ranking.iter().find(|(s, _)| *s == v).map(|(_, r)| *r)
    };
    let floor_rank = rank(floor).expect("floor is in its ranking");
    let keep = p
        .get(name)
        .and_then(|current| rank(current))
        .is_some_and(|r| r >= floor_rank);
    if !keep {
        p.insert(name.into(), floor.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::cluster_from;

    use crate::test_support::BASE;

    const BACKUPS: &str = r#"
  backups:
    pgbackrest:
      repos: [{name: repo1, volume: {volumeClaimSpec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}}]
"#;

    fn with_parameters(params: &str) -> String {
        format!("{BASE}  patroni:\n    dynamicConfiguration:\n      postgresql:\n        parameters: {params}\n")
    }

    #[test]
    fn required_settings_are_always_present() {
        let p = cluster_parameters(&cluster_from(BASE));
        for (name, value) in [
            ("ssl", "on"),
            ("ssl_min_protocol_version", "TLSv1.2"),
            ("password_encryption", "scram-sha-256"),
            ("wal_level", "replica"),
            ("hot_standby", "on"),
            ("wal_log_hints", "on"),
            ("log_destination", "stderr"),
            ("max_wal_senders", "10"),
            ("max_replication_slots", "10"),
        ] {
            assert_eq!(p.get(name).map(String::as_str), Some(value), "{name}");
        }
    }

    #[test]
    fn archiving_only_with_backups() {
        let without = cluster_parameters(&cluster_from(BASE));
        assert_eq!(without["archive_mode"], "off");
        assert!(!without.contains_key("archive_command"));
        assert!(!without.contains_key("restore_command"));
        assert!(!without.contains_key("archive_timeout"));

        let with = cluster_parameters(&cluster_from(&format!("{BASE}{BACKUPS}")));
        assert_eq!(with["archive_mode"], "on");
        assert_eq!(
            with["archive_command"],
            r#"pgbackrest --stanza=db archive-push "%p""#
        );
        assert_eq!(
            with["restore_command"],
            r#"pgbackrest --stanza=db archive-get %f "%p""#
        );
        assert_eq!(with["archive_timeout"], "60s");
    }

    #[test]
    fn user_values_override_defaults_and_are_stringified() {
        let p = cluster_parameters(&cluster_from(&with_parameters(
            "{max_wal_senders: 20, wal_keep_size: 1GB, jit: false, work_mem: 2MB}",
        )));
        assert_eq!(p["max_wal_senders"], "20");
        assert_eq!(p["wal_keep_size"], "1GB");
        assert_eq!(p["jit"], "off");
        assert_eq!(p["work_mem"], "2MB");
    }

    #[test]
    fn requirements_are_floors_users_may_only_raise() {
        let weaker = cluster_parameters(&cluster_from(&with_parameters(
            "{wal_level: minimal, ssl_min_protocol_version: TLSv1, password_encryption: md5, hot_standby: 'off'}",
        )));
        assert_eq!(weaker["wal_level"], "replica");
        assert_eq!(weaker["ssl_min_protocol_version"], "TLSv1.2");
        assert_eq!(weaker["password_encryption"], "scram-sha-256");
        assert_eq!(weaker["hot_standby"], "on");

        let stronger = cluster_parameters(&cluster_from(&with_parameters(
            "{wal_level: logical, ssl_min_protocol_version: TLSv1.3}",
        )));
        assert_eq!(stronger["wal_level"], "logical");
        assert_eq!(stronger["ssl_min_protocol_version"], "TLSv1.3");
    }

    #[test]
    fn archive_mode_always_is_kept_but_not_without_backups() {
        let params = "{archive_mode: always}";
        let with = cluster_parameters(&cluster_from(&format!(
            "{}{BACKUPS}",
            with_parameters(params)
        )));
        assert_eq!(with["archive_mode"], "always");
        let without = cluster_parameters(&cluster_from(&with_parameters(params)));
        assert_eq!(without["archive_mode"], "off");
    }

    #[test]
    fn member_parameters_name_the_member_files() {
        let p = member_parameters("/run/m1", "/certs/m1");
        assert_eq!(p["unix_socket_directories"], "/run/m1");
        assert_eq!(p["ssl_cert_file"], "/certs/m1/tls.crt");
        assert_eq!(p["ssl_key_file"], "/certs/m1/tls.key");
        assert_eq!(p["ssl_ca_file"], "/certs/m1/ca.crt");
    }

    #[test]
    fn restore_command_can_pin_a_repo() {
        assert_eq!(
            restore_command(Some(2)),
            r#"pgbackrest --stanza=db --repo=2 archive-get %f "%p""#
        );
    }
}
