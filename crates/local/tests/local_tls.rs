//! TLS of a real local cluster (2 members): who the servers accept (a foreign CA is refused,
//! for the server's identity and for replication's client certificate), replicas streaming
//! by certificate, a leaf rotated while a session stays open (reload, no restart), and a root
//! rollover across `up` runs during which clients of the old and of the new root connect and
//! replication keeps streaming. `sslmode=verify-full` with the cluster CA is already asserted
//! by local_cluster.rs and local_users.rs; here it is the control of each refusal.
//! Networks 127.46.1.x and 127.46.2.x; every process is stopped on drop (also on panic).

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{manifest, output, psql, Cluster, PSQL};
use time::OffsetDateTime;
use tusk_api::naming::REPLICATION_USER;
use tusk_pki::RootCa;

/// Superuser SQL on the primary through `tusk local psql` (Unix socket, peer auth).
fn as_superuser(cluster: &Cluster, sql: &str) -> String {
    let args: Vec<OsString> = ["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]
        .into_iter()
        .map(OsString::from)
        .collect();
    output(tusk_local::psql_command(&cluster.layout(), None, &args).unwrap())
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn tls_manifest() -> String {
    manifest(
        "tlszoo",
        2,
        "  users:\n    - name: app\n      databases: [zoo]\n",
    )
}

/// `app` over TLS with `sslmode=verify-full` against `ca_file`.
fn app_conninfo(cluster: &Cluster, host: &str, ca_file: &Path) -> String {
    let password = tusk_local::secret(&cluster.layout(), "app")
        .unwrap()
        .password;
    format!(
        "host={host} port=5432 dbname=zoo user=app password={password} sslmode=verify-full sslrootcert={}",
        ca_file.display()
    )
}

/// A replication connection (`IDENTIFY_SYSTEM`) as the replication role with the given client
/// certificate, verifying the server against the cluster CA.
fn identify_system(host: &str, ca_file: &Path, cert: &Path, key: &Path) -> Result<String, String> {
    let conninfo = format!(
        "host={host} port=5432 dbname=postgres user={REPLICATION_USER} replication=true \
         sslmode=verify-ca sslrootcert={} sslcert={} sslkey={}",
        ca_file.display(),
        cert.display(),
        key.display()
    );
    let mut command = Command::new(PSQL);
    command
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-d",
            &conninfo,
            "-c",
            "IDENTIFY_SYSTEM",
        ])
        .env_remove("PGPASSWORD")
        .env_remove("PGSSLMODE");
    output(command)
}

/// The certificate the server at `host:5432` presents, as `openssl s_client` sees it.
fn served_certificate(host: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-starttls", "postgres", "-connect"])
        .arg(format!("{host}:5432"))
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    tusk_pki::bundle_certificates(&text)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no certificate from {host}: {text}"))
}

/// `usename|ssl|client_dn` of every walsender on the primary, once `expected` replicas stream.
fn replication_identities(cluster: &Cluster, expected: usize) -> Vec<String> {
    const SQL: &str = "SELECT r.usename, s.ssl, s.client_dn FROM pg_stat_replication r \
                       JOIN pg_stat_ssl s USING (pid) WHERE r.state = 'streaming' ORDER BY 1";
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let rows: Vec<String> = as_superuser(cluster, SQL)
            .lines()
            .map(str::to_owned)
            .collect();
        if rows.len() >= expected || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn assert_replicas_stream_by_certificate(cluster: &Cluster) {
    let rows = replication_identities(cluster, 1);
    assert_eq!(
        rows,
        vec![format!("{REPLICATION_USER}|t|/CN={REPLICATION_USER}")],
        "the replica streams over TLS as the replication role's certificate"
    );
}

/// Ends every walsender: the replica must open a NEW replication connection, authenticated
/// with the certificate files it has now against what the primary trusts now.
fn force_replication_reconnect(cluster: &Cluster) {
    as_superuser(
        cluster,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_replication",
    );
}

/// `GET /patroni` on every member's REST API as a client presenting a certificate `root`
/// signed, trusting `bundle`: what a peer does in a leader race. Errors name the members
/// that refused.
fn rest_apis_accept_a_client_of(
    cluster: &Cluster,
    root: &RootCa,
    bundle: &str,
) -> Result<(), String> {
    use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
    let leaf = root
        .issue_client("tusk-peer-check", OffsetDateTime::now_utc())
        .unwrap();
    let roots: Vec<Certificate> = ureq::tls::parse_pem(bundle.as_bytes())
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    tusk_local::tls::install_crypto_provider();
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&roots))
        .client_cert(Some(ClientCert::new_with_certs(
            &[Certificate::from_pem(leaf.cert_pem.as_bytes())
                .unwrap()
                .to_owned()],
            PrivateKey::from_pem(leaf.key_pem.as_bytes())
                .unwrap()
                .to_owned(),
        )))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let refused: Vec<String> = tusk_local::status(&cluster.layout())
        .unwrap()
        .members
        .iter()
        .filter_map(|m| {
            let url = format!(
                "https://{}:{}/patroni",
                m.host,
                tusk_api::model::DEFAULT_PATRONI_PORT
            );
            agent
                .get(&url)
                .call()
                .err()
                .map(|e| format!("{}: {e}", m.name))
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refused.join("; "))
    }
}

