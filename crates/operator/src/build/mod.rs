//! Pure builders: `ValidatedCluster` (+ plan and secret material) -> Kubernetes objects.
//!
//! One module per object family; each builder is a synchronous function with no API calls
//! (CloudNativePG's `pkg/specs`, Crunchy's `generate*`). `build` returns every object the
//! cluster should have; the controller applies them with server-side apply and deletes the
//! labelled objects it did not return (orphans).

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::DynamicObject;
use kube::core::{ApiResource, GroupVersionKind};
use kube::Resource;
use tusk_api::ValidatedCluster;

use crate::images::Images;
use crate::material::Material;
use crate::plan::InstancePlan;

pub mod backup_jobs;
pub mod exporter;
pub mod fencer;
pub mod instance;
pub mod meta;
pub mod patroni_config;
pub mod pdb;
pub mod pgbackrest;
pub mod pgbouncer;
pub mod pod_security;
pub mod rbac;
pub mod reload_sidecar;
pub mod restore;
pub mod secrets;
pub mod services;
pub mod volumes;

/// What a build needs besides the cluster.
#[derive(Clone, Debug)]
pub struct BuildInput<'a> {
    pub cluster: &'a ValidatedCluster,
    pub images: &'a Images,
    pub plan: &'a InstancePlan,
    pub material: &'a Material,
}

/// One object Tusk manages, typed.
///
/// Not boxed although a StatefulSet is far larger than a Role: a build makes a few dozen of
/// these once per reconcile, and plain variants keep matching and constructing simple for
/// the controller.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Managed {
    StatefulSet(StatefulSet),
    Deployment(Deployment),
    Service(Service),
    ConfigMap(ConfigMap),
    Secret(Secret),
    ServiceAccount(ServiceAccount),
    Role(Role),
    RoleBinding(RoleBinding),
    PodDisruptionBudget(PodDisruptionBudget),
    PersistentVolumeClaim(PersistentVolumeClaim),
    CronJob(CronJob),
}

macro_rules! managed_dispatch {
    ($self:ident, $o:ident => $e:expr) => {
        match $self {
            Managed::StatefulSet($o) => $e,
            Managed::Deployment($o) => $e,
            Managed::Service($o) => $e,
            Managed::ConfigMap($o) => $e,
            Managed::Secret($o) => $e,
            Managed::ServiceAccount($o) => $e,
            Managed::Role($o) => $e,
            Managed::RoleBinding($o) => $e,
            Managed::PodDisruptionBudget($o) => $e,
            Managed::PersistentVolumeClaim($o) => $e,
            Managed::CronJob($o) => $e,
        }
    };
}

fn api_resource_of<K: Resource<DynamicType = ()>>(_: &K) -> ApiResource {
    ApiResource::erase::<K>(&())
}

impl Managed {
    pub fn name(&self) -> &str {
        managed_dispatch!(self, o => o.meta().name.as_deref().unwrap_or_default())
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Managed::StatefulSet(_) => "StatefulSet",
            Managed::Deployment(_) => "Deployment",
            Managed::Service(_) => "Service",
            Managed::ConfigMap(_) => "ConfigMap",
            Managed::Secret(_) => "Secret",
            Managed::ServiceAccount(_) => "ServiceAccount",
            Managed::Role(_) => "Role",
            Managed::RoleBinding(_) => "RoleBinding",
            Managed::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Managed::PersistentVolumeClaim(_) => "PersistentVolumeClaim",
            Managed::CronJob(_) => "CronJob",
        }
    }

    pub fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        managed_dispatch!(self, o => o.meta())
    }

    pub fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        managed_dispatch!(self, o => o.meta_mut())
    }

    /// The API resource (group, version, plural) of this object.
    pub fn api_resource(&self) -> ApiResource {
        managed_dispatch!(self, o => api_resource_of(o))
    }

    pub fn gvk(&self) -> GroupVersionKind {
        let ar = self.api_resource();
        GroupVersionKind::gvk(&ar.group, &ar.version, &ar.kind)
    }

    /// The object as JSON with `apiVersion` and `kind` set (what server-side apply sends).
    pub fn to_json(&self) -> serde_json::Value {
        let ar = self.api_resource();
        let mut v =
            managed_dispatch!(self, o => serde_json::to_value(o).expect("k8s objects serialize"));
        v["apiVersion"] = serde_json::Value::String(ar.api_version.clone());
        v["kind"] = serde_json::Value::String(ar.kind.clone());
        v
    }

    /// Position of this kind in [`build`]'s output: what others refer to comes first.
    pub fn apply_rank(&self) -> u8 {
        match self {
            Managed::ServiceAccount(_) => 0,
            Managed::Role(_) => 1,
            Managed::RoleBinding(_) => 2,
            Managed::ConfigMap(_) => 3,
            Managed::Secret(_) => 4,
            Managed::Service(_) => 5,
            Managed::PersistentVolumeClaim(_) => 6,
            Managed::StatefulSet(_) => 7,
            Managed::Deployment(_) => 8,
            Managed::PodDisruptionBudget(_) => 9,
            // Last: its Jobs exec into the repo host or an instance.
            Managed::CronJob(_) => 10,
        }
    }

    pub fn to_dynamic(&self) -> DynamicObject {
        serde_json::from_value(self.to_json()).expect("a typed object is a valid DynamicObject")
    }
}

