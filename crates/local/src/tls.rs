//! The local cluster's certificates as files: one root CA per state directory, per member a
//! server certificate (SANs: the member's loopback address and `localhost`) and the
//! replication client certificate, and an admin client certificate for Patroni's REST API.
//! Existing files are kept, so certificates stay stable across `up`. Touches only the state
//! directory.

use std::path::Path;

use time::OffsetDateTime;
use tusk_config::paths::{TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE};
use tusk_pki::{Leaf, RootCa};

use crate::error::{io, Result};
use crate::state::Layout;

/// Common name of the client certificate `tusk` presents to Patroni.
pub const ADMIN_COMMON_NAME: &str = "tusk-local-admin";

/// Loads the state directory's CA, creating it on first use.
pub fn ensure_ca(layout: &Layout) -> Result<RootCa> {
    let dir = layout.ca_dir();
    let cert = dir.join(TLS_CA_FILE);
    let key = dir.join("ca.key");
    if cert.is_file() && key.is_file() {
        let cert_pem = std::fs::read_to_string(&cert).map_err(io("reading", &cert))?;
        let key_pem = std::fs::read_to_string(&key).map_err(io("reading", &key))?;
        return Ok(RootCa::from_pem(&cert_pem, &key_pem)?);
    }
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let ca = RootCa::generate(OffsetDateTime::now_utc())?;
    write_secret(&key, ca.key_pem())?;
    std::fs::write(&cert, ca.cert_pem()).map_err(io("writing", &cert))?;
    let admin = ca.issue_client(ADMIN_COMMON_NAME, OffsetDateTime::now_utc())?;
    write_tls_dir(&layout.admin_tls_dir(), &admin, ca.cert_pem())?;
    Ok(ca)
}

/// The member's server and replication certificates, issued once.
pub fn ensure_member_certs(
    ca: &RootCa,
    server_dir: &Path,
    replication_dir: &Path,
    member: &str,
    host: &str,
) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    if !server_dir.join(TLS_CERT_FILE).is_file() {
        let names = [host.to_owned(), "localhost".to_owned()];
        let leaf = ca.issue_server(member, &names, now)?;
        write_tls_dir(server_dir, &leaf, ca.cert_pem())?;
    }
    if !replication_dir.join(TLS_CERT_FILE).is_file() {
        let leaf = ca.issue_client(tusk_api::naming::REPLICATION_USER, now)?;
        write_tls_dir(replication_dir, &leaf, ca.cert_pem())?;
    }
    Ok(())
}

/// `tls.crt`, `tls.key` (0600: PostgreSQL and libpq refuse group/world-readable keys) and
/// `ca.crt`, the layout of a Kubernetes TLS Secret.
fn write_tls_dir(dir: &Path, leaf: &Leaf, ca_pem: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let cert = dir.join(TLS_CERT_FILE);
    std::fs::write(&cert, &leaf.cert_pem).map_err(io("writing", &cert))?;
    write_secret(&dir.join(TLS_KEY_FILE), &leaf.key_pem)?;
    let ca = dir.join(TLS_CA_FILE);
    std::fs::write(&ca, ca_pem).map_err(io("writing", &ca))
}

fn write_secret(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io("writing", path))?;
    file.write_all(contents.as_bytes())
        .map_err(io("writing", path))
}

/// Makes ring rustls's process-wide provider. Feature unification can enable both of
/// rustls's providers (a dev-dependency elsewhere in the workspace pulls in aws-lc-rs), and
/// then libraries that rely on the default one (ureq here, kube's client) refuse to guess.
/// Idempotent: a provider installed earlier stays.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
