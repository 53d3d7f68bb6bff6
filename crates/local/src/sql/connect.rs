//! How to reach one PostgreSQL server: the superuser over the Unix socket (peer
//! authentication, nothing to steal), or a role over TCP with TLS that verifies the server
//! against the cluster's CA (what `sslmode=verify-full` does in libpq). Plain TCP is never
//! used: pg_hba refuses it anyway. Reads only the CA / client certificate files it is given.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

use super::{describe, SqlError};

/// Where and as whom to connect; filled in by the runtime (or the operator).
#[derive(Clone)]
pub struct ConnectTarget {
    /// TCP host (an address such as `127.0.0.2`, or a name in the server certificate).
    pub host: String,
    pub port: u16,
    /// When set, connect over the Unix socket in this directory instead of TCP.
    pub socket_dir: Option<PathBuf>,
    pub user: String,
    /// For TCP: PEM file of the CA the server certificate must chain to. Required for TCP.
    pub ca_file: Option<PathBuf>,
    /// For TCP roles that authenticate by certificate (`cert` in pg_hba).
    pub client_cert: Option<ClientCertFiles>,
    /// For TCP roles that authenticate by SCRAM password.
    pub password: Option<String>,
}

/// A client certificate and its private key, PEM files.
#[derive(Clone, Debug)]
pub struct ClientCertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ConnectTarget {
    /// The superuser over the Unix socket in `socket_dir`.
    pub fn superuser_socket(socket_dir: impl Into<PathBuf>, port: u16) -> Self {
        Self {
            host: "localhost".into(),
            port,
            socket_dir: Some(socket_dir.into()),
            user: tusk_api::naming::SUPERUSER.into(),
            ca_file: None,
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
            .field("ca_file", &self.ca_file)
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
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(target)?);
    let (client, connection) = config.connect(tls).await.map_err(connect_error)?;
    tokio::spawn(async move { drop(connection.await) });
    Ok(client)
}

/// rustls always verifies the chain and the host name (IP SANs included), so `Require` here
/// is libpq's `verify-full`.
fn tls_config(target: &ConnectTarget) -> Result<rustls::ClientConfig, SqlError> {
    let tls_error = |message: String| SqlError::Tls {
        target: target.to_string(),
        message,
    };
    let ca_file = target.ca_file.as_deref().ok_or_else(|| {
        tls_error("no CA file: refusing a TCP connection that cannot verify the server".into())
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca_file).map_err(tls_error)? {
        roots
            .add(cert)
            .map_err(|e| tls_error(format!("{}: {e}", ca_file.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?
        .with_root_certificates(roots);
    match &target.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some(files) => {
            let certs = read_certs(&files.cert).map_err(tls_error)?;
            let key = PrivateKeyDer::from_pem_file(&files.key)
                .map_err(|e| tls_error(format!("{}: {e}", files.key.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls_error(e.to_string()))
        }
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}
