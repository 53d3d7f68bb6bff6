//! The cluster's services beside the members in `tusk local`: PgBouncer (`pgbouncer`) and
//! the exporters (`exporter`), and the service roles they log in as. `up` calls
//! [`check_supported`] before it changes anything, [`ensure`] once the cluster is ready and
//! `spec.users` is applied; `spec.shutdown`, `down` call [`stop`]. The roles' passwords are generated once into the state directory
//! (`passwords`); only SCRAM verifiers reach the server, through the SQL
//! `tusk_config::service_roles` decides, run as the superuser over the primary's Unix socket
//! (once in `postgres`, and the PgBouncer lookup function in every database and `template1`).
//! Touches the primary through `sql`, and the processes and files of the two modules.

use tusk_api::ValidatedCluster;
use tusk_config::service_roles::{service_role_sql, ServiceRoleVerifiers};
use tusk_config::users::ScramVerifier;
use tusk_config::{exporter as exporter_config, pgbouncer as pgbouncer_config};

use crate::error::{Error, Result};
use crate::members::Context;
use crate::sql::{self, ConnectTarget, SqlError, MAINTENANCE_DATABASE};
use crate::state::Layout;
use crate::{exporter, passwords, pgbouncer};

/// The manifest field a failure is reported under.
const FIELD: &str = "spec.proxy.pgBouncer / spec.monitoring.pgmonitor.exporter";

/// Refuses the PgBouncer and exporter fields `tusk local` cannot honour, naming the field,
/// rather than running without them as if they were there. Each is a Kubernetes Secret or
/// ConfigMap projection; there is no API server to read one from.
pub fn check_supported(cluster: &ValidatedCluster) -> Result<()> {
    let refuse = |field: &str, reason: &str| {
        Err(Error::Unsupported {
            field: field.into(),
            reason: reason.into(),
        })
    };
    if let Some(pooler) = &cluster.pgbouncer {
        if pooler.config.files.as_ref().is_some_and(|f| !f.is_empty()) {
            return refuse(
                "spec.proxy.pgBouncer.config.files",
                "projects Kubernetes Secrets/ConfigMaps into PgBouncer's configuration, which \
                 tusk local cannot read; put the settings in config.global, databases or users",
            );
        }
        if pooler.custom_tls_secret.is_some() {
            return refuse(
                "spec.proxy.pgBouncer.customTLSSecret",
                "is a Kubernetes Secret tusk local cannot read; locally PgBouncer's certificate \
                 is issued by the cluster's CA (remove the field)",
            );
        }
    }
    if cluster
        .exporter
        .as_ref()
        .is_some_and(|e| e.custom_tls_secret.is_some())
    {
        return refuse(
            "spec.monitoring.pgmonitor.exporter.customTLSSecret",
            "is a Kubernetes Secret tusk local cannot read; locally the exporter serves plain \
             HTTP on a loopback address (remove the field)",
        );
    }
    Ok(())
}

/// Service roles, PgBouncer and exporters matching the spec, with `leader` as primary.
/// Prints the endpoints clients and Prometheus use.
pub fn ensure(
    ctx: &Context,
    ca: &tusk_pki::RootCa,
    leader: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let cluster = ctx.cluster;
    let pgbouncer_password = cluster
        .pgbouncer
        .as_ref()
        .map(|_| passwords::ensure_service_password(ctx.layout, pgbouncer_config::AUTH_USER))
        .transpose()?;
    let exporter_password = cluster
        .exporter
        .as_ref()
        .map(|_| passwords::ensure_service_password(ctx.layout, exporter_config::ROLE))
        .transpose()?;
    if pgbouncer_password.is_some() || exporter_password.is_some() {
        let target =
            ConnectTarget::superuser_socket(ctx.layout.member(leader).socket_dir(), cluster.port);
        apply_service_roles(
            &target,
            cluster,
            pgbouncer_password.as_deref(),
            exporter_password.as_deref(),
        )
        .map_err(|source| Error::Sql {
            field: FIELD,
            source,
        })?;
    }

    let primary_host = ctx.state.host(ctx.state.member(leader)?);
    let pooler = pgbouncer::ensure(
        cluster,
        ctx.state,
        ctx.layout,
        ctx.run_as,
        ca,
        &primary_host,
        pgbouncer_password.as_deref().unwrap_or_default(),
    )?;
    if let Some(done) = pooler {
        progress(&format!("pgbouncer {done}"));
    }
    if let Some(endpoint) = pgbouncer::endpoint(cluster, ctx.state) {
        progress(&format!(
            "pgbouncer listens on {}:{} (TLS), routing to the primary {primary_host}",
            endpoint.host, endpoint.port
        ));
    }
    for member in exporter::ensure(
        cluster,
        ctx.state,
        ctx.layout,
        ctx.run_as,
        exporter_password.as_deref(),
    )? {
        progress(&format!("started the exporter of {member}"));
    }
    for endpoint in exporter::endpoints(cluster, ctx.state).unwrap_or_default() {
        progress(&format!("metrics of {}: {}", endpoint.member, endpoint.url));
    }
    Ok(())
}

