//! The cluster's Tusk-issued certificates: which existing leaves to keep, when to issue new
//! ones, what the published `ca.crt` bundle holds, and the three settled steps a new root
//! rolls out in. Pure: the caller passes the CA, what exists and the time.

use time::OffsetDateTime;
use tusk_api::naming::{CLUSTER_DOMAIN, REPLICATION_USER};
use tusk_api::ValidatedCluster;
use tusk_pki::RootCa;

use super::{CertPair, TlsMaterial};

/// Every name a client may use to reach the cluster's PostgreSQL (or PgBouncer) with
/// `sslmode=verify-full`: for the Services `<c>-primary`, `<c>-replicas`, `<c>-ha` and
/// `<c>-pgbouncer` the short, namespaced, `.svc` and fully qualified forms, plus a wildcard
/// for every pod's stable name under the headless `<c>-pods` Service. PgBouncer's names are
/// always present so turning pooling on or off does not reissue the certificate.
pub fn server_dns_names(cluster: &ValidatedCluster) -> Vec<String> {
    let names = &cluster.names;
    let namespace = &cluster.namespace;
    let services = [
        names.primary_service(),
        names.replica_service(),
        names.patroni_scope(),
        names.pgbouncer(),
    ];
    let mut dns = Vec::with_capacity(services.len() * 4 + 2);
    for service in services {
        let svc_host = names.service_host(&service, namespace);
        dns.push(format!("{service}.{namespace}"));
        dns.push(format!("{svc_host}.{CLUSTER_DOMAIN}"));
        dns.push(svc_host);
        dns.push(service);
    }
    let pods_host = names.service_host(&names.pods_service(), namespace);
    dns.push(format!("*.{pods_host}.{CLUSTER_DOMAIN}"));
    dns.push(format!("*.{pods_host}"));
    dns.sort();
    dns
}

/// Annotation on both cert Secrets: when their trust state last changed (the `ca.crt` bundle,
/// or a leaf reissued), RFC 3339. A root rollover takes its next step only once this is
/// [`TRUST_SETTLE`] old; a Secret without it counts as settled long ago.
pub const TRUST_CHANGED_ANNOTATION: &str = "tusk.rs/trust-changed-at";

/// How long a change of the cert Secrets takes to reach every pod: the kubelet refreshes a
/// mounted Secret within its sync period (1 min by default) plus its cache's delay, then the
/// `tls-reload` sidecar notices within its 10 s poll and SIGHUPs Patroni. Three minutes
/// covers that with room; each rollover step waits this long for the one before.
pub const TRUST_SETTLE: std::time::Duration = std::time::Duration::from_secs(180);

/// The certificate pairs the controller found in the cluster's cert Secrets (`None`: Secret
/// or key missing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExistingTls {
    /// From `<c>-cluster-cert`.
    pub server: Option<CertPair>,
    /// From `<c>-replication-cert`.
    pub replication: Option<CertPair>,
    /// The `ca.crt` bundle published in `<c>-cluster-cert`: what the cluster's peers trust now,
    /// and so the only record of a previous root once the root Secret was replaced.
    pub ca_bundle: Option<String>,
    /// [`TRUST_CHANGED_ANNOTATION`] of `<c>-cluster-cert`, when present and readable.
    pub trust_changed_at: Option<OffsetDateTime>,
}

