//! Reads what exists for one cluster: every labelled object of the managed kinds, the
//! instances they describe (for the plan), which pod Patroni labelled `master`, and the
//! passwords already in user Secrets (so they stay stable). Only reads; holds the client.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::Resource as _;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::ApiResource;
use kube::{Client, Resource};
use tusk_api::naming;

use super::error::DereferenceError;
use crate::build::secrets::{TLS_CA_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY};
use crate::discovery::ServedKinds;
use crate::material::{CertPair, ExistingTls, TRUST_CHANGED_ANNOTATION};
use crate::plan::ObservedInstance;

/// Key of an object in the namespace: `(kind, name)`.
pub type ObjectKey = (String, String);

/// Every kind `build` may return. Orphan cleanup only looks at these, so a kind added to
/// `build::Managed` must be added here too.
pub fn managed_kinds() -> Vec<ApiResource> {
    vec![
        ApiResource::erase::<StatefulSet>(&()),
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Secret>(&()),
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<Role>(&()),
        ApiResource::erase::<RoleBinding>(&()),
        ApiResource::erase::<PodDisruptionBudget>(&()),
        ApiResource::erase::<PersistentVolumeClaim>(&()),
        // batch/v1 since Kubernetes 1.21; older servers skip it (see `discovery`).
        ApiResource::erase::<CronJob>(&()),
    ]
}

/// What exists for one cluster.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Labelled objects of the managed kinds, with their resources for deletion.
    pub objects: BTreeMap<ObjectKey, (ApiResource, DynamicObject)>,
    /// Instances (StatefulSets, or PVCs left behind) for [`crate::plan::plan_instances`].
    pub instances: Vec<ObservedInstance>,
    /// Instance whose pod Patroni labelled `master`.
    pub primary: Option<String>,
    /// Password per user, read from existing user Secrets. Never logged.
    pub passwords: BTreeMap<String, String>,
    /// Certificates in the cluster's cert Secrets, for `material::tls_material` to keep.
    pub existing_tls: ExistingTls,
}

impl Observed {
    /// resourceVersion of an existing object.
    pub fn resource_version(&self, kind: &str, name: &str) -> Option<&str> {
        self.objects
            .get(&(kind.to_owned(), name.to_owned()))
            .and_then(|(_, o)| o.metadata.resource_version.as_deref())
    }
}

/// Lists everything labelled for `cluster` in `namespace`, on a server that serves every
/// managed kind.
pub async fn dereference(
    client: &Client,
    namespace: &str,
    cluster: &str,
) -> Result<Observed, DereferenceError> {
    dereference_served(client, namespace, cluster, &ServedKinds::all()).await
}