fn write_pem(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    // libpq refuses a key file others can read.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn foreign_ca_refused_replication_by_certificate_and_leaf_rotation_without_restart() {
    let cluster = Cluster::new("127.46.1");
    let v1 = cluster.write("tls.yaml", &tls_manifest());
    cluster.up(&v1).expect("up");
    let layout = cluster.layout();
    let ca_file = layout.ca_dir().join("ca.crt");
    let (leader, leader_host) = cluster.leader();
    let scratch = cluster.state_dir.parent().unwrap().to_owned();

    // Control: verify-full with the cluster CA connects.
    assert_eq!(
        psql(
            &app_conninfo(&cluster, &leader_host, &ca_file),
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ),
        Ok("t".to_owned())
    );
    // (a) verify-full against a foreign CA fails: the server's certificate does not chain to it.
    let foreign = RootCa::generate(OffsetDateTime::now_utc()).unwrap();
    let foreign_ca = write_pem(&scratch, "foreign-ca.crt", foreign.cert_pem());
    let refused = psql(
        &app_conninfo(&cluster, &leader_host, &foreign_ca),
        "SELECT 1",
    )
    .expect_err("a server certificate of another CA must be refused");
    assert!(refused.contains("certificate verify failed"), "{refused}");

    // (b) A replication client certificate with the right CN from a foreign CA is refused,
    // while the member's own replication certificate is accepted by the same command.
    let forged = foreign
        .issue_client(REPLICATION_USER, OffsetDateTime::now_utc())
        .unwrap();
    let forged_cert = write_pem(&scratch, "forged.crt", &forged.cert_pem);
    let forged_key = write_pem(&scratch, "forged.key", &forged.key_pem);
    let refused = identify_system(&leader_host, &ca_file, &forged_cert, &forged_key)
        .expect_err("a client certificate of another CA must be refused");
    assert!(
        refused.contains("certificate verify failed") || refused.contains("unknown ca"),
        "{refused}"
    );
    let own = layout.member(&leader).replication_tls_dir();
    identify_system(
        &leader_host,
        &ca_file,
        &own.join("tls.crt"),
        &own.join("tls.key"),
    )
    .expect("the cluster's replication certificate is accepted");

    // Replicas stream authenticated by certificate.
    assert_replicas_stream_by_certificate(&cluster);

    // Leaf rotation with a session open over TLS.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let password = tusk_local::secret(&layout, "app").unwrap().password;
    let target = tusk_sql::ConnectTarget {
        host: leader_host.clone(),
        hostaddr: None,
        port: 5432,
        socket_dir: None,
        user: "app".into(),
        ca: Some(tusk_sql::Pem::File(ca_file.clone())),
        client_cert: None,
        password: Some(password),
    };
    let session = runtime
        .block_on(tusk_sql::connect(&target, "zoo"))
        .expect("session over verify-full TLS");
    let session_state = || -> (i32, String) {
        let row = runtime
            .block_on(session.query_one(
                "SELECT pg_backend_pid(), pg_postmaster_start_time()::text",
                &[],
            ))
            .expect("the open session answers");
        (row.get(0), row.get(1))
    };
    let before = session_state();
    let server_dir = layout.member(&leader).server_tls_dir();
    let first = served_certificate(&leader_host);
    assert_eq!(
        first.trim(),
        std::fs::read_to_string(server_dir.join("tls.crt"))
            .unwrap()
            .trim()
    );

    // 1. The key is gone: `up` issues a new pair and PostgreSQL reloads it.
    std::fs::remove_file(server_dir.join("tls.key")).unwrap();
    cluster.up(&v1).expect("up after deleting the server key");
    let second = served_certificate(&leader_host);
    assert_ne!(second, first, "new connections see a new certificate");
    assert_eq!(
        second.trim(),
        std::fs::read_to_string(server_dir.join("tls.crt"))
            .unwrap()
            .trim()
    );
    assert_eq!(
        session_state(),
        before,
        "same backend, postmaster not restarted"
    );

    // 2. A certificate past 2/3 of its life (issued 300 of 365 days ago) is renewed.
    let ca = RootCa::from_pem(
        &std::fs::read_to_string(&ca_file).unwrap(),
        &std::fs::read_to_string(layout.ca_dir().join("ca.key")).unwrap(),
    )
    .unwrap();
    let old = ca
        .issue_server(
            &leader,
            &[leader_host.clone(), "localhost".into()],
            OffsetDateTime::now_utc() - time::Duration::days(300),
        )
        .unwrap();
    write_pem(&server_dir, "tls.key", &old.key_pem);
    write_pem(&server_dir, "tls.crt", &old.cert_pem);
    cluster
        .up(&v1)
        .expect("up with an aging server certificate");
    let third = served_certificate(&leader_host);
    assert_ne!(
        third.trim(),
        old.cert_pem.trim(),
        "the aging certificate was replaced"
    );
    assert_ne!(third, second);
    assert!(!tusk_pki::needs_renewal(&third, OffsetDateTime::now_utc()).unwrap());
    assert_eq!(
        session_state(),
        before,
        "same backend, postmaster not restarted"
    );
    assert!(
        cluster
            .progress
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(&leader) && line.contains("reload")),
        "up reports the reload"
    );

    // 3. The replica's replication key is gone: reissued; streaming resumes with it.
    let (_, replica) = tusk_local::status(&layout)
        .unwrap()
        .members
        .into_iter()
        .map(|m| (m.role.clone(), m.name))
        .find(|(role, _)| role != "leader")
        .expect("a replica");
    let replication_dir = layout.member(&replica).replication_tls_dir();
    let old_replication = std::fs::read_to_string(replication_dir.join("tls.crt")).unwrap();
    std::fs::remove_file(replication_dir.join("tls.key")).unwrap();
    cluster
        .up(&v1)
        .expect("up after deleting the replication key");
    assert_ne!(
        std::fs::read_to_string(replication_dir.join("tls.crt")).unwrap(),
        old_replication
    );
    force_replication_reconnect(&cluster);
    assert_replicas_stream_by_certificate(&cluster);
    assert_eq!(session_state(), before);
}