/// The cluster's Tusk-issued certificates, or `None` when the spec brings its own
/// (`customTLSSecret`): Tusk never touches custom certificates.
///
/// An existing pair is kept, byte for byte, when it was issued by `ca`, its key matches, it is
/// not yet due for renewal at `now` ([`tusk_pki::needs_renewal`]) and it still fits: the
/// server certificate must cover every name of [`server_dns_names`], the replication client
/// certificate must be for [`REPLICATION_USER`]. Anything else is reissued, so a CA rollover,
/// an approaching expiry, a new name or a hand-edited Secret all heal.
///
/// A new root (deleted or renewed root Secret) rolls out in three steps, each taken only when
/// the previous change is `settle` old (see [`TRUST_SETTLE`]), so that no pod ever meets a
/// peer certificate its own, possibly not yet refreshed, `ca.crt` does not trust:
/// 1. the bundle becomes new root + old root; the old leaves stay;
/// 2. the leaves are reissued by the new root; the bundle still trusts both;
/// 3. the old root leaves the bundle ([`tusk_pki::rollover_bundle`]: no leaf chains to it).
///
/// A leaf that is unusable anyway (key missing or mismatched, expired, names missing, not
/// signed by any trusted root) does not wait: it is reissued by `ca` at once. The result's
/// `rollover_pending` tells the caller to come back (requeue) for the next step.
pub fn tls_material(
    cluster: &ValidatedCluster,
    ca: &RootCa,
    existing: &ExistingTls,
    now: OffsetDateTime,
    settle: std::time::Duration,
) -> Result<Option<TlsMaterial>, tusk_pki::Error> {
    if cluster.tls.custom_server.is_some() {
        return Ok(None);
    }
    let published = existing.ca_bundle.as_deref().unwrap_or_default();
    let trusted = tusk_pki::bundle_certificates(published);
    let settled = existing
        .trust_changed_at
        .is_none_or(|at| now >= at + settle);
    let published_trusts_ca = trusted.iter().any(|root| same_pem(root, ca.cert_pem()));
    // Peers trust `ca` and have had the time to load that trust: new leaves may appear.
    let may_switch = settled && published_trusts_ca;
    let dns_names = server_dns_names(cluster);
    let fits_server = |pair: &CertPair| covers(pair, &dns_names);
    let fits_replication = |pair: &CertPair| {
        tusk_pki::common_name(&pair.cert_pem)
            .ok()
            .flatten()
            .as_deref()
            == Some(REPLICATION_USER)
    };
    let choose = |pair: Option<&CertPair>, fits: &dyn Fn(&CertPair) -> bool| -> Choice {
        match pair.filter(|pair| fits(pair)) {
            Some(pair) if still_valid(pair, ca, now) => Choice::Keep(pair.clone()),
            Some(pair) if !may_switch && usable_until_switch(pair, &trusted, now) => {
                Choice::Hold(pair.clone())
            }
            _ => Choice::Issue,
        }
    };
    let server = match choose(existing.server.as_ref(), &fits_server) {
        Choice::Keep(pair) | Choice::Hold(pair) => (pair, false),
        Choice::Issue => (
            ca.issue_server(&cluster.names.primary_service(), &dns_names, now)?
                .into(),
            true,
        ),
    };
    let replication = match choose(existing.replication.as_ref(), &fits_replication) {
        Choice::Keep(pair) | Choice::Hold(pair) => (pair, false),
        Choice::Issue => (ca.issue_client(REPLICATION_USER, now)?.into(), true),
    };
    let leaves_in_use: Vec<&str> = [&existing.server, &existing.replication]
        .into_iter()
        .flatten()
        .map(|pair| pair.cert_pem.as_str())
        .chain([server.0.cert_pem.as_str(), replication.0.cert_pem.as_str()])
        .collect();
    let mut ca_bundle_pem = tusk_pki::rollover_bundle(ca.cert_pem(), published, &leaves_in_use);
    // Step 3 waits too: a root leaves the bundle only once every pod has its new leaves.
    let drops_a_root = tusk_pki::bundle_certificates(&ca_bundle_pem).len() < trusted.len()
        && !published.is_empty();
    if drops_a_root && !settled && published_trusts_ca {
        ca_bundle_pem = published.to_owned();
    }
    let changed = server.1 || replication.1 || ca_bundle_pem != published;
    let rollover_pending = tusk_pki::bundle_certificates(&ca_bundle_pem).len() > 1
        || !tusk_pki::issued_by(&server.0.cert_pem, ca)
        || !tusk_pki::issued_by(&replication.0.cert_pem, ca);
    Ok(Some(TlsMaterial {
        ca_bundle_pem,
        server: server.0,
        replication: replication.0,
        trust_changed_at: if changed {
            Some(now)
        } else {
            existing.trust_changed_at
        },
        rollover_pending,
    }))
}

/// What [`tls_material`] does with one existing leaf.
enum Choice {
    /// Good for the current root: kept.
    Keep(CertPair),
    /// From an older root, kept until peers trust the new one (rollover step 1).
    Hold(CertPair),
    Issue,
}

/// Two PEM blocks of the same certificate (whitespace around them aside).
fn same_pem(a: &str, b: &str) -> bool {
    a.trim() == b.trim()
}