/// Stops PgBouncer and every exporter (before the members, so none reconnects in between).
pub fn stop(layout: &Layout) {
    pgbouncer::stop(layout);
    exporter::stop_all(layout);
}

/// The role SQL on the primary, through the shared executor (which skips work the server
/// records as done). A verifier already stored for the same password is reused, so a
/// repeated `up` produces the same statements and changes nothing.
fn apply_service_roles(
    target: &ConnectTarget,
    cluster: &ValidatedCluster,
    pgbouncer_password: Option<&str>,
    exporter_password: Option<&str>,
) -> Result<(), SqlError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SqlError::Runtime)?;
    runtime.block_on(async {
        let client = sql::connect(target, MAINTENANCE_DATABASE).await?;
        let mut verifiers = Vec::new();
        for (role, password) in [
            (pgbouncer_config::AUTH_USER, pgbouncer_password),
            (exporter_config::ROLE, exporter_password),
        ] {
            let verifier = match password {
                None => None,
                Some(password) => Some(match sql::stored_password(&client, role).await? {
                    Some(stored)
                        if ScramVerifier::parse(&stored).is_some_and(|v| v.verifies(password)) =>
                    {
                        stored
                    }
                    _ => ScramVerifier::new(password).to_string(),
                }),
            };
            verifiers.push(verifier);
        }
        let statements = service_role_sql(
            cluster,
            ServiceRoleVerifiers {
                pgbouncer: verifiers[0].as_deref(),
                exporter: verifiers[1].as_deref(),
            },
        )
        .expect("a verifier is made for every component the cluster has");
        sql::apply_service_roles(target, &statements).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster with PgBouncer and the exporter; `pooler` and `exporter` go under their
    /// sections (YAML flow mappings).
    fn cluster(pooler: &str, exporter: &str) -> ValidatedCluster {
        tusk_api::validate_yaml(&format!(
            "apiVersion: tusk.rs/v1beta1
kind: PostgresCluster
metadata: {{name: reef}}
spec:
  postgresVersion: 15
  instances: [{{name: i1, dataVolumeClaimSpec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}}}]
  proxy: {{pgBouncer: {pooler}}}
  monitoring: {{pgmonitor: {{exporter: {exporter}}}}}
"
        ))
        .expect("valid manifest")
    }

    fn refused_field(cluster: &ValidatedCluster) -> String {
        match check_supported(cluster) {
            Err(Error::Unsupported { field, .. }) => field,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn pooler_and_exporter_without_kubernetes_projections_are_accepted() {
        check_supported(&cluster(
            "{config: {global: {pool_mode: transaction}}}",
            "{}",
        ))
        .expect("supported locally");
        check_supported(&cluster("{config: {files: []}}", "{}")).expect("no file projected");
    }

    #[test]
    fn pgbouncer_config_files_are_refused_naming_the_field() {
        let c = cluster(
            "{config: {files: [{secret: {name: pgbouncer-extra}}]}}",
            "{}",
        );
        assert_eq!(refused_field(&c), "spec.proxy.pgBouncer.config.files");
    }

    #[test]
    fn pgbouncer_custom_tls_secret_is_refused_naming_the_field() {
        let c = cluster("{customTLSSecret: {name: pooler-tls}}", "{}");
        assert_eq!(refused_field(&c), "spec.proxy.pgBouncer.customTLSSecret");
    }

    #[test]
    fn exporter_custom_tls_secret_is_refused_naming_the_field() {
        let c = cluster("{}", "{customTLSSecret: {name: exporter-tls}}");
        let error = check_supported(&c).unwrap_err().to_string();
        assert!(
            error.starts_with("spec.monitoring.pgmonitor.exporter.customTLSSecret: "),
            "{error}"
        );
    }
}
