//! The reconcile of one `PostgresCluster`, as a pipeline you can read top to bottom:
//!
//! dereference -> validate -> custom TLS -> plan -> material -> build (pure) -> apply -> status
//!
//! Only `dereference` (with `custom_tls`'s read), `apply` and `status` hold the client. An
//! invalid spec, unusable custom TLS Secrets or `spec.paused` stop the pipeline before
//! anything is written except the cluster's status. Every change to
//! an object and every error becomes an Event on the cluster (never with secret values).

pub mod apply;
pub mod custom_tls;
pub mod dereference;
pub mod error;
pub mod root_ca;
pub mod status;

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
use crate::material::{tls_material, user_passwords, Material};
use crate::metrics::{ClusterObservation, Metrics};
use crate::plan::plan_instances;

/// Name the operator reports Events and leases under.
pub const CONTROLLER_NAME: &str = "tusk-operator";

/// How often a healthy cluster is looked at again without a watch event: Patroni moves the
/// `master` label on pods, which the controller does not watch.
const RESYNC: Duration = Duration::from_secs(60);
/// Sooner while instances are coming up.
const RESYNC_PROGRESSING: Duration = Duration::from_secs(15);

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
        }
    }
}

/// Reconciles one cluster; the entry point the kube-rs `Controller` calls.
pub async fn reconcile(cluster: Arc<PostgresCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !*ctx.leader.borrow() {
        // A replica that lost the lease must not write; the new leader takes over.
        return Ok(Action::await_change());
    }
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
    if let Some(secrets) =
        custom_tls::read_custom_tls(&ctx.client, namespace, &validated.tls).await?
    {
        let findings = custom_tls::check_custom_tls(&validated, &secrets);
        if !findings.errors.is_empty() {
            return Err(Error::InvalidCustomTls(ValidationErrors(findings.errors)));
        }
        publish_custom_tls_warnings(cluster, ctx, &findings.warnings).await;
    }
    let plan = plan_instances(&validated, &observed.instances, &mut rand::rng());
    let root_ca = root_ca::ensure_root_ca(&ctx.client, &ctx.operator_namespace).await?;
    let material = secret_material(&validated, &observed, &root_ca)?;
    let desired = build(&BuildInput {
        cluster: &validated,
        images: &ctx.images,
        plan: &plan,
        material: &material,
    });
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

    let outcome = Outcome::Applied {
        desired: validated.desired_instances(),
        primary: observed.primary.clone(),
        statefulsets: status::list_statefulsets(&ctx.client, namespace, name).await?,
        not_served: not_served_message(&ctx.served, &applied.not_served),
    };
    let next = status::next_status(&current, generation, &outcome, status::now());
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
        last_backup_unix: None,
    });
    if status::newly_not_served(&current, &next) {
        publish_not_served(cluster, ctx, &next).await;
    }
    status::patch_status(&ctx.client, cluster, &current, &next).await?;
    let settled = next.phase.as_deref() == Some("Running");
    Ok(Action::requeue(if settled {
        RESYNC
    } else {
        RESYNC_PROGRESSING
    }))
}

/// Passwords (kept from existing Secrets, generated when missing) and certificates (kept
/// while issued by `root_ca` and not due for renewal; none when the spec brings its own).
pub fn secret_material(
    cluster: &ValidatedCluster,
    observed: &Observed,
    root_ca: &tusk_pki::RootCa,
) -> Result<Material, error::RootCaError> {
    let tls = tls_material(
        cluster,
        root_ca,
        &observed.existing_tls,
        time::OffsetDateTime::now_utc(),
    )
    .map_err(|source| error::RootCaError::IssueLeaf { source })?;
    Ok(Material {
        passwords: user_passwords(cluster, &observed.passwords, &mut rand::rng()),
        tls,
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
