//! PgBouncer as an application uses it: the `pgbouncer-uri` of the user's Secret, from a pod,
//! with `sslmode=verify-full` against the CA the user brought, through `<c>-pgbouncer`.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams};
use tusk_api::naming;

use super::{pod_ip, pod_name, Ctx};
use crate::kube_support::eventually;

/// A row the first scenario writes through the pooler and the failover scenario reads back.
const TOKEN: &str = "written-through-pgbouncer";

/// The default user of a cluster without `spec.users`: named after the cluster.
fn user(ctx: &Ctx) -> String {
    ctx.cluster.clone()
}

fn secret_text(secret: &Secret, key: &str) -> String {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("the user Secret has no {key}"));
    String::from_utf8(bytes.0.clone()).expect("UTF-8")
}

/// The value after `prefix` on the log's line starting with it.
fn line_value<'l>(log: &'l str, prefix: &str) -> Option<&'l str> {
    log.lines().find_map(|l| l.strip_prefix(prefix))
}

pub async fn pgbouncer_uri_serves_over_verified_tls(ctx: &Ctx<'_>) {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ctx.namespace);
    let secret = secrets
        .get(&ctx.names.user_secret(&user(ctx)))
        .await
        .expect("the user's Secret");
    let pooler_host = format!("{}.{}.svc", ctx.names.pgbouncer(), ctx.namespace);
    assert_eq!(secret_text(&secret, "pgbouncer-host"), pooler_host);
    let uri = secret_text(&secret, "pgbouncer-uri");
    assert!(
        uri.contains(&format!("@{pooler_host}:")),
        "pgbouncer-uri names the pooler's Service"
    );

    let poolers: Vec<String> = ctx
        .pods(&format!(
            "{}={}",
            naming::LABEL_ROLE,
            naming::ROLE_PGBOUNCER
        ))
        .await
        .iter()
        .map(pod_ip)
        .collect();
    assert!(!poolers.is_empty(), "PgBouncer pods run");
    let leader = ctx.leader().await;
    let instances = ctx.pods(naming::LABEL_INSTANCE).await;
    let primary_ip = instances
        .iter()
        .find(|p| pod_name(p) == leader)
        .map(pod_ip)
        .expect("the leader's pod");

    // `\conninfo` reports the client side (application to PgBouncer); the queries report the
    // server side (PgBouncer to PostgreSQL): the session's client is a PgBouncer pod.
    // Every result is printed at the end, together: a line lost from the start of a short
    // container's log (seen once on the test node) cannot then be mistaken for a failure.
    let script = format!(
        "psql \"$PGURI\" -v ON_ERROR_STOP=1 -qc 'create table pooled (v text)' \
           -c \"insert into pooled values ('{TOKEN}')\"\n\
         read=$(psql \"$PGURI\" -v ON_ERROR_STOP=1 -tAc 'select v from pooled')\n\
         conninfo=$(psql \"$PGURI\" -v ON_ERROR_STOP=1 -c '\\conninfo')\n\
         client=$(psql \"$PGURI\" -v ON_ERROR_STOP=1 -tAc 'select host(client_addr) from pg_stat_activity where pid = pg_backend_pid()')\n\
         server=$(psql \"$PGURI\" -v ON_ERROR_STOP=1 -tAc 'select host(inet_server_addr())')\n\
         printf 'read: %s\\n%s\\nclient: %s\\nserver: %s\\n' \"$read\" \
           \"$(echo \"$conninfo\" | sed 's/^/conninfo: /')\" \"$client\" \"$server\""
    );
    let job = ctx
        .psql_job("pgbouncer-check", &user(ctx), "pgbouncer-uri", &script)
        .await;
    assert!(job.succeeded, "the psql Job failed:\n{}", job.log);
    assert_eq!(line_value(&job.log, "read: "), Some(TOKEN), "{}", job.log);
    assert!(
        job.log
            .lines()
            .any(|l| l.starts_with("conninfo: SSL connection")),
        "the application's session with PgBouncer is TLS:\n{}",
        job.log
    );
    let client = line_value(&job.log, "client: ").unwrap_or_default();
    assert!(
        poolers.iter().any(|ip| ip == client),
        "PostgreSQL's client is a PgBouncer pod ({poolers:?}), not {client:?}:\n{}",
        job.log
    );
    assert_eq!(
        line_value(&job.log, "server: "),
        Some(primary_ip.as_str()),
        "PgBouncer forwards to the primary:\n{}",
        job.log
    );

    // The same URI with CAs that did not sign the pooler's certificate is refused.
    let wrong_ca = ctx
        .psql_job(
            "pgbouncer-wrong-ca",
            &user(ctx),
            "pgbouncer-uri",
            "PGSSLROOTCERT=/etc/ssl/certs/ca-certificates.crt psql \"$PGURI\" -tAc 'select 1'",
        )
        .await;
    assert!(
        !wrong_ca.succeeded,
        "verify-full refuses a CA that did not sign PgBouncer's certificate:\n{}",
        wrong_ca.log
    );
    assert!(
        wrong_ca.log.contains("certificate verify failed"),
        "{}",
        wrong_ca.log
    );
}

/// The primary's pod is deleted; the same `pgbouncer-uri` then writes to the new primary,
/// and the row written before the failover is still there.
pub async fn pgbouncer_uri_writes_to_the_new_primary_after_failover(ctx: &Ctx<'_>) {
    let old_leader = ctx.leader().await;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ctx.namespace);
    pods.delete(&old_leader, &DeleteParams::default())
        .await
        .expect("deleting the primary's pod");
    let new_leader = eventually("a new Patroni leader", Duration::from_secs(180), || async {
        let leader = ctx.current_leader().await?;
        (leader != old_leader).then_some(leader)
    })
    .await;

    // Retried inside the pod: PgBouncer drops its connections to the old primary and dials
    // `<c>-primary` again, which follows the leader once Patroni moved its endpoint.
    let script = "ok=\n\
        for _ in $(seq 1 30); do\n\
          if out=$(psql \"$PGURI\" -v ON_ERROR_STOP=1 -qtAc \
             \"insert into pooled values ('after-failover') returning host(inet_server_addr())\" 2>&1); then\n\
            ok=$out; break\n\
          fi\n\
          echo \"retry: $out\"; sleep 3\n\
        done\n\
        [ -n \"$ok\" ]\n\
        rows=$(psql \"$PGURI\" -v ON_ERROR_STOP=1 -tAc \"select string_agg(v, ',' order by v) from pooled\")\n\
        printf 'server: %s\\nrows: %s\\n' \"$ok\" \"$rows\"";
    let job = ctx
        .psql_job("pgbouncer-failover", &user(ctx), "pgbouncer-uri", script)
        .await;
    assert!(
        job.succeeded,
        "no write through pgbouncer-uri after the failover:\n{}",
        job.log
    );
    let new_ip = eventually(
        "the new leader's pod IP",
        Duration::from_secs(60),
        || async {
            let pod = pods.get(&new_leader).await.ok()?;
            Some(pod_ip(&pod)).filter(|ip| !ip.is_empty())
        },
    )
    .await;
    assert_eq!(
        line_value(&job.log, "server: "),
        Some(new_ip.as_str()),
        "the write landed on the new primary {new_leader}:\n{}",
        job.log
    );
    assert_eq!(
        line_value(&job.log, "rows: "),
        Some(format!("after-failover,{TOKEN}").as_str()),
        "{}",
        job.log
    );
}
