//! The reconcile of one `PostgresCluster`, as a pipeline you can read top to bottom:
//!
//! dereference -> validate -> custom TLS -> plan -> restore gate -> material -> build (pure)
//! -> apply -> Patroni's dynamic configuration -> requested switchover -> SQL (users, service
//! roles) -> backup and restore Jobs -> status
//!
//! Only `dereference` (with `custom_tls`'s read), `apply` and `status` hold the client. An
//! invalid spec, unusable custom TLS Secrets or `spec.paused` stop the pipeline before
//! anything is written except the cluster's status. Every change to
//! an object and every error becomes an Event on the cluster (never with secret values).

pub mod apply;
pub mod archiver;
pub mod backup_records;
pub mod backup_report;
pub mod backups;
pub mod custom_tls;
pub mod deletion;
pub mod dereference;
pub mod error;
pub mod initial_backup;
pub mod patroni_dcs;
pub mod restore;
pub mod root_ca;
pub mod sql;
pub mod stanza;
pub mod status;
pub mod stop_order;
pub mod switchover;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tokio::sync::watch;
use tusk_api::{PostgresCluster, ValidatedCluster, ValidationErrors};

use self::apply::{Change, Changed};
use self::dereference::Observed;
pub use self::error::Error;
use self::status::Outcome;
use crate::build::{build, BuildInput};
use crate::discovery::ServedKinds;
use crate::images::Images;
use crate::material::{
    custom_client_ca_bundle, tls_material, user_passwords, user_verifiers, Material,
};
use crate::metrics::{ClusterObservation, Metrics};
use crate::plan::plan_instances;

/// Name the operator reports Events and leases under.
pub const CONTROLLER_NAME: &str = "tusk-operator";

/// How often a healthy cluster is looked at again without a watch event: Patroni moves the
/// `master` label on pods, which the controller does not watch.
const RESYNC: Duration = Duration::from_secs(60);
/// Sooner while instances are coming up.
const RESYNC_PROGRESSING: Duration = Duration::from_secs(15);
/// How long one reconcile waits for the archiver before an in-place restore (then it
/// requeues): long enough for a healthy archive_command, short enough not to stall others.
const WAL_ARCHIVE_WAIT: Duration = Duration::from_secs(20);

/// The operator's namespace when `POD_NAMESPACE` is not set (the install manifests' namespace).
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "tusk-system";

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub images: Images,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// `true` while this replica holds the leader lease; only the leader writes.
    pub leader: watch::Receiver<bool>,
    /// Where the root CA Secret `tusk-root-cacert` lives (the operator's own namespace).
    pub operator_namespace: String,
    /// Managed kinds the API server serves; the others are skipped and reported.
    pub served: ServedKinds,
    /// Latest `pg_stat_archiver` figures per cluster (written by the step that reads them),
    /// for the `WALArchiving` condition.
    pub archiver: Arc<backups::ArchiverReports>,
    /// Which finished backups the SQL step already recorded for the exporter, per cluster.
    pub backup_records: Arc<backup_records::BackupRecords>,
    /// Where the SQL step dials a cluster's primary (tests point it at their own server).
    pub primary_resolver: Arc<dyn sql::PrimaryResolver>,
    /// The operator's client certificate for the SQL step, in memory only.
    pub operator_identity: Arc<sql::OperatorIdentity>,
    /// How long each step of a root rollover waits for the previous one to reach every pod
    /// ([`crate::material::TRUST_SETTLE`]; tests shorten it).
    pub trust_settle: Duration,
}

impl Context {
    /// A context that always leads (tests, single-replica runs).
    pub fn new(client: Client, images: Images, metrics: Arc<Metrics>) -> Self {
        Self::with_leadership(client, images, metrics, watch::channel(true).1)
    }

    pub fn with_leadership(
        client: Client,
        images: Images,
        metrics: Arc<Metrics>,
        leader: watch::Receiver<bool>,
    ) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            images,
            metrics,
            leader,
            operator_namespace: DEFAULT_OPERATOR_NAMESPACE.to_owned(),
            served: ServedKinds::all(),
            archiver: Arc::default(),
            backup_records: Arc::default(),
            primary_resolver: Arc::new(sql::ServiceResolver),
            operator_identity: Arc::default(),
            trust_settle: crate::material::TRUST_SETTLE,
        }
    }
}