/// A leaf of an older root that may stay while a rollover waits: signed by a root the cluster
/// trusts now, its key matching, not expired at `now`.
fn usable_until_switch(pair: &CertPair, trusted: &[String], now: OffsetDateTime) -> bool {
    trusted
        .iter()
        .any(|root| tusk_pki::signed_by(&pair.cert_pem, root))
        && tusk_pki::key_matches(&pair.cert_pem, &pair.key_pem)
        && tusk_pki::validity(&pair.cert_pem).is_ok_and(|(_, end)| now < end)
}

/// The CA bundle a `customTLSSecret` cluster verifies CLIENT certificates against: the user's
/// `ca.crt` (their clients, replication), then the operator root (the operator's own
/// `_tusk_operator` certificate for the SQL step). Published in `<c>-client-ca` and projected
/// as the server directory's `ca.crt` (see `build::volumes`).
///
/// What this trusts, stated plainly: PostgreSQL cannot tie a pg_hba `cert` rule to one issuer
/// (`clientname=CN|DN` matches the subject only, and `ssl_ca_file` is one file for every
/// rule). So anyone holding the user's CA key can mint a `_tusk_operator` certificate and
/// become the superuser, and any operator-root certificate for [`REPLICATION_USER`] (every
/// Tusk-issued cluster's replication certificate) can stream from this cluster. Both CAs are
/// already trusted with the data this cluster holds: the user's signs its server certificate,
/// the operator's runs its SQL.
pub fn custom_client_ca_bundle(user_ca_pem: &str, root: &RootCa) -> String {
    tusk_pki::trust_bundle(&[user_ca_pem, root.cert_pem()])
}

/// Issued by `ca`, key and certificate belong together, not due for renewal.
fn still_valid(pair: &CertPair, ca: &RootCa, now: OffsetDateTime) -> bool {
    tusk_pki::issued_by(&pair.cert_pem, ca)
        && tusk_pki::key_matches(&pair.cert_pem, &pair.key_pem)
        && !tusk_pki::needs_renewal(&pair.cert_pem, now).unwrap_or(true)
}

