//! How to reach one PostgreSQL server: the superuser over the Unix socket (peer
//! authentication, nothing to steal), or a role over TCP with TLS that verifies the server
//! against the cluster's CA (what `sslmode=verify-full` does in libpq). Plain TCP is never
//! used: pg_hba refuses it anyway. CA and client certificates come from files (`tusk local`)
//! or from memory (the operator, which never writes its key to disk); reads only the files it
//! is given.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

use crate::{describe, SqlError};

/// Where and as whom to connect; filled in by the runtime (or the operator).
#[derive(Clone)]
pub struct ConnectTarget {
    /// TCP host (an address such as `127.0.0.2`, or a name in the server certificate). The
    /// server certificate is verified against this name.
    pub host: String,
    /// Dial this address instead of resolving `host` (libpq's `hostaddr`): the certificate
    /// is still checked against `host`.
    pub hostaddr: Option<IpAddr>,
    pub port: u16,
    /// When set, connect over the Unix socket in this directory instead of TCP.
    pub socket_dir: Option<PathBuf>,
    pub user: String,
    /// For TCP: the CA (bundle) the server certificate must chain to. Required for TCP.
    pub ca: Option<Pem>,
    /// For TCP roles that authenticate by certificate (`cert` in pg_hba).
    pub client_cert: Option<ClientCert>,
    /// For TCP roles that authenticate by SCRAM password.
    pub password: Option<String>,
}

/// PEM text, in a file or in memory. `Debug` never shows in-memory text (it may be a key).
#[derive(Clone)]
pub enum Pem {
    File(PathBuf),
    Text(String),
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(path) => write!(f, "File({})", path.display()),
            Pem::Text(_) => f.write_str("Text(<in memory>)"),
        }
    }
}

impl Pem {
    fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            Pem::File(path) => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display())),
            Pem::Text(text) => Ok(text.as_bytes().to_vec()),
        }
    }

    fn name(&self) -> String {
        match self {
            Pem::File(path) => path.display().to_string(),
            Pem::Text(_) => "in-memory PEM".to_owned(),
        }
    }
}

/// A client certificate and its private key.
#[derive(Clone, Debug)]
pub struct ClientCert {
    pub cert: Pem,
    pub key: Pem,
}

/// The files `tusk local` keeps a client certificate in.
pub type ClientCertFiles = ClientCert;

impl ClientCert {
    pub fn files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: Pem::File(cert.into()),
            key: Pem::File(key.into()),
        }
    }
}

impl ConnectTarget {
    /// The superuser over the Unix socket in `socket_dir`.
    pub fn superuser_socket(socket_dir: impl Into<PathBuf>, port: u16) -> Self {
        Self {
            host: "localhost".into(),
            hostaddr: None,
            port,
            socket_dir: Some(socket_dir.into()),
            user: tusk_api::naming::SUPERUSER.into(),
            ca: None,
            client_cert: None,
            password: None,
        }
    }
}

impl fmt::Display for ConnectTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.socket_dir {
            Some(dir) => write!(f, "{}@{}:{}", self.user, dir.display(), self.port),
            None => write!(f, "{}@{}:{} (TLS)", self.user, self.host, self.port),
        }
    }
}

/// Passwords are never printed.
impl fmt::Debug for ConnectTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectTarget")
            .field("target", &self.to_string())
            .field("ca", &self.ca)
            .field("client_cert", &self.client_cert)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A client connected to `database`. Its connection task runs on the current tokio runtime;
/// a broken connection surfaces as an error on the client's next call.
pub async fn connect(target: &ConnectTarget, database: &str) -> Result<Client, SqlError> {
    let mut config = tokio_postgres::Config::new();
    config
        .user(&target.user)
        .dbname(database)
        .port(target.port)
        .application_name("tusk")
        .connect_timeout(Duration::from_secs(10));
    if let Some(password) = &target.password {
        config.password(password);
    }
    let connect_error = |e: tokio_postgres::Error| SqlError::Connect {
        target: target.to_string(),
        database: database.to_owned(),
        message: describe(&e),
    };
    if let Some(dir) = &target.socket_dir {
        config.host_path(dir);
        let (client, connection) = config.connect(NoTls).await.map_err(connect_error)?;
        tokio::spawn(async move { drop(connection.await) });
        return Ok(client);
    }
    config.host(&target.host).ssl_mode(SslMode::Require);
    if let Some(address) = target.hostaddr {
        config.hostaddr(address);
    }
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(target)?);
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(|e| match tls_failure(&e) {
            Some(message) => SqlError::TlsHandshake {
                target: target.to_string(),
                message,
            },
            None => connect_error(e),
        })?;
    tokio::spawn(async move { drop(connection.await) });
    Ok(client)
}

/// The rustls error behind a failed connection, if TLS is what failed: tokio-postgres wraps
/// it in an `io::Error`, whose `source()` skips the wrapped error itself.
fn tls_failure(error: &tokio_postgres::Error) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(current) = next {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                return Some(tls.to_string());
            }
        }
        next = current.source();
    }
    None
}

/// rustls always verifies the chain and the host name (IP SANs included), so `Require` here
/// is libpq's `verify-full`.
fn tls_config(target: &ConnectTarget) -> Result<rustls::ClientConfig, SqlError> {
    let tls_error = |message: String| SqlError::Tls {
        target: target.to_string(),
        message,
    };
    let ca = target.ca.as_ref().ok_or_else(|| {
        tls_error("no CA: refusing a TCP connection that cannot verify the server".into())
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca).map_err(tls_error)? {
        roots
            .add(cert)
            .map_err(|e| tls_error(format!("{}: {e}", ca.name())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?
        .with_root_certificates(roots);
    match &target.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some(client) => {
            let certs = read_certs(&client.cert).map_err(tls_error)?;
            let key_pem = client.key.read().map_err(tls_error)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| tls_error(format!("{}: {e}", client.key.name())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls_error(e.to_string()))
        }
    }
}

fn read_certs(pem: &Pem) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = pem.read()?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", pem.name()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", pem.name()));
    }
    Ok(certs)
}
