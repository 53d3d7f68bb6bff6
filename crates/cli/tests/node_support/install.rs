//! Tusk on the node, installed as a user installs it, by `scripts/kube-testenv install`: the
//! images built from `images/` by `scripts/build-images` (cached by content; the operator image
//! around the `tusk` binary under test), pushed to the node's registry, and
//! `kubectl apply --server-side -k` of an overlay of `deploy/kustomize-without-cel` (the node
//! runs 1.20) that changes nothing but the image references. The operator then runs in a pod
//! under its own ServiceAccount and ClusterRole, so every API call it makes is checked by the
//! real RBAC. The same command is what a person runs to try the operator on a node.

use std::collections::BTreeMap;
use std::process::Command;

use super::{repo_root, Node};

/// What the install put on the node.
pub struct Installed {
    /// The database image (PostgreSQL, Patroni, pgBackRest, PgBouncer, exporter), as pods
    /// name it.
    pub database_image: String,
    pub operator_image: String,
}

/// Builds and pushes the images, applies the install, and waits for the operator's rollout
/// (a no-op when nothing changed, as on a node shared by several tests).
pub fn install_operator(node: &Node) -> Installed {
    let out = Command::new(repo_root().join("scripts/kube-testenv"))
        .arg("install")
        .arg(node.dir())
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_tusk"))
        .output()
        .expect("scripts/kube-testenv runs");
    assert!(
        out.status.success(),
        "scripts/kube-testenv install failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let images: BTreeMap<&str, &str> = stdout
        .lines()
        .filter_map(|line| line.split_once(' '))
        .collect();
    let image = |name: &str| {
        images
            .get(name)
            .unwrap_or_else(|| panic!("the install printed no {name} image:\n{stdout}"))
            .to_string()
    };
    Installed {
        database_image: image("postgres"),
        operator_image: image("operator"),
    }
}