/// Reconciles one cluster; the entry point the kube-rs `Controller` calls.
pub async fn reconcile(cluster: Arc<PostgresCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !*ctx.leader.borrow() {
        // A replica that lost the lease must not write; the new leader takes over.
        return Ok(Action::await_change());
    }
    if cluster.metadata.deletion_timestamp.is_some() {
        return Ok(deletion::clean_up(&ctx.client, &cluster).await?);
    }
    let cluster = match deletion::ensure_finalizer(&ctx.client, &cluster).await? {
        Some(updated) => Arc::new(updated),
        None => cluster,
    };
    let started = Instant::now();
    let result = pipeline(&cluster, &ctx).await;
    ctx.metrics
        .observe_reconcile(result.as_ref().err().map(Error::reason), started.elapsed());
    match result {
        Ok(action) => Ok(action),
        Err(error) => {
            report_failure(&cluster, &ctx, &error).await;
            match error {
                // Retrying cannot fix a spec; the next edit of it triggers a reconcile.
                Error::InvalidSpec(_) => Ok(Action::await_change()),
                // The fix is an edit of the user's Secrets, which the controller does not
                // watch (it owns none of them): look again on the resync period.
                Error::InvalidCustomTls(_) => Ok(Action::requeue(RESYNC)),
                other => Err(other),
            }
        }
    }
}

/// The requeue after a failed reconcile (the failure was already reported).
pub fn error_policy(_cluster: Arc<PostgresCluster>, _error: &Error, _ctx: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(10))
}