/// The certificate's DNS subjectAltNames include every one of `required`.
fn covers(pair: &CertPair, required: &[String]) -> bool {
    tusk_pki::dns_names(&pair.cert_pem)
        .is_ok_and(|present| required.iter().all(|name| present.contains(name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::material::tests::cluster;

    const SETTLE: std::time::Duration = TRUST_SETTLE;

    const ISSUED_UNIX: i64 = 1_900_000_000; // 2030-03-17, explicit: no wall clock in tests

    fn at(days_after_issue: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(ISSUED_UNIX + days_after_issue * 86_400).unwrap()
    }

    /// subjectAltNames as the real `openssl x509` prints them (PEM on stdin).
    fn openssl_dns_sans(cert_pem: &str) -> Vec<String> {
        use std::io::Write;
        let mut child = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run openssl (apt-get install openssl)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(cert_pem.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let mut names: Vec<String> = text
            .split([',', '\n'])
            .filter_map(|item| item.trim().strip_prefix("DNS:").map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    fn issue(cluster: &ValidatedCluster, ca: &RootCa, existing: &ExistingTls) -> TlsMaterial {
        tls_material(cluster, ca, existing, at(0), SETTLE)
            .unwrap()
            .unwrap()
    }

    fn kept(tls: &TlsMaterial) -> ExistingTls {
        ExistingTls {
            server: Some(tls.server.clone()),
            replication: Some(tls.replication.clone()),
            ca_bundle: Some(tls.ca_bundle_pem.clone()),
            trust_changed_at: tls.trust_changed_at,
        }
    }

    #[test]
    fn server_names_cover_every_service_form_and_every_pod() {
        let names = server_dns_names(&cluster(""));
        let mut expected = vec![
            "*.hippo-pods.db.svc".to_owned(),
            "*.hippo-pods.db.svc.cluster.local".to_owned(),
        ];
        for service in [
            "hippo-primary",
            "hippo-replicas",
            "hippo-ha",
            "hippo-pgbouncer",
        ] {
            expected.push(service.to_owned());
            expected.push(format!("{service}.db"));
            expected.push(format!("{service}.db.svc"));
            expected.push(format!("{service}.db.svc.cluster.local"));
        }
        expected.sort();
        assert_eq!(names, expected);
    }

    #[test]
    fn issued_certificates_carry_every_name_and_the_replication_role() {
        let cluster = cluster("");
        let ca = RootCa::generate(at(-1)).unwrap();
        let tls = issue(&cluster, &ca, &ExistingTls::default());
        assert_eq!(
            openssl_dns_sans(&tls.server.cert_pem),
            server_dns_names(&cluster)
        );
        assert_eq!(
            tusk_pki::common_name(&tls.replication.cert_pem)
                .unwrap()
                .as_deref(),
            Some(REPLICATION_USER)
        );
        assert_eq!(tls.ca_bundle_pem, ca.cert_pem());
        assert!(tusk_pki::issued_by(&tls.server.cert_pem, &ca));
        assert!(tusk_pki::issued_by(&tls.replication.cert_pem, &ca));
    }

    #[test]
    fn fresh_certificates_of_the_same_ca_are_kept_byte_for_byte() {
        let cluster = cluster("");
        let ca = RootCa::generate(at(-1)).unwrap();
        let first = issue(&cluster, &ca, &ExistingTls::default());
        let again = tls_material(&cluster, &ca, &kept(&first), at(200), SETTLE)
            .unwrap()
            .unwrap();
        assert_eq!(again, first);
        // The CA restored from its Secret is the same CA.
        let restored = RootCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(issue(&cluster, &restored, &kept(&first)), first);
    }

    #[test]
    fn certificates_are_reissued_near_expiry_or_for_a_missing_name() {
        let cluster = cluster("");
        let ca = RootCa::generate(at(-1)).unwrap();
        let first = issue(&cluster, &ca, &ExistingTls::default());

        // 250 of 365 days is past the 2/3 mark.
        let late = tls_material(&cluster, &ca, &kept(&first), at(250), SETTLE)
            .unwrap()
            .unwrap();
        assert_ne!(late.server, first.server);
        assert_ne!(late.replication, first.replication);

        let narrow = ca
            .issue_server("hippo-primary", &["hippo-primary".to_owned()], at(0))
            .unwrap();
        let existing = ExistingTls {
            server: Some(narrow.clone().into()),
            replication: Some(first.replication.clone()),
            ca_bundle: None,
            trust_changed_at: None,
        };
        let widened = issue(&cluster, &ca, &existing);
        assert_ne!(widened.server.cert_pem, narrow.cert_pem);
        assert_eq!(
            openssl_dns_sans(&widened.server.cert_pem),
            server_dns_names(&cluster)
        );
        assert_eq!(widened.replication, first.replication);
    }

    /// Some root of `bundle` signed `leaf`: a peer holding that `ca.crt` accepts it.
    fn trusted_by(bundle: &str, leaf: &CertPair) -> bool {
        tusk_pki::bundle_certificates(bundle)
            .iter()
            .any(|root| tusk_pki::signed_by(&leaf.cert_pem, root))
    }

    #[test]
    fn a_new_root_rolls_out_in_three_steps_each_waiting_for_the_last() {
        let cluster = cluster("");
        let old = RootCa::generate(at(-1)).unwrap();
        let first = issue(&cluster, &old, &ExistingTls::default());
        assert_eq!(first.trust_changed_at, Some(at(0)));
        assert!(!first.rollover_pending);
        let new = RootCa::generate(at(-1)).unwrap();
        let step = |existing: &ExistingTls, now: OffsetDateTime| {
            tls_material(&cluster, &new, existing, now, SETTLE)
                .unwrap()
                .unwrap()
        };
        let second = time::Duration::seconds(1);

        // 1. Trust first: the bundle gains the new root, the leaves stay.
        let t1 = at(1);
        let one = step(&kept(&first), t1);
        assert_eq!(
            (&one.server, &one.replication),
            (&first.server, &first.replication)
        );
        assert_eq!(
            tusk_pki::bundle_certificates(&one.ca_bundle_pem),
            [new.cert_pem(), old.cert_pem()]
        );
        assert_eq!(one.trust_changed_at, Some(t1));
        assert!(one.rollover_pending);
        assert_eq!(step(&kept(&one), t1 + SETTLE - second), one, "too early");

        // 2. Leaves from the new root; both roots still trusted. A pod with step 1's files
        //    and a pod with step 2's accept each other's certificates.
        let t2 = t1 + SETTLE;
        let two = step(&kept(&one), t2);
        assert!(tusk_pki::issued_by(&two.server.cert_pem, &new));
        assert!(tusk_pki::issued_by(&two.replication.cert_pem, &new));
        assert_eq!(two.ca_bundle_pem, one.ca_bundle_pem);
        assert_eq!(two.trust_changed_at, Some(t2));
        assert!(two.rollover_pending);
        for (bundle, leaf) in [
            (&one.ca_bundle_pem, &two.server),
            (&one.ca_bundle_pem, &two.replication),
            (&two.ca_bundle_pem, &one.server),
            (&two.ca_bundle_pem, &one.replication),
        ] {
            assert!(trusted_by(bundle, leaf));
        }
        assert_eq!(step(&kept(&two), t2 + SETTLE - second), two, "too early");

        // 3. The old root leaves the bundle; then nothing moves any more.
        let t3 = t2 + SETTLE;
        let three = step(&kept(&two), t3);
        assert_eq!(
            (&three.server, &three.replication),
            (&two.server, &two.replication)
        );
        assert_eq!(three.ca_bundle_pem, new.cert_pem());
        assert_eq!(three.trust_changed_at, Some(t3));
        assert!(!three.rollover_pending);
        assert_eq!(step(&kept(&three), at(30)), three);
    }

    #[test]
    fn a_broken_leaf_does_not_wait_for_a_rollover() {
        let cluster = cluster("");
        let old = RootCa::generate(at(-1)).unwrap();
        let first = issue(&cluster, &old, &ExistingTls::default());
        let new = RootCa::generate(at(-1)).unwrap();
        let mut existing = kept(&first);
        // The server's key was deleted (dereference then finds no pair at all).
        existing.server = None;
        let healed = tls_material(&cluster, &new, &existing, at(1), SETTLE)
            .unwrap()
            .unwrap();
        assert!(tusk_pki::issued_by(&healed.server.cert_pem, &new));
        assert_eq!(
            healed.replication, first.replication,
            "the intact leaf waits"
        );
        assert_eq!(
            tusk_pki::bundle_certificates(&healed.ca_bundle_pem),
            [new.cert_pem(), old.cert_pem()]
        );
        assert!(healed.rollover_pending);
        // An expired leaf of the old root is not held either.
        let expired = tls_material(&cluster, &new, &kept(&first), at(400), SETTLE)
            .unwrap()
            .unwrap();
        assert!(tusk_pki::issued_by(&expired.server.cert_pem, &new));
        assert!(tusk_pki::issued_by(&expired.replication.cert_pem, &new));
    }

    #[test]
    fn mismatched_or_wrong_role_pairs_are_reissued() {
        let cluster = cluster("");
        let ca = RootCa::generate(at(-1)).unwrap();
        let first = issue(&cluster, &ca, &ExistingTls::default());
        let other_role: CertPair = ca.issue_client("someone-else", at(0)).unwrap().into();
        let existing = ExistingTls {
            server: Some(CertPair {
                cert_pem: first.server.cert_pem.clone(),
                key_pem: first.replication.key_pem.clone(),
            }),
            replication: Some(other_role.clone()),
            ca_bundle: None,
            trust_changed_at: None,
        };
        let healed = issue(&cluster, &ca, &existing);
        assert_ne!(healed.server.cert_pem, first.server.cert_pem);
        assert!(tusk_pki::key_matches(
            &healed.server.cert_pem,
            &healed.server.key_pem
        ));
        assert_ne!(healed.replication, other_role);
    }

    #[test]
    fn custom_tls_is_never_touched() {
        let cluster = cluster(
            "  customTLSSecret: {name: hippo.tls}\n  customReplicationTLSSecret: {name: hippo-repl.tls}\n",
        );
        let ca = RootCa::generate(at(-1)).unwrap();
        assert_eq!(
            tls_material(&cluster, &ca, &ExistingTls::default(), at(0), SETTLE).unwrap(),
            None
        );
    }

    #[test]
    fn cert_pair_debug_never_shows_the_key() {
        let ca = RootCa::generate(at(-1)).unwrap();
        let pair: CertPair = ca.issue_client(REPLICATION_USER, at(0)).unwrap().into();
        let key_body = pair.key_pem.lines().nth(1).unwrap().to_owned();
        let debug = format!(
            "{:?}",
            ExistingTls {
                server: None,
                replication: Some(pair),
                ca_bundle: None,
                trust_changed_at: None,
            }
        );
        assert!(
            !debug.contains(&key_body) && !debug.contains("PRIVATE KEY"),
            "{debug}"
        );
    }
}
