//! PostgreSQL from the test process: through a Service's ClusterIP (the host routes the node's
//! Service range), as a user of the cluster with the password of its `<c>-pguser-<user>`
//! Secret, TLS verify-full against `<c>-cluster-cert`'s CA with the Service's DNS name (the
//! address is dialled directly, as libpq's `hostaddr`). And a writer that keeps a ledger of
//! the rows PostgreSQL acknowledged, to count what a failover lost.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::Api;
use kube::Client;
use tokio::task::JoinHandle;
use tusk_sql::{ConnectTarget, Pem};

/// How to reach a cluster's Service as one of its users.
#[derive(Clone)]
pub struct Login {
    pub target: ConnectTarget,
    pub database: String,
}

fn secret_text(secret: &Secret, key: &str) -> String {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .unwrap_or_else(|| panic!("Secret {name} has no {key}"));
    String::from_utf8(bytes.0.clone()).expect("UTF-8 Secret value")
}

/// `user` of cluster `cluster` at Service `service` (e.g. `<c>-primary`).
pub async fn login(
    client: &Client,
    namespace: &str,
    cluster: &str,
    service: &str,
    user: &str,
) -> Login {
    let names = tusk_api::naming::ClusterNames::new(
        tusk_api::naming::DnsLabel::new(cluster).expect("a cluster name"),
    );
    let ca = (names.cluster_cert_secret(), "ca.crt");
    login_verified_by(client, namespace, cluster, service, user, (&ca.0, ca.1)).await
}

/// [`login`] verifying the server against key `ca.1` of Secret `ca.0` (e.g. the user's own
/// `customTLSSecret`, whose keys the user named).
pub async fn login_verified_by(
    client: &Client,
    namespace: &str,
    cluster: &str,
    service: &str,
    user: &str,
    ca: (&str, &str),
) -> Login {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let names = tusk_api::naming::ClusterNames::new(
        tusk_api::naming::DnsLabel::new(cluster).expect("a cluster name"),
    );
    let user_secret = secrets
        .get(&names.user_secret(user))
        .await
        .expect("the user's Secret");
    let cert_secret = secrets.get(ca.0).await.expect("the CA's Secret");
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let svc = services.get(service).await.expect("the Service");
    let cluster_ip: IpAddr = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .expect("a ClusterIP")
        .parse()
        .expect("an IP address");
    Login {
        target: ConnectTarget {
            host: format!("{service}.{namespace}.svc"),
            hostaddr: Some(cluster_ip),
            port: secret_text(&user_secret, "port").parse().expect("a port"),
            socket_dir: None,
            user: secret_text(&user_secret, "user"),
            ca: Some(Pem::Text(secret_text(&cert_secret, ca.1))),
            client_cert: None,
            password: Some(secret_text(&user_secret, "password")),
        },
        database: secret_text(&user_secret, "dbname"),
    }
}

impl Login {
    pub async fn connect(&self) -> Result<tokio_postgres::Client, String> {
        tusk_sql::connect(&self.target, &self.database)
            .await
            .map_err(|e| e.to_string())
    }

    /// Runs `sql` (one statement) and returns the first column of every row as text.
    pub async fn query(&self, sql: &str) -> Result<Vec<String>, String> {
        let client = self.connect().await?;
        let rows = client.simple_query(sql).await.map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .filter_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some(row.get(0).unwrap_or_default().to_owned())
                }
                _ => None,
            })
            .collect())
    }
}

/// One acknowledged insert: its id, when the commit returned, and the server that took it.
#[derive(Clone, Debug)]
pub struct Ack {
    pub id: i64,
    pub at: Instant,
    pub server: String,
}

/// A writer inserting `id`s 1, 2, 3... into `ledger` through a Service, reconnecting after any
/// failure, and recording every acknowledged commit.
pub struct LedgerWriter {
    acks: Arc<Mutex<Vec<Ack>>>,
    attempted: Arc<Mutex<i64>>,
    stop: Arc<tokio::sync::Notify>,
    task: JoinHandle<()>,
}