async fn pipeline(cluster: &PostgresCluster, ctx: &Context) -> Result<Action, Error> {
    let namespace = cluster
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingMetadata("metadata.namespace"))?;
    let name = cluster
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingMetadata("metadata.name"))?;
    let current = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;

    let observed =
        dereference::dereference_served(&ctx.client, namespace, name, &ctx.served).await?;
    let validated = tusk_api::validate(cluster).map_err(Error::InvalidSpec)?;
    if validated.paused {
        let next = status::next_status(&current, generation, &Outcome::Paused, status::now());
        status::patch_status(&ctx.client, cluster, &current, &next).await?;
        return Ok(Action::await_change());
    }
    let custom_tls_secrets =
        custom_tls::read_custom_tls(&ctx.client, namespace, &validated.tls).await?;
    if let Some(secrets) = &custom_tls_secrets {
        let findings =
            custom_tls::check_custom_tls(&validated, secrets, time::OffsetDateTime::now_utc());
        if !findings.errors.is_empty() {
            return Err(Error::InvalidCustomTls(ValidationErrors(findings.errors)));
        }
        publish_custom_tls_warnings(cluster, ctx, &findings.warnings).await;
    }
    let plan = plan_instances(&validated, &observed.instances, &mut rand::rng());
    let restore_annotation = restore::requested_restore(cluster);
    let phase = restore::decide(&validated, restore_annotation, &current, &observed, &plan);
    let clone_source = restore::prepare(&ctx.client, &validated, &phase).await?;
    let root_ca = root_ca::ensure_root_ca(&ctx.client, &ctx.operator_namespace).await?;
    let mut material = secret_material(&validated, &observed, &root_ca, ctx.trust_settle)?;
    material.custom_client_ca_pem = custom_tls_secrets
        .as_ref()
        .and_then(custom_tls::server_ca_pem)
        .map(|user_ca| custom_client_ca_bundle(&user_ca, &root_ca));
    let server_ca_pem = match (&material.tls, &custom_tls_secrets) {
        (Some(tls), _) => tls.ca_bundle_pem.clone(),
        (None, Some(secrets)) => custom_tls::server_ca_pem(secrets).unwrap_or_default(),
        (None, None) => String::new(),
    };
    let sql_input = sql::SqlInput {
        cluster: &validated,
        primary: observed.primary.as_deref(),
        material: &material,
        root_ca: &root_ca,
        server_ca_pem: &server_ca_pem,
        archiver: &ctx.archiver,
        last_backup_completion: current
            .pgbackrest
            .as_ref()
            .and_then(|p| p.last_backup_completion.as_deref()),
        backup_records: &ctx.backup_records,
    };
    // An in-place restore stops the cluster only once the WAL written so far is archived.
    let mut wal_hold = None;
    let phase = match phase {
        restore::RestorePhase::InPlace { .. } if !restore::stop_requested(&observed) => {
            match sql::archive_current_wal(
                &ctx.client,
                ctx.primary_resolver.as_ref(),
                &ctx.operator_identity,
                &sql_input,
                WAL_ARCHIVE_WAIT,
            )
            .await
            {
                sql::WalArchived::Pending { message } => {
                    wal_hold = Some(message);
                    restore::RestorePhase::Idle
                }
                sql::WalArchived::Archived { .. } | sql::WalArchived::NoPrimary => phase,
            }
        }
        other => other,
    };
    let mut desired = build(&BuildInput {
        cluster: &validated,
        images: &ctx.images,
        plan: &plan,
        material: &material,
    });
    restore::gate_instances(&mut desired, &phase);
    // Shutdown stops the primary last and starts it first (pods are read only when it can
    // matter: shutting down, or no pod is the primary).
    let stop_order = if phase == restore::RestorePhase::Idle
        && (validated.shutdown || observed.primary.is_none())
    {
        let planned = plan.instances().map(|(_, i)| i.to_owned()).collect();
        let pods = stop_order::instance_pods(&ctx.client, namespace, name).await?;
        stop_order::decide(
            validated.shutdown,
            &planned,
            &observed,
            current.primary.as_deref(),
            &pods,
        )
    } else {
        stop_order::StopOrder::Free
    };
    stop_order::hold_instances(&mut desired, &stop_order);
    desired.extend(restore::clone_objects(&validated, clone_source.as_ref()));
    let owner = cluster.controller_owner_ref(&());
    let applied = apply::apply(
        &ctx.client,
        namespace,
        owner.as_ref(),
        &desired,
        &plan.removed,
        &observed,
        &ctx.served,
    )
    .await?;
    publish_changes(cluster, ctx, &applied.changed).await;
    let instances_held = validated.shutdown || phase != restore::RestorePhase::Idle;
    let dcs = patroni_dcs::reconcile_dynamic_configuration(&ctx.client, &validated, instances_held)
        .await?;
    patroni_dcs::publish_outcome(cluster, ctx, &dcs).await;
    let instances: Vec<String> = plan.instances().map(|(_, i)| i.to_owned()).collect();
    let switched = switchover::reconcile_switchover(
        &ctx.client,
        cluster,
        &validated,
        &instances,
        instances_held,
    )
    .await?;
    switchover::publish_report(cluster, ctx, &switched).await;
    // SQL first: it reads the primary's `pg_stat_archiver`, which the backup step turns into
    // the `WALArchiving` condition in this same reconcile.
    let sql_outcome = sql::reconcile_sql(
        &ctx.client,
        ctx.primary_resolver.as_ref(),
        &ctx.operator_identity,
        &sql_input,
    )
    .await;
    publish_sql_outcome(cluster, ctx, &sql_outcome).await;
    let backup = backups::run(
        &ctx.client,
        cluster,
        &validated,
        &ctx.images.pgbackrest(&validated),
        observed.primary.as_deref(),
        instances_held,
        &current,
        ctx.archiver.latest(namespace, name),
    )
    .await?;
    let mut restored = restore::run(
        &ctx.client,
        cluster,
        &validated,
        &phase,
        clone_source.as_ref(),
        &ctx.images.database(&validated),
        &observed,
        &backup.jobs,
        &current,
    )
    .await?;
    let holding_for_wal = wal_hold.is_some();
    let rollover_pending = material
        .tls
        .as_ref()
        .is_some_and(|tls| tls.rollover_pending);
    if let Some(message) = wal_hold {
        restored.restoring = Some(backups::Verdict {
            ok: true,
            reason: "ArchivingWAL",
            message: format!(
                "the in-place restore waits for the WAL written so far to be archived: {message}"
            ),
        });
    }
    for event in backup.events.iter().chain(&restored.events) {
        publish(cluster, ctx, event).await;
    }

    let outcome = Outcome::Applied {
        desired: validated.desired_instances(),
        primary: observed
            .primary
            .clone()
            .or_else(|| stop_order.remembered_primary().map(str::to_owned)),
        statefulsets: status::list_statefulsets(&ctx.client, namespace, name).await?,
        not_served: not_served_message(&ctx.served, &applied.not_served),
    };
    let now = status::now();
    let mut next = status::next_status(&current, generation, &outcome, now);
    // Once recorded, `validate` holds `spec.postgresVersion` to it (the CEL rule's meaning).
    next.postgres_version
        .get_or_insert(validated.postgres_version as i32);
    backups::write_status(&mut next, &backup, &restored, generation, now);
    switchover::write_status(&mut next, &switched, generation, now);
    let (users_ready, reason, message) = sql_outcome.condition();
    status::set_condition(
        &mut next.conditions,
        sql::USERS_READY,
        users_ready,
        reason,
        message,
        generation,
        now,
    );
    ctx.metrics.observe_cluster(&ClusterObservation {
        namespace,
        name,
        instances_desired: validated.desired_instances(),
        instances_ready: next
            .instances
            .iter()
            .map(|set| set.ready_replicas.max(0) as u32)
            .sum(),
        primary: observed.primary.as_deref(),
        last_backup_unix: backups::last_backup_unix(&next),
    });
    if status::newly_not_served(&current, &next) {
        publish_not_served(cluster, ctx, &next).await;
    }
    status::patch_status(&ctx.client, cluster, &current, &next).await?;
    let settled = next.phase.as_deref() == Some("Running")
        && !rollover_pending
        && !holding_for_wal
        && !dcs.retry_soon()
        && !matches!(sql_outcome, sql::SqlOutcome::Failed { .. });
    Ok(Action::requeue(if switched.in_flight {
        switchover::POLL
    } else if settled {
        RESYNC
    } else {
        RESYNC_PROGRESSING
    }))
}

