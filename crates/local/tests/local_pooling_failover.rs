//! PgBouncer in `tusk local` follows an UNPLANNED failover with no `tusk` command run: on a
//! real 3-member cluster (127.45.3.x, PgBouncer on .250) the primary's Patroni, postmaster and
//! backends are SIGKILLed; once another member leads, a new connection through the Secret's
//! `pgbouncer-uri` reaches a server out of recovery and writes succeed, PgBouncer kept its pid,
//! and its ini is the one `up` rendered for the new primary (put there by the Patroni callback,
//! since nothing else ran). Also: `up` refuses PgBouncer/exporter fields local mode cannot
//! honour before it creates anything.

mod common;
#[path = "common/ha.rs"]
mod ha;

use std::time::{Duration, Instant};

use common::psql;
use ha::Cluster;

const POOLER_PORT: u16 = 6432;

fn pooling_manifest(pooler_extra: &str) -> String {
    common::manifest(
        "reef",
        3,
        &format!(
            "  users:\n    - name: app\n      databases: [reef]\n  proxy:\n    pgBouncer:\n      \
             port: {POOLER_PORT}\n{pooler_extra}"
        ),
    )
}

fn pooler_pid(cluster: &Cluster) -> u32 {
    cluster
        .status()
        .pgbouncer
        .expect("status reports pgbouncer")
        .pid
        .expect("pgbouncer runs")
}

#[test]
fn pgbouncer_follows_a_crashed_primary_without_tusk() {
    let cluster = Cluster::new("127.45.3");
    cluster
        .up(&cluster.write_manifest(&pooling_manifest("")))
        .expect("up");
    let old = cluster.leader();
    let old_host = cluster.host_of(&old);
    let pid = pooler_pid(&cluster);
    let uri = tusk_local::secret(&cluster.layout(), "app")
        .unwrap()
        .to_map()["pgbouncer-uri"]
        .clone();
    let where_am_i = "SELECT host(inet_server_addr()) || ' ' || pg_is_in_recovery()";
    assert_eq!(psql(&uri, where_am_i).unwrap(), format!("{old_host} false"));
    psql(&uri, "CREATE TABLE probe (id int PRIMARY KEY)").unwrap();

    cluster.crash_member(&old);
    let new = cluster.wait_new_leader(&old);
    let new_host = cluster.host_of(&new);
    assert_ne!(new_host, old_host);

    // Bounded: the callback runs right after `pg_ctl promote`, so for a moment PgBouncer may
    // reach the new primary while it still finishes recovery.
    let start = Instant::now();
    let written = loop {
        let attempt = psql(
            &uri,
            "INSERT INTO probe VALUES (1) \
             RETURNING host(inet_server_addr()) || ' ' || pg_is_in_recovery()",
        );
        match attempt {
            Ok(answer) => break answer,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(60),
                "no write through PgBouncer after the failover to {new} ({new_host}): {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(written, format!("{new_host} false"));
    assert_eq!(psql(&uri, where_am_i).unwrap(), format!("{new_host} false"));
    assert_eq!(
        psql(&uri, "SELECT count(*) FROM probe").unwrap(),
        "1",
        "the write landed elsewhere"
    );
    assert_eq!(pooler_pid(&cluster), pid, "PgBouncer was restarted");

    let paths = tusk_local::pgbouncer::Paths::new(&cluster.layout());
    let live = std::fs::read_to_string(paths.ini()).unwrap();
    assert_eq!(
        live,
        std::fs::read_to_string(paths.ini_for_primary(&new)).unwrap(),
        "pgbouncer.ini is not the one rendered for the new primary {new}"
    );
    assert!(
        live.contains(&format!("host={new_host} port=5432")),
        "{live}"
    );
    // Patroni logs a callback it could not start and carries on; the script's own errors
    // (its stderr is Patroni's log) name the script or the ini.
    for member in cluster.status().members {
        let log = std::fs::read_to_string(cluster.layout().member(&member.name).log()).unwrap();
        let complaint = [
            "Failed to execute",
            "callback",
            "follow-primary",
            "pgbouncer.ini",
        ];
        assert!(
            !complaint.iter().any(|c| log.contains(c)),
            "{}: {log}",
            member.name
        );
    }
}

#[test]
fn up_refuses_pooler_and_exporter_fields_local_mode_cannot_honour() {
    let cases = [
        (
            "      config:\n        files:\n          - secret: {name: extra-ini}\n",
            "spec.proxy.pgBouncer.config.files: ",
        ),
        (
            "      customTLSSecret: {name: pooler-tls}\n",
            "spec.proxy.pgBouncer.customTLSSecret: ",
        ),
        (
            "  monitoring: {pgmonitor: {exporter: {customTLSSecret: {name: exporter-tls}}}}\n",
            "spec.monitoring.pgmonitor.exporter.customTLSSecret: ",
        ),
    ];
    for (extra, field) in cases {
        let cluster = Cluster::new("127.45.4");
        let error = cluster
            .up(&cluster.write_manifest(&pooling_manifest(extra)))
            .expect_err("up accepted a field local mode ignores")
            .to_string();
        assert!(error.starts_with(field), "{error}");
        assert!(
            !cluster.state_dir.exists(),
            "up created {} before refusing",
            cluster.state_dir.display()
        );
    }
}
