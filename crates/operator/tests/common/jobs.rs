//! Steps the Job controller, the StatefulSet controller and Patroni would take, for the
//! backup and restore reconcile tests: finish a Job, report pods, label a primary; plus the
//! reads those tests assert with (Jobs, instance StatefulSets, Events by reason).

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tusk_api::naming;

use super::{Harness, NAME, NS};

impl Harness {
    pub fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub async fn annotate(&self, key: &str, value: &str) {
        self.edit(|cluster| {
            cluster
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(key.to_owned(), value.to_owned());
        })
        .await;
    }

    pub async fn jobs_labelled(&self, selector: &str) -> Vec<Job> {
        self.jobs()
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap()
            .items
    }

    pub async fn job_names(&self) -> BTreeSet<String> {
        self.jobs_labelled(&naming::cluster_selector(NAME))
            .await
            .into_iter()
            .map(|j| j.metadata.name.unwrap())
            .collect()
    }

    pub async fn finish_job(&self, name: &str, ok: bool) {
        let status = if ok {
            json!({"startTime": "2024-05-01T10:00:00Z", "completionTime": "2024-05-01T10:05:00Z",
                   "succeeded": 1,
                   "conditions": [{"type": "Complete", "status": "True"}]})
        } else {
            json!({"startTime": "2024-05-01T10:00:00Z", "failed": 1,
                   "conditions": [{"type": "Failed", "status": "True"}]})
        };
        self.jobs()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .expect("job status patched");
    }

    pub async fn primary_pod(&self, instance: &str) {
        let mut labels = naming::instance_labels(NAME, "instance1", instance);
        labels.insert(naming::LABEL_ROLE.into(), naming::ROLE_MASTER.into());
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("{instance}-0"), "namespace": NS, "labels": labels},
            "spec": {"containers": [{"name": "database", "image": "x"}]}
        }))
        .unwrap();
        Api::<Pod>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &pod)
            .await
            .expect("pod created");
    }

    pub async fn instance_sets(&self) -> Vec<StatefulSet> {
        let selector = format!(
            "{},{}",
            naming::cluster_selector(NAME),
            naming::LABEL_INSTANCE
        );
        Api::<StatefulSet>::namespaced(self.client.clone(), NS)
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
    }

    pub async fn replicas(&self) -> Vec<(String, i32)> {
        let mut out: Vec<(String, i32)> = self
            .instance_sets()
            .await
            .into_iter()
            .map(|s| (s.metadata.name.unwrap(), s.spec.unwrap().replicas.unwrap()))
            .collect();
        out.sort();
        out
    }

    pub async fn set_running(&self, running: i32) {
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), NS);
        for set in self.instance_sets().await {
            api.patch_status(
                &set.metadata.name.unwrap(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"replicas": running, "readyReplicas": running}})),
            )
            .await
            .expect("statefulset status patched");
        }
    }

    pub async fn events_with_reason(&self, reason: &str) -> Vec<Event> {
        self.events()
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }
}