/// Passwords (kept from existing Secrets, generated when missing) and certificates (kept
/// while issued by `root_ca` and not due for renewal; a new root rolls out in steps `settle`
/// apart, see [`tls_material`]; none when the spec brings its own).
pub fn secret_material(
    cluster: &ValidatedCluster,
    observed: &Observed,
    root_ca: &tusk_pki::RootCa,
    settle: Duration,
) -> Result<Material, error::RootCaError> {
    let tls = tls_material(
        cluster,
        root_ca,
        &observed.existing_tls,
        time::OffsetDateTime::now_utc(),
        settle,
    )
    .map_err(|source| error::RootCaError::IssueLeaf { source })?;
    let passwords = user_passwords(cluster, &observed.passwords, &mut rand::rng());
    Ok(Material {
        verifiers: user_verifiers(cluster, &passwords, &sql::existing_verifiers(observed)),
        passwords,
        tls,
        custom_client_ca_pem: None,
    })
}

/// One Normal Event per created, updated or deleted object, naming it (never its content).
async fn publish_changes(cluster: &PostgresCluster, ctx: &Context, changed: &[Changed]) {
    for c in changed {
        let (reason, action) = match c.change {
            Change::Created => ("Created", "Apply"),
            Change::Updated => ("Updated", "Apply"),
            Change::Deleted => ("Deleted", "Delete"),
        };
        tracing::info!(kind = %c.kind, object = %c.name, change = reason, "object changed");
        let related = ObjectReference {
            api_version: Some(c.api_version.clone()),
            kind: Some(c.kind.clone()),
            name: Some(c.name.clone()),
            namespace: cluster.metadata.namespace.clone(),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(format!("{} {} {}", c.kind, c.name, reason.to_lowercase())),
            action: action.into(),
            secondary: Some(related),
        };
        publish(cluster, ctx, &event).await;
    }
}

/// A Normal Event naming what the SQL step changed (descriptions, never SQL), or a Warning
/// Event when it failed (the message names the step and server, never a secret).
async fn publish_sql_outcome(cluster: &PostgresCluster, ctx: &Context, outcome: &sql::SqlOutcome) {
    let (type_, reason, note) = match outcome {
        sql::SqlOutcome::Applied { executed } if !executed.is_empty() => {
            (EventType::Normal, "SqlStateChanged", executed.join("; "))
        }
        sql::SqlOutcome::Failed { reason, message } => {
            tracing::warn!(reason, %message, "SQL step failed");
            (EventType::Warning, *reason, message.clone())
        }
        _ => return,
    };
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(&note, 1000)),
        action: "ApplySql".into(),
        secondary: None,
    };
    publish(cluster, ctx, &event).await;
}