/// Creates the table the writer fills (`id bigint primary key`).
pub async fn create_ledger(login: &Login) {
    let client = login
        .connect()
        .await
        .expect("connecting to create the ledger");
    client
        .batch_execute("create table if not exists ledger (id bigint primary key, at timestamptz default now())")
        .await
        .expect("creating the ledger table");
}

impl LedgerWriter {
    pub fn start(login: Login) -> LedgerWriter {
        let acks = Arc::new(Mutex::new(Vec::new()));
        let attempted = Arc::new(Mutex::new(0));
        let stop = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(write_loop(
            login,
            acks.clone(),
            attempted.clone(),
            stop.clone(),
        ));
        LedgerWriter {
            acks,
            attempted,
            stop,
            task,
        }
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    /// Waits until `n` more commits were acknowledged after this call.
    pub async fn wait_for_more(&self, n: usize, limit: Duration) {
        let from = self.acks.lock().unwrap().len();
        super::eventually(&format!("{n} more acknowledged inserts"), limit, || async {
            (self.acks.lock().unwrap().len() >= from + n).then_some(())
        })
        .await
    }

    /// Stops writing; returns every acknowledged insert and how many were attempted.
    pub async fn stop(self) -> (Vec<Ack>, i64) {
        self.stop.notify_one();
        let _ = self.task.await;
        let acks = self.acks.lock().unwrap().clone();
        let attempted = *self.attempted.lock().unwrap();
        (acks, attempted)
    }
}

async fn write_loop(
    login: Login,
    acks: Arc<Mutex<Vec<Ack>>>,
    attempted: Arc<Mutex<i64>>,
    stop: Arc<tokio::sync::Notify>,
) {
    let mut next = 1_i64;
    let mut connection: Option<tokio_postgres::Client> = None;
    loop {
        let step = async {
            if connection.is_none() {
                // A connection attempt to a Service without a ready endpoint hangs until the
                // TCP timeout: bound it, so the writer notices the new primary promptly.
                match tokio::time::timeout(Duration::from_secs(3), login.connect()).await {
                    Ok(Ok(client)) => connection = Some(client),
                    _ => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return;
                    }
                }
            }
            let client = connection.as_ref().expect("connected");
            *attempted.lock().unwrap() = next;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&next];
            let insert = client.query_one(
                "insert into ledger (id) values ($1) returning host(inet_server_addr())",
                &params,
            );
            match tokio::time::timeout(Duration::from_secs(5), insert).await {
                Ok(Ok(row)) => {
                    acks.lock().unwrap().push(Ack {
                        id: next,
                        at: Instant::now(),
                        server: row.get(0),
                    });
                    next += 1;
                }
                // Not acknowledged: the outcome is unknown, so the id is never reused.
                _ => {
                    connection = None;
                    next += 1;
                }
            }
        };
        tokio::select! {
            _ = stop.notified() => return,
            _ = step => {}
        }
    }
}

/// The ids in `acks` that the ledger read through `login` does not hold: acknowledged writes
/// that were lost.
pub async fn lost_rows(login: &Login, acks: &[Ack]) -> Vec<i64> {
    let stored: std::collections::BTreeSet<i64> = login
        .query("select id from ledger")
        .await
        .expect("reading the ledger")
        .iter()
        .map(|id| id.parse().expect("an id"))
        .collect();
    acks.iter()
        .map(|a| a.id)
        .filter(|id| !stored.contains(id))
        .collect()
}

/// The longest time between two consecutive acknowledgements in `acks`.
pub fn longest_gap(acks: &[Ack]) -> Duration {
    acks.windows(2)
        .map(|pair| pair[1].at.duration_since(pair[0].at))
        .max()
        .unwrap_or_default()
}