/// Every object `input.cluster` should have, sorted for applying: kinds that others refer to
/// first (RBAC, configuration, Secrets, Services, claims before the StatefulSets that mount
/// them), then by name. The same input always gives the same list.
pub fn build(input: &BuildInput) -> Vec<Managed> {
    let cluster = input.cluster;
    let patroni_yaml = patroni_config::patroni_yaml(cluster);
    let config_hash = patroni_config::config_hash(&patroni_yaml);
    let image = input.images.database(cluster);
    let exporter_image = input.images.exporter(cluster);
    let pgbackrest_image = input.images.pgbackrest(cluster);

    let mut objects = vec![
        Managed::ServiceAccount(rbac::instance_service_account(cluster)),
        Managed::Role(rbac::instance_role(cluster)),
        Managed::RoleBinding(rbac::instance_role_binding(cluster)),
        Managed::ConfigMap(patroni_config::patroni_config_map(cluster, &patroni_yaml)),
    ];
    objects.extend(
        services::cluster_services(cluster)
            .into_iter()
            .map(Managed::Service),
    );
    objects.extend(
        secrets::user_secrets(cluster, input.material)
            .into_iter()
            .chain(secrets::certificate_secrets(cluster, input.material))
            .map(Managed::Secret),
    );
    objects.extend(
        input
            .material
            .custom_client_ca_pem
            .as_deref()
            .and_then(|bundle| volumes::client_ca_config_map(cluster, bundle))
            .map(Managed::ConfigMap),
    );
    objects.extend(service_role_objects(input));
    for (set_name, instance) in input.plan.instances() {
        // The plan is made from this same cluster, so every planned set exists; a set that
        // does not (a stale plan) gets nothing rather than a guessed spec.
        let Some(set) = cluster
            .instance_sets
            .iter()
            .find(|s| s.name.as_str() == set_name)
        else {
            continue;
        };
        objects.extend(
            volumes::instance_pvcs(cluster, set, instance)
                .into_iter()
                .map(Managed::PersistentVolumeClaim),
        );
        objects.push(Managed::StatefulSet(instance::instance_statefulset(
            cluster,
            set,
            instance::InstanceContext {
                instance,
                image: &image,
                config_hash: &config_hash,
                exporter_image: &exporter_image,
                pgbackrest_image: &pgbackrest_image,
                fencer_image: &input.images.fencer,
            },
        )));
    }
    objects.extend(backup_objects(input, &pgbackrest_image, &image));
    objects.extend(
        cluster
            .instance_sets
            .iter()
            .filter_map(|set| pdb::instance_set_pdb(cluster, set))
            .map(Managed::PodDisruptionBudget),
    );
    objects.sort_by(|a, b| (a.apply_rank(), a.name()).cmp(&(b.apply_rank(), b.name())));
    objects
}

/// PgBouncer's objects and the exporter's ConfigMap and Secret, when the spec asks for them.
///
/// # Panics
/// When `input.material` lacks the password of a service role the spec needs: `Material` is
/// made for the same cluster and covers them (see [`crate::material::service_roles`]).
fn service_role_objects(input: &BuildInput) -> Vec<Managed> {
    let cluster = input.cluster;
    let password = |role: &str| {
        input
            .material
            .passwords
            .get(role)
            .unwrap_or_else(|| panic!("material has no password for {role}"))
            .clone()
    };
    let mut objects = Vec::new();
    if cluster.pgbouncer.is_some() {
        let image = input.images.pgbouncer(cluster);
        let auth_password = password(tusk_api::naming::PGBOUNCER_AUTH_USER);
        if let Some((config_map, secret, deployment, service)) =
            pgbouncer::pgbouncer_objects(cluster, &image, &auth_password)
        {
            objects.extend([
                Managed::ConfigMap(config_map),
                Managed::Secret(secret),
                Managed::Deployment(deployment),
                Managed::Service(service),
            ]);
        }
    }
    if cluster.exporter.is_some() {
        let exporter_password = password(tusk_api::naming::EXPORTER_USER);
        if let Some((config_map, secret)) = exporter::exporter_objects(cluster, &exporter_password)
        {
            objects.extend([Managed::ConfigMap(config_map), Managed::Secret(secret)]);
        }
    }
    objects
}

/// pgBackRest's objects when `spec.backups` is set: configuration, the repo host and its
/// volumes (volume repos only), the backup Jobs' account and one CronJob per schedule.
/// `image` is pgBackRest's; `database_image` runs the repo host's reload sidecar.
fn backup_objects(input: &BuildInput, image: &str, database_image: &str) -> Vec<Managed> {
    let cluster = input.cluster;
    let instance_hosts: Vec<String> = input
        .plan
        .instances()
        .map(|(_, instance)| {
            tusk_api::naming::instance_pod_host(
                instance,
                &cluster.names.pods_service(),
                &cluster.namespace,
            )
        })
        .collect();
    let mut objects = Vec::new();
    objects.extend(
        pgbackrest::pgbackrest_config_map(cluster, &instance_hosts).map(Managed::ConfigMap),
    );
    objects.extend(
        pgbackrest::repo_pvcs(cluster)
            .into_iter()
            .map(Managed::PersistentVolumeClaim),
    );
    objects.extend(
        pgbackrest::repo_host_statefulset(cluster, image, database_image).map(Managed::StatefulSet),
    );
    if let Some((account, role, binding)) = backup_jobs::backup_rbac(cluster) {
        objects.extend([
            Managed::ServiceAccount(account),
            Managed::Role(role),
            Managed::RoleBinding(binding),
        ]);
    }
    objects.extend(
        backup_jobs::backup_cron_jobs(cluster, image)
            .into_iter()
            .map(Managed::CronJob),
    );
    objects
}
