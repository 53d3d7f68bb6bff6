//! Real object-store servers for the cloud-repo tests, started on 127.0.0.1 with a free port
//! and a temp data directory, serving HTTPS with a certificate from a test CA, and killed on
//! drop (also when the test panics):
//!
//! - S3: `s3rver` (npm). Not `moto_server`: its Werkzeug server answers every request with
//!   `Connection: close` and then drops the TLS connection without a close_notify alert;
//!   pgBackRest 2.45 reads the body to the end of the connection and OpenSSL 3 reports that
//!   as "unexpected eof while reading", so every write fails after 13 retries. Node's TLS
//!   server closes cleanly. s3rver checks the access key id (`S3RVER`).
//! - Azure: `azurite-blob` (npm), account `devstoreaccount1` with Azurite's documented key;
//!   the container is created through the Blob API with Shared Key authentication.
//!
//! pgBackRest verifies both servers (`repoN-storage-ca-file` = the test CA). pgBackRest 2.45
//! matches the host only against DNS names (and the common name), never IP SANs, so the
//! server certificate carries `127.0.0.1` both as an IP SAN (for ordinary clients) and as a
//! DNS SAN (for pgBackRest). Both servers come from the npm cache
//! `scripts/setup-test-deps` fills ([`NPM_BIN`]).

#![allow(dead_code)] // each test binary uses a different part

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `scripts/setup-test-deps` installs the npm servers (`TUSK_NPM_BIN` overrides).
pub const NPM_BIN: &str = "/var/cache/tusk/npm/node_modules/.bin";
pub const LOOPBACK: &str = "127.0.0.1";
/// s3rver's built-in credentials.
pub const S3_KEY: &str = "S3RVER";
pub const S3_KEY_SECRET: &str = "S3RVER";
/// Azurite's well-known development account (public, documented by Microsoft).
pub const AZURE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn npm_program(name: &str) -> PathBuf {
    let dir = std::env::var_os("TUSK_NPM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(NPM_BIN));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup-test-deps",
        path.display()
    );
    path
}

/// A port nobody listens on right now (the OS picks it; the server binds it next).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A temp directory with the test CA and the servers' certificate, readable by the OS user
/// pgBackRest runs as (`postgres` when the tests run as root).
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tusk object-store test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![
            SanType::IpAddress(Ipv4Addr::LOCALHOST.into()),
            SanType::DnsName(LOOPBACK.try_into().unwrap()),
        ];
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.crt"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        TestCa { dir }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// An HTTPS client that trusts only the test CA.
    fn agent(&self) -> ureq::Agent {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pem = std::fs::read(self.ca_file()).unwrap();
        let ca = Certificate::from_pem(&pem).unwrap().to_owned();
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(&[ca]))
            .build();
        ureq::Agent::config_builder()
            .tls_config(tls)
            .proxy(None)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into()
    }
}

/// A server process with its data directory; killed (and reaped) on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    _data: tempfile::TempDir,
    log: PathBuf,
}

impl Server {
    fn start(mut command: Command, port: u16, data: tempfile::TempDir, what: &str) -> Server {
        let log = data.path().join("server.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let mut server = Server {
            child,
            port,
            _data: data,
            log,
        };
        server.wait_listening(what);
        server
    }

