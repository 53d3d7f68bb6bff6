//! Tusk's certificate authority: one operator root CA ([`RootCa`]) issues the server and
//! client certificates ([`Leaf`]) of every cluster, and [`needs_renewal`] decides when a
//! certificate is replaced (at 2/3 of its lifetime); [`rollover_bundle`] decides which roots
//! peers trust while leaves move from an old root to a new one.
//!
//! Pure: the caller passes the current time in and stores the PEM wherever it likes (the
//! operator in Secrets, `tusk local` in files). Key material comes from the OS CSPRNG through
//! rcgen/ring. No files, no network, no Kubernetes.

mod authority;
mod inspect;
pub mod password;
mod rollover;

pub use authority::{
    Leaf, RootCa, CLOCK_SKEW_ALLOWANCE, LEAF_LIFETIME, ROOT_CA_COMMON_NAME, ROOT_CA_LIFETIME,
};
pub use inspect::{
    common_name, dns_names, issued_by, key_matches, needs_renewal, renew_at, signed_by,
    trust_bundle, validity,
};
pub use rollover::{bundle_certificates, rollover_bundle};

/// Everything in this crate that can fail, named for the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CSPRNG or the key generator failed.
    #[error("generating the {what} key pair")]
    GenerateKey {
        what: &'static str,
        source: rcgen::Error,
    },
    /// rcgen refused the certificate parameters or could not sign them.
    #[error("signing the {what} certificate")]
    SignCertificate {
        what: &'static str,
        source: rcgen::Error,
    },
    /// A requested subjectAltName is not an IA5 (ASCII) string.
    #[error("{name:?} cannot be a DNS subjectAltName")]
    InvalidDnsName { name: String, source: rcgen::Error },
    /// The stored root CA certificate is not a PEM X.509 certificate.
    #[error("parsing the root CA certificate: {reason}")]
    ParseCaCertificate { reason: String },
    /// The stored root CA key is not a PKCS#8 PEM key rcgen can sign with.
    #[error("parsing the root CA private key")]
    ParseCaKey { source: rcgen::Error },
    /// The stored root CA key and certificate are not a pair: leaves would not verify.
    #[error("the root CA private key does not belong to the root CA certificate")]
    CaKeyMismatch,
    /// The stored root CA certificate lacks `basicConstraints CA:TRUE`.
    #[error("the root CA certificate is not a CA (basicConstraints CA:TRUE missing)")]
    NotACa,
    /// A certificate handed to an inspection function is not a PEM X.509 certificate.
    #[error("parsing a certificate: {reason}")]
    ParseCertificate { reason: String },
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
