//! Tusk on the node, installed as a user installs it: the images built from `images/` by
//! `scripts/build-images` (cached by content), pushed to the node's registry, and
//! `kubectl apply --server-side -k` of an overlay of `deploy/kustomize` that changes nothing but
//! the image references (the operator's, and the `RELATED_IMAGE_*` it deploys). The operator
//! then runs in a pod under its own ServiceAccount and ClusterRole, so every API call it makes
//! is checked by the real RBAC.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kube::Client;

use super::{repo_root, Node};

/// The operator's namespace and Deployment in `deploy/kustomize`.
pub const OPERATOR_NAMESPACE: &str = "tusk-system";
pub const OPERATOR_DEPLOYMENT: &str = "tusk-operator";

/// What the install put on the node.
pub struct Installed {
    /// The database image (PostgreSQL, Patroni, pgBackRest, PgBouncer, exporter), as pods
    /// name it.
    pub database_image: String,
    pub operator_image: String,
}

/// A built image: its OCI archive and a tag naming its content.
struct Built {
    archive: PathBuf,
    tag: String,
}

/// `scripts/build-images` for the operator binary under test; seconds when cached.
fn build_images() -> BTreeMap<String, Built> {
    let out = Command::new(repo_root().join("scripts/build-images"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_tusk"))
        .output()
        .expect("scripts/build-images runs");
    assert!(
        out.status.success(),
        "scripts/build-images failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (name, archive, reference) = (fields.next()?, fields.next()?, fields.next()?);
            let tag = reference.rsplit_once(':').map(|(_, tag)| tag)?.to_owned();
            Some((
                name.to_owned(),
                Built {
                    archive: PathBuf::from(archive),
                    tag,
                },
            ))
        })
        .collect()
}

fn push(node: &Node, built: &Built, name: &str) -> String {
    let out = Command::new(repo_root().join("scripts/kube-testenv"))
        .arg("push")
        .arg(node.dir())
        .arg(&built.archive)
        .arg(format!("tusk/{name}:{}", built.tag))
        .output()
        .expect("scripts/kube-testenv runs");
    assert!(
        out.status.success(),
        "pushing {} failed:\n{}",
        built.archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `to` relative to `from` (both absolute): kustomize refuses absolute resource paths.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path: PathBuf = std::iter::repeat_n("..", from.len() - common).collect();
    path.extend(to[common..].iter());
    path
}

/// The overlay: `base` (an install directory of `deploy/`) with the local images, nothing else
/// changed.
fn write_overlay(dir: &Path, base: &str, operator_image: &str, database_image: &str) {
    std::fs::create_dir_all(dir).expect("creating the overlay directory");
    let dir = dir.canonicalize().expect("the overlay directory");
    let base = relative(
        &dir,
        &repo_root()
            .join(base)
            .canonicalize()
            .unwrap_or_else(|e| panic!("{base}: {e}")),
    );
    let (operator_name, operator_tag) = operator_image
        .rsplit_once(':')
        .expect("the operator image has a tag");
    let env: String = ["RELATED_IMAGE_POSTGRES_15", "RELATED_IMAGE_PGBACKREST"]
        .iter()
        .chain(&["RELATED_IMAGE_PGBOUNCER", "RELATED_IMAGE_EXPORTER"])
        .map(|name| format!("                  - {{name: {name}, value: \"{database_image}\"}}\n"))
        .collect();
    let kustomization = format!(
        "# Written by the pod tests: deploy/kustomize with the images built from this tree.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources:\n  - {base}\n\
         images:\n  - name: ghcr.io/tusk-rs/tusk-operator\n    newName: {operator_name}\n    newTag: \"{operator_tag}\"\n\
         patches:\n  - patch: |-\n      apiVersion: apps/v1\n      kind: Deployment\n      metadata: {{name: {OPERATOR_DEPLOYMENT}, namespace: {OPERATOR_NAMESPACE}}}\n      spec:\n        template:\n          spec:\n            containers:\n              - name: operator\n                env:\n{env}",
        base = base.display(),
    );
    std::fs::write(dir.join("kustomization.yaml"), kustomization).expect("writing the overlay");
}

/// The install directory a user applies on this server: `deploy/kustomize`, or before 1.28 (no
/// CEL in CRDs) `deploy/kustomize-without-cel` (the README's table).
async fn install_base(client: &Client) -> &'static str {
    if super::super::kube_support::objects::server_version(client).await >= (1, 28) {
        "deploy/kustomize"
    } else {
        "deploy/kustomize-without-cel"
    }
}

/// Builds and pushes the images, applies the install, and waits for the operator's rollout.
pub async fn install_operator(node: &Node, client: &Client) -> Installed {
    let built = build_images();
    let image = |name: &str| {
        let b = built
            .get(name)
            .unwrap_or_else(|| panic!("scripts/build-images printed no {name} image"));
        push(node, b, name)
    };
    let installed = Installed {
        database_image: image("postgres"),
        operator_image: image("operator"),
    };
    let overlay = node.dir().join("install");
    write_overlay(
        &overlay,
        install_base(client).await,
        &installed.operator_image,
        &installed.database_image,
    );
    node.kubectl_ok(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-k",
            overlay.to_str().expect("UTF-8 path"),
        ],
        None,
    );
    node.kubectl_ok(
        &[
            "rollout",
            "status",
            "-n",
            OPERATOR_NAMESPACE,
            &format!("deployment/{OPERATOR_DEPLOYMENT}"),
            "--timeout=300s",
        ],
        None,
    );
    installed
}
