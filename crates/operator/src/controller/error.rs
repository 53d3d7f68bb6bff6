//! Errors of the reconcile pipeline: one enum per step, variants named for the action that
//! failed. [`Error::reason`] is the category that becomes the Event reason, the `Degraded`
//! condition reason and the `reason` label of the error metric, so it must stay a short,
//! stable PascalCase word. No I/O here.

use tusk_api::ValidationErrors;

/// Reading what exists (`dereference`).
#[derive(Debug, thiserror::Error)]
pub enum DereferenceError {
    #[error("listing {kind} objects of the cluster: {source}")]
    ListObjects {
        kind: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading Secret {name}: {source}")]
    ReadSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Writing the built objects (`apply`).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("applying {kind} {name}: {source}")]
    ApplyObject {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {name}: {source}")]
    DeleteObject {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Writing the cluster's status (`status`).
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("listing StatefulSets for the status: {source}")]
    ListStatefulSets {
        #[source]
        source: kube::Error,
    },
    #[error("patching the PostgresCluster status: {source}")]
    PatchStatus {
        #[source]
        source: kube::Error,
    },
}

/// Reading or creating the operator's root CA (`root_ca`).
#[derive(Debug, thiserror::Error)]
pub enum RootCaError {
    #[error("reading Secret tusk-root-cacert: {source}")]
    Read {
        #[source]
        source: kube::Error,
    },
    #[error("creating Secret tusk-root-cacert: {source}")]
    Create {
        #[source]
        source: kube::Error,
    },
    #[error("replacing Secret tusk-root-cacert with a renewed root: {source}")]
    Replace {
        #[source]
        source: kube::Error,
    },
    #[error("Secret tusk-root-cacert has no key {key:?}")]
    MissingKey { key: String },
    #[error("Secret tusk-root-cacert does not hold a usable CA: {source}")]
    Parse {
        #[source]
        source: tusk_pki::Error,
    },
    #[error("generating the root CA: {source}")]
    Generate {
        #[source]
        source: tusk_pki::Error,
    },
    #[error("issuing the cluster certificates: {source}")]
    IssueLeaf {
        #[source]
        source: tusk_pki::Error,
    },
}

/// Any failure of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object has no namespace or name: nothing can be reconciled.
    #[error("the PostgresCluster has no {0}")]
    MissingMetadata(&'static str),
    #[error("invalid spec: {0}")]
    InvalidSpec(ValidationErrors),
    /// `spec.customTLSSecret` / `customReplicationTLSSecret` name Secrets that cannot work.
    #[error("unusable custom TLS certificates: {0}")]
    InvalidCustomTls(ValidationErrors),
    #[error(transparent)]
    Dereference(#[from] DereferenceError),
    #[error(transparent)]
    RootCa(#[from] RootCaError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Backups(#[from] super::backups::BackupsError),
    #[error(transparent)]
    PatroniDcs(#[from] super::patroni_dcs::PatroniDcsError),
    #[error(transparent)]
    Switchover(#[from] super::switchover::SwitchoverError),
    #[error(transparent)]
    Deletion(#[from] super::deletion::DeletionError),
}

impl Error {
    /// The error's category: Event reason, condition reason, metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "MissingMetadata",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::InvalidCustomTls(_) => "InvalidCustomTLS",
            Error::Dereference(DereferenceError::ListObjects { .. }) => "ListObjectsFailed",
            Error::Dereference(DereferenceError::ReadSecret { .. }) => "ReadSecretFailed",
            Error::RootCa(RootCaError::IssueLeaf { .. }) => "IssueCertificateFailed",
            Error::RootCa(_) => "RootCertificateAuthorityFailed",
            Error::Apply(ApplyError::ApplyObject { .. }) => "ApplyObjectFailed",
            Error::Apply(ApplyError::DeleteObject { .. }) => "DeleteObjectFailed",
            Error::Status(StatusError::ListStatefulSets { .. }) => "ListStatefulSetsFailed",
            Error::Status(StatusError::PatchStatus { .. }) => "PatchStatusFailed",
            Error::Backups(e) => e.reason(),
            Error::PatroniDcs(e) => e.reason(),
            Error::Switchover(e) => e.reason(),
            Error::Deletion(super::deletion::DeletionError::Finalizer { .. }) => "FinalizerFailed",
            Error::Deletion(super::deletion::DeletionError::CleanUp { .. }) => "CleanUpFailed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_failed_action() {
        let err = Error::from(ApplyError::ApplyObject {
            kind: "Service".into(),
            name: "hippo-primary".into(),
            source: kube::Error::LinesCodecMaxLineLengthExceeded,
        });
        assert_eq!(err.reason(), "ApplyObjectFailed");
        assert!(err
            .to_string()
            .starts_with("applying Service hippo-primary:"));
    }
}