/// What the reconcile could not create because the server lacks the API, for the `Degraded`
/// condition and the Warning Event; `None` when everything was applied.
fn not_served_message(
    served: &ServedKinds,
    not_served: &[dereference::ObjectKey],
) -> Option<String> {
    if not_served.is_empty() {
        return None;
    }
    let objects: Vec<String> = not_served
        .iter()
        .map(|(kind, name)| format!("{kind} {name}"))
        .collect();
    Some(format!(
        "the API server does not serve {}: not created: {}; everything else is applied",
        served.missing_descriptions().join(", "),
        objects.join(", ")
    ))
}

/// One Warning Event when the set of objects skipped for a missing API changes (not on every
/// resync: the condition carries the standing state).
async fn publish_not_served(
    cluster: &PostgresCluster,
    ctx: &Context,
    next: &tusk_api::types::PostgresClusterStatus,
) {
    let Some(message) = status::not_served_message(next) else {
        return;
    };
    tracing::warn!(%message, "skipping kinds the API server does not serve");
    let event = Event {
        type_: EventType::Warning,
        reason: status::REASON_API_NOT_SERVED.into(),
        note: Some(truncate(&message, 1000)),
        action: "Apply".into(),
        secondary: None,
    };
    publish(cluster, ctx, &event).await;
}

/// One Warning Event per doubt about custom certificates that does not stop the reconcile
/// (the Recorder folds repeats into one Event series).
async fn publish_custom_tls_warnings(
    cluster: &PostgresCluster,
    ctx: &Context,
    warnings: &[String],
) {
    for warning in warnings {
        tracing::warn!(%warning, "custom TLS certificate");
        let event = Event {
            type_: EventType::Warning,
            reason: "CustomTLSWarning".into(),
            note: Some(truncate(warning, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        publish(cluster, ctx, &event).await;
    }
}

/// A Warning Event and the `Degraded` condition for a failed reconcile.
async fn report_failure(cluster: &PostgresCluster, ctx: &Context, error: &Error) {
    tracing::warn!(reason = error.reason(), error = %error, "reconcile failed");
    let event = Event {
        type_: EventType::Warning,
        reason: error.reason().into(),
        note: Some(truncate(&error.to_string(), 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    publish(cluster, ctx, &event).await;
    let outcome = match error {
        Error::InvalidSpec(errors) => Outcome::InvalidSpec {
            message: errors.to_string(),
        },
        Error::InvalidCustomTls(errors) => Outcome::Failed {
            reason: error.reason().into(),
            message: errors.to_string(),
        },
        other => Outcome::Failed {
            reason: other.reason().into(),
            message: other.to_string(),
        },
    };
    let current = cluster.status.clone().unwrap_or_default();
    let next = status::next_status(
        &current,
        cluster.metadata.generation,
        &outcome,
        status::now(),
    );
    if let Err(e) = status::patch_status(&ctx.client, cluster, &current, &next).await {
        tracing::warn!(error = %e, "could not record the failure in the status");
    }
}

/// A PostgresCluster that does not deserialize: a Warning Event on it, a log line and the
/// error metric. Its status cannot be written through the typed API.
pub async fn report_unparseable(ctx: &Context, meta: &ObjectMeta, error: &str) {
    const REASON: &str = "UnparseableObject";
    tracing::warn!(cluster = ?meta.name, namespace = ?meta.namespace, error, "cannot parse");
    ctx.metrics.observe_reconcile(Some(REASON), Duration::ZERO);
    let reference = ObjectReference {
        api_version: Some(PostgresCluster::api_version(&()).into_owned()),
        kind: Some(PostgresCluster::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: REASON.into(),
        note: Some(truncate(error, 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(error = %e, "could not publish an Event");
    }
}

/// Events are best effort: failing to publish one must not fail the reconcile, but is logged.
async fn publish(cluster: &PostgresCluster, ctx: &Context, event: &Event) {
    let reference = cluster.object_ref(&());
    if let Err(e) = ctx.recorder.publish(event, &reference).await {
        tracing::warn!(error = %e, reason = %event.reason, "could not publish an Event");
    }
}

/// Event notes are limited to 1 kB.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