    fn wait_listening(&mut self, what: &str) {
        let start = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{what} exited with {status}: {}", self.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{what} did not listen on port {}: {}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Our own child, by its handle: nothing else is signalled.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `s3rver` serving HTTPS with one bucket, created through the S3 API.
pub struct S3 {
    pub server: Server,
    pub bucket: String,
}

impl S3 {
    pub fn start(ca: &TestCa, bucket: &str) -> S3 {
        let port = free_port();
        let data = data_dir();
        let mut command = Command::new(npm_program("s3rver"));
        command
            .args(["-d"])
            .arg(data.path())
            .args(["-a", LOOPBACK, "-p", &port.to_string(), "--silent"])
            .arg("--key")
            .arg(ca.key())
            .arg("--cert")
            .arg(ca.cert());
        let server = Server::start(command, port, data, "s3rver");
        let url = format!("https://{LOOPBACK}:{port}/{bucket}");
        let response = ca
            .agent()
            .put(&url)
            .send_empty()
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        assert_eq!(response.status(), 200, "creating bucket {bucket}");
        S3 {
            server,
            bucket: bucket.into(),
        }
    }

    /// `spec.backups.pgbackrest.global` (or `dataSource.pgbackrest.global`) entries that
    /// point repo `n` at this server: YAML lines indented by `indent` spaces.
    pub fn global(&self, ca: &TestCa, n: u8, indent: usize) -> String {
        let pad = " ".repeat(indent);
        format!(
            "{pad}repo{n}-s3-uri-style: path\n{pad}repo{n}-storage-port: \"{}\"\n\
             {pad}repo{n}-storage-ca-file: {}\n",
            self.server.port,
            ca.ca_file().display()
        )
    }

    /// The repo's YAML mapping (after `s3:`).
    pub fn repo(&self) -> String {
        format!(
            "{{ bucket: {}, endpoint: \"{LOOPBACK}\", region: us-east-1 }}",
            self.bucket
        )
    }

    /// The credentials file a Secret would hold (`s3.conf`).
    pub fn credentials(n: u8) -> String {
        format!("[global]\nrepo{n}-s3-key={S3_KEY}\nrepo{n}-s3-key-secret={S3_KEY_SECRET}\n")
    }
}

/// `azurite-blob` serving HTTPS with one container, created through the Blob API.
pub struct Azure {
    pub server: Server,
    pub container: String,
}

impl Azure {
    pub fn start(ca: &TestCa, container: &str) -> Azure {
        let port = free_port();
        let data = data_dir();
        let mut command = Command::new(npm_program("azurite-blob"));
        command
            .args(["--blobHost", LOOPBACK, "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(data.path())
            .args(["--silent", "--disableTelemetry", "--skipApiVersionCheck"])
            .arg("--cert")
            .arg(ca.cert())
            .arg("--key")
            .arg(ca.key());
        let server = Server::start(command, port, data, "azurite-blob");
        create_container(ca, port, container);
        Azure {
            server,
            container: container.into(),
        }
    }

    pub fn global(&self, ca: &TestCa, n: u8, indent: usize) -> String {
        let pad = " ".repeat(indent);
        format!(
            "{pad}repo{n}-azure-uri-style: path\n{pad}repo{n}-storage-host: \"{LOOPBACK}\"\n\
             {pad}repo{n}-storage-port: \"{}\"\n{pad}repo{n}-storage-ca-file: {}\n",
            self.server.port,
            ca.ca_file().display()
        )
    }

    pub fn repo(&self) -> String {
        format!("{{ container: {} }}", self.container)
    }

    pub fn credentials(n: u8) -> String {
        format!("[global]\nrepo{n}-azure-account={AZURE_ACCOUNT}\nrepo{n}-azure-key={AZURE_KEY}\n")
    }
}

/// `Create Container` signed with the account key (Shared Key: HMAC-SHA256 over the
/// canonical request), as any Azure client does; Azurite refuses anonymous requests.
fn create_container(ca: &TestCa, port: u16, container: &str) {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let engine = base64::engine::general_purpose::STANDARD;
    let date = httpdate_now();
    let version = "2019-12-12";
    // Path-style URL: the account is the first path segment, and so appears twice.
    let resource = format!("/{AZURE_ACCOUNT}/{AZURE_ACCOUNT}/{container}\nrestype:container");
    let string_to_sign =
        format!("PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&engine.decode(AZURE_KEY).unwrap())
        .expect("any key length");
    mac.update(string_to_sign.as_bytes());
    let signature = engine.encode(mac.finalize().into_bytes());
    let url = format!("https://{LOOPBACK}:{port}/{AZURE_ACCOUNT}/{container}?restype=container");
    let mut response = ca
        .agent()
        .put(&url)
        .header("x-ms-date", &date)
        .header("x-ms-version", version)
        .header(
            "Authorization",
            format!("SharedKey {AZURE_ACCOUNT}:{signature}"),
        )
        .send_empty()
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let status = response.status();
    assert_eq!(
        status,
        201,
        "creating container {container}: {}",
        response.body_mut().read_to_string().unwrap_or_default()
    );
}

/// Now as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let weekday = &now.weekday().to_string()[..3];
    let month = &now.month().to_string()[..3];
    format!(
        "{weekday}, {:02} {month} {} {:02}:{:02}:{:02} GMT",
        now.day(),
        now.year(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// Writes a "Secret" for `tusk local`: directory `name` beside the manifests (`dir`) with
/// one file per key.
pub fn write_secret(dir: &Path, name: &str, key: &str, value: &str) {
    let secret = dir.join(name);
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join(key), value).unwrap();
}