/// Lists everything labelled for `cluster` in `namespace`, of the kinds the server serves (a
/// kind it does not serve has no objects to find, and listing it would fail with a 404).
pub async fn dereference_served(
    client: &Client,
    namespace: &str,
    cluster: &str,
    served: &ServedKinds,
) -> Result<Observed, DereferenceError> {
    let selector = ListParams::default().labels(&naming::cluster_selector(cluster));
    let mut observed = Observed::default();
    for resource in managed_kinds().into_iter().filter(|r| served.serves(r)) {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let list = api
            .list(&selector)
            .await
            .map_err(|source| DereferenceError::ListObjects {
                kind: resource.kind.clone(),
                source,
            })?;
        for object in list.items {
            let name = object.metadata.name.clone().unwrap_or_default();
            observed
                .objects
                .insert((resource.kind.clone(), name), (resource.clone(), object));
        }
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let primary_selector = ListParams::default().labels(&format!(
        "{},{}={}",
        naming::cluster_selector(cluster),
        naming::LABEL_ROLE,
        naming::ROLE_MASTER
    ));
    let masters =
        pods.list(&primary_selector)
            .await
            .map_err(|source| DereferenceError::ListObjects {
                kind: Pod::KIND.to_owned(),
                source,
            })?;
    observed.primary = masters
        .items
        .iter()
        .filter_map(|p| label(p.meta().labels.as_ref(), naming::LABEL_INSTANCE))
        .min();

    observed.instances = observed_instances(&observed.objects, observed.primary.as_deref());
    observed.passwords = user_passwords(&observed.objects);
    if let Ok(label) = naming::DnsLabel::new(cluster) {
        let names = naming::ClusterNames::new(label);
        observed.existing_tls = ExistingTls {
            server: cert_pair(&observed.objects, &names.cluster_cert_secret()),
            replication: cert_pair(&observed.objects, &names.replication_cert_secret()),
            ca_bundle: secret_text(&observed.objects, &names.cluster_cert_secret(), TLS_CA_KEY),
            trust_changed_at: trust_changed_at(&observed.objects, &names.cluster_cert_secret()),
        };
        // Service roles keep their passwords in the Secrets of what uses them.
        for (role, secret) in [
            (naming::PGBOUNCER_AUTH_USER, names.pgbouncer()),
            (naming::EXPORTER_USER, names.exporter_secret()),
        ] {
            if let Some(password) = secret_text(&observed.objects, &secret, "password") {
                observed.passwords.insert(role.to_owned(), password);
            }
        }
    }
    Ok(observed)
}

fn label(labels: Option<&BTreeMap<String, String>>, key: &str) -> Option<String> {
    labels.and_then(|l| l.get(key)).cloned()
}

/// Instances from StatefulSets and, for instances whose StatefulSet is gone, from their PVCs.
fn observed_instances(
    objects: &BTreeMap<ObjectKey, (ApiResource, DynamicObject)>,
    primary: Option<&str>,
) -> Vec<ObservedInstance> {
    let mut instances: BTreeMap<String, ObservedInstance> = BTreeMap::new();
    for ((kind, _), (_, object)) in objects {
        let is_set = kind == StatefulSet::KIND;
        if !is_set && kind != PersistentVolumeClaim::KIND {
            continue;
        }
        let labels = object.metadata.labels.as_ref();
        let (Some(instance), Some(set)) = (
            label(labels, naming::LABEL_INSTANCE),
            label(labels, naming::LABEL_INSTANCE_SET),
        ) else {
            continue;
        };
        let entry = instances
            .entry(instance.clone())
            .or_insert_with(|| ObservedInstance {
                is_primary: primary == Some(instance.as_str()),
                name: instance,
                set,
                has_statefulset: false,
            });
        entry.has_statefulset |= is_set;
    }
    instances.into_values().collect()
}

/// The certificate and key in Secret `name`, when both are there.
fn cert_pair(
    objects: &BTreeMap<ObjectKey, (ApiResource, DynamicObject)>,
    name: &str,
) -> Option<CertPair> {
    let (_, object) = objects.get(&(Secret::KIND.to_owned(), name.to_owned()))?;
    let secret: Secret = serde_json::from_value(serde_json::to_value(object).ok()?).ok()?;
    let data = secret.data?;
    let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
    Some(CertPair {
        cert_pem: text(TLS_CERT_KEY)?,
        key_pem: text(TLS_PRIVATE_KEY_KEY)?,
    })
}

/// [`TRUST_CHANGED_ANNOTATION`] of Secret `name`, when there and RFC 3339.
fn trust_changed_at(
    objects: &BTreeMap<ObjectKey, (ApiResource, DynamicObject)>,
    name: &str,
) -> Option<time::OffsetDateTime> {
    let (_, object) = objects.get(&(Secret::KIND.to_owned(), name.to_owned()))?;
    let value = object
        .metadata
        .annotations
        .as_ref()?
        .get(TRUST_CHANGED_ANNOTATION)?;
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).ok()
}

/// The text under `key` in Secret `name`, when there.
fn secret_text(
    objects: &BTreeMap<ObjectKey, (ApiResource, DynamicObject)>,
    name: &str,
    key: &str,
) -> Option<String> {
    let (_, object) = objects.get(&(Secret::KIND.to_owned(), name.to_owned()))?;
    let secret: Secret = serde_json::from_value(serde_json::to_value(object).ok()?).ok()?;
    String::from_utf8(secret.data?.get(key)?.0.clone()).ok()
}

/// `user -> password` from Secrets labelled with the user they belong to.
fn user_passwords(
    objects: &BTreeMap<ObjectKey, (ApiResource, DynamicObject)>,
) -> BTreeMap<String, String> {
    let mut passwords = BTreeMap::new();
    for ((kind, _), (_, object)) in objects {
        if kind != Secret::KIND {
            continue;
        }
        let Some(user) = label(object.metadata.labels.as_ref(), naming::LABEL_USER) else {
            continue;
        };
        // A Secret that does not parse has no usable password; a new one is generated and
        // the apply overwrites it, which is the only way to repair it.
        let Ok(secret) =
            serde_json::from_value::<Secret>(serde_json::to_value(object).unwrap_or_default())
        else {
            continue;
        };
        let password = secret
            .data
            .as_ref()
            .and_then(|d| d.get("password"))
            .and_then(|b| String::from_utf8(b.0.clone()).ok());
        if let Some(password) = password {
            passwords.insert(user, password);
        }
    }
    passwords
}