#[test]
fn root_rollover_keeps_old_and_new_clients_and_replication_working() {
    let cluster = Cluster::new("127.46.2");
    let v1 = cluster.write("tls.yaml", &tls_manifest());
    cluster.up(&v1).expect("up");
    let layout = cluster.layout();
    let (_, leader_host) = cluster.leader();
    let scratch = cluster.state_dir.parent().unwrap().to_owned();
    let started = as_superuser(&cluster, "SELECT pg_postmaster_start_time()");
    let old_root = tusk_local::ca_pem(&layout).unwrap();
    assert_eq!(tusk_pki::bundle_certificates(&old_root).len(), 1);
    let old_ca_file = write_pem(&scratch, "old-ca.crt", &old_root);
    let bundle_file = layout.ca_dir().join("ca.crt");

    // Step 1: the CA key is lost. A new root; the bundle holds both; leaves unchanged.
    std::fs::remove_file(layout.ca_dir().join("ca.key")).unwrap();
    cluster.up(&v1).expect("up without the CA key");
    let bundle = tusk_local::ca_pem(&layout).unwrap();
    let roots = tusk_pki::bundle_certificates(&bundle);
    assert_eq!(roots.len(), 2, "old and new root during the rollover");
    assert_ne!(roots[0].trim(), old_root.trim());
    assert_eq!(roots[1].trim(), old_root.trim());
    let new_root = roots[0].clone();
    let new_ca_file = write_pem(&scratch, "new-ca.crt", &new_root);
    let check = |ca: &Path| psql(&app_conninfo(&cluster, &leader_host, ca), "SELECT 1");
    assert_eq!(
        check(&old_ca_file),
        Ok("1".into()),
        "old-CA clients still connect"
    );
    assert_eq!(
        check(&bundle_file),
        Ok("1".into()),
        "bundle clients connect"
    );
    force_replication_reconnect(&cluster);
    assert_replicas_stream_by_certificate(&cluster);
    // Patroni's REST servers trust the new root already: in step 2 a member whose leaf moved
    // first calls the others (a leader race, a failsafe check) with that leaf.
    let ca_key = std::fs::read_to_string(layout.ca_dir().join("ca.key")).unwrap();
    let signing = RootCa::from_pem(&new_root, &ca_key).unwrap();
    assert_eq!(
        rest_apis_accept_a_client_of(&cluster, &signing, &bundle),
        Ok(()),
        "a peer presenting a leaf of the new root is accepted"
    );

    // Step 2: every member trusts the new root, so leaves move to it.
    cluster.up(&v1).expect("second up of the rollover");
    assert_eq!(
        check(&new_ca_file),
        Ok("1".into()),
        "new-root clients connect"
    );
    assert_eq!(
        check(&bundle_file),
        Ok("1".into()),
        "bundle clients connect"
    );
    assert!(
        check(&old_ca_file).is_err(),
        "the served certificate is now from the new root"
    );
    force_replication_reconnect(&cluster);
    assert_replicas_stream_by_certificate(&cluster);
    assert_eq!(
        tusk_pki::bundle_certificates(&tusk_local::ca_pem(&layout).unwrap()).len(),
        2,
        "the admin certificate still uses the old root"
    );

    // Step 3: no leaf uses the old root any more: it leaves the bundle.
    cluster.up(&v1).expect("third up of the rollover");
    assert_eq!(
        tusk_pki::bundle_certificates(&tusk_local::ca_pem(&layout).unwrap()),
        vec![new_root]
    );
    assert_eq!(check(&bundle_file), Ok("1".into()));
    force_replication_reconnect(&cluster);
    assert_replicas_stream_by_certificate(&cluster);
    assert_eq!(
        as_superuser(&cluster, "SELECT pg_postmaster_start_time()"),
        started,
        "no restart of the primary during the rollover"
    );
}
