//! Validation of `spec.patroni`: Patroni timings (`ttl`, `loop_wait`, `retry_timeout`), its port,
//! switchover, and the parts of `dynamicConfiguration` Tusk owns.
//! Part of [`super`]'s validation; reads only the raw spec it is given. No I/O.

use super::*;

pub(super) fn patroni(errs: &mut Errors, p: Option<&PatroniSpec>, pg_port: u16) -> PatroniSettings {
    let default = PatroniSpec::default();
    let p = p.unwrap_or(&default);
    let ttl = match p.leader_lease_duration_seconds {
        None => DEFAULT_TTL_SECONDS,
        Some(t) if t >= 3 => t as u32,
        Some(t) => {
            errs.push(
                "spec.patroni.leaderLeaseDurationSeconds",
                format!("{t} must be at least 3"),
            );
            DEFAULT_TTL_SECONDS
        }
    };
    let loop_wait = match p.sync_period_seconds {
        None => DEFAULT_LOOP_WAIT_SECONDS.min(ttl.saturating_sub(2).max(1)),
        Some(s) if s >= 1 => s as u32,
        Some(s) => {
            errs.push(
                "spec.patroni.syncPeriodSeconds",
                format!("{s} must be at least 1"),
            );
            DEFAULT_LOOP_WAIT_SECONDS
        }
    };
    if loop_wait + 2 > ttl {
        errs.push(
            "spec.patroni.syncPeriodSeconds",
            format!("{loop_wait} leaves no room for retries within leaderLeaseDurationSeconds {ttl} (needs syncPeriodSeconds + 2 <= leaderLeaseDurationSeconds)"),
        );
    }
    let retry_timeout = crate::model::retry_timeout_seconds(ttl, loop_wait);
    let port = port_field(
        errs,
        "spec.patroni.port",
        p.port,
        1024,
        DEFAULT_PATRONI_PORT,
    );
    if port == pg_port {
        errs.push("spec.patroni.port", format!("{port} is also spec.port"));
    }
    if let Some(s) = &p.switchover {
        // Patroni's failover has no candidate to elect on its own: it needs a target.
        if s.type_ == Some(SwitchoverType::Failover) && s.target_instance.is_none() {
            errs.push(
                "spec.patroni.switchover.targetInstance",
                "required when type is Failover",
            );
        }
    }
    let dynamic_configuration = p.dynamic_configuration.clone().unwrap_or_default();
    check_dynamic_configuration(errs, &dynamic_configuration);
    PatroniSettings {
        leader_lease_seconds: ttl,
        sync_period_seconds: loop_wait,
        retry_timeout_seconds: retry_timeout,
        port,
        dynamic_configuration,
        switchover: p.switchover.as_ref().map(|s| SwitchoverSettings {
            enabled: s.enabled,
            target_instance: s.target_instance.clone(),
            kind: s.type_.unwrap_or_default(),
        }),
    }
}

/// Parameters Tusk owns: setting them through Patroni would break TLS, archiving or HA.
pub const RESERVED_PARAMETERS: &[&str] = &[
    "listen_addresses",
    "port",
    "data_directory",
    "hba_file",
    "ident_file",
    "ssl",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "archive_command",
    "restore_command",
    "unix_socket_directories",
];

fn check_dynamic_configuration(errs: &mut Errors, dc: &FreeForm) {
    let base = "spec.patroni.dynamicConfiguration";
    for key in ["ttl", "loop_wait", "retry_timeout"] {
        if dc.contains_key(key) {
            errs.push(
                format!("{base}.{key}"),
                "set through leaderLeaseDurationSeconds / syncPeriodSeconds instead",
            );
        }
    }
    let Some(pg) = dc.get("postgresql") else {
        return;
    };
    let Some(pg) = pg.as_object() else {
        errs.push(format!("{base}.postgresql"), "must be an object");
        return;
    };
    if let Some(params) = pg.get("parameters") {
        match params.as_object() {
            None => errs.push(format!("{base}.postgresql.parameters"), "must be an object"),
            Some(params) => {
                for (k, v) in params {
                    if RESERVED_PARAMETERS.contains(&k.as_str()) {
                        errs.push(
                            format!("{base}.postgresql.parameters.{k}"),
                            "is managed by Tusk",
                        );
                    }
                    if v.is_object() || v.is_array() {
                        errs.push(
                            format!("{base}.postgresql.parameters.{k}"),
                            "must be a string, number or boolean",
                        );
                    }
                }
            }
        }
    }
    if let Some(hba) = pg.get("pg_hba") {
        if !hba
            .as_array()
            .is_some_and(|a| a.iter().all(|l| l.is_string()))
        {
            errs.push(
                format!("{base}.postgresql.pg_hba"),
                "must be a list of strings",
            );
        }
    }
}
