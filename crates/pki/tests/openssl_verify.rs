//! Issued certificates checked by tools other than the code that made them: the real
//! `openssl verify` (Debian `openssl`) for chains and key purposes, x509-parser for fields.
//! Every check runs at an explicit time (`-attime`), never the wall clock. Files live in a
//! per-test temporary directory that is removed afterwards.

use std::path::PathBuf;
use std::process::Command;

use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use tusk_pki::{
    dns_names, issued_by, needs_renewal, renew_at, trust_bundle, Error, RootCa, LEAF_LIFETIME,
};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::pem::parse_x509_pem;

const ISSUED: OffsetDateTime = datetime!(2030-03-01 12:00 UTC);

/// A temporary directory for PEM files handed to openssl.
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Self {
        Files(tempfile::tempdir().expect("temporary directory"))
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, contents).expect("write PEM");
        path
    }
}

/// `openssl verify` of `leaf` against the trust anchors in `ca_file` at `at`, with RFC 5280
/// strictness and the given purpose (`sslserver` / `sslclient`). Returns success and output.
fn openssl_verify(
    ca_file: &PathBuf,
    leaf: &PathBuf,
    purpose: &str,
    at: OffsetDateTime,
) -> (bool, String) {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-x509_strict")
        .args(["-purpose", purpose])
        .args(["-attime", &at.unix_timestamp().to_string()])
        .arg("-CAfile")
        .arg(ca_file)
        .arg(leaf)
        .output()
        .expect("run openssl (apt-get install openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn dns_sans_via_x509_parser(cert_pem: &str) -> Vec<String> {
    let (_, pem) = parse_x509_pem(cert_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().expect("has SANs");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn root_ca_is_a_p256_ca_limited_to_signing_leaves() {
    let ca = RootCa::generate(ISSUED).unwrap();
    let (_, pem) = parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    assert!(cert.is_ca());
    let constraints = cert.basic_constraints().unwrap().unwrap().value;
    assert_eq!(constraints.path_len_constraint, Some(0));
    let usage = cert.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign());
    assert!(!usage.digital_signature());
    let cn: Vec<_> = cert.subject().iter_common_name().collect();
    assert_eq!(cn.len(), 1);
    assert_eq!(cn[0].as_str().unwrap(), "tusk-root-ca");
    assert_eq!(cert.subject(), cert.issuer());
    let lifetime = cert.validity().not_after.to_datetime() - ISSUED;
    assert!(lifetime >= Duration::days(3650) && lifetime < Duration::days(3660));
    assert!(cert.verify_signature(None).is_ok());
    assert!(!ca.key_pem().is_empty() && ca.key_pem().contains("PRIVATE KEY"));

    // The key really is P-256, as openssl reads it.
    let files = Files::new();
    let path = files.write("ca.pem", ca.cert_pem());
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("prime256v1"), "{text}");
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
}

#[test]
fn server_leaf_has_every_san_and_verifies_only_against_its_own_ca() {
    let ca = RootCa::generate(ISSUED).unwrap();
    let other = RootCa::generate(ISSUED).unwrap();
    let names: Vec<String> = [
        "hippo-primary",
        "hippo-primary.db.svc",
        "hippo-primary.db.svc.cluster.local",
        "*.hippo-pods.db.svc",
    ]
    .map(String::from)
    .to_vec();
    let leaf = ca.issue_server("hippo-primary", &names, ISSUED).unwrap();
    assert_eq!(dns_sans_via_x509_parser(&leaf.cert_pem), names);
    assert_eq!(dns_names(&leaf.cert_pem).unwrap(), names);

    let files = Files::new();
    let ca_file = files.write("ca.pem", ca.cert_pem());
    let other_file = files.write("other.pem", other.cert_pem());
    let leaf_file = files.write("leaf.pem", &leaf.cert_pem);
    let at = ISSUED + Duration::days(1);
    let (ok, out) = openssl_verify(&ca_file, &leaf_file, "sslserver", at);
    assert!(ok, "own CA must accept: {out}");
    let (ok, out) = openssl_verify(&other_file, &leaf_file, "sslserver", at);
    assert!(!ok, "another CA (same CN) must reject: {out}");
    // The instances also present it as a client (Patroni REST API calls between members).
    let (ok, out) = openssl_verify(&ca_file, &leaf_file, "sslclient", at);
    assert!(
        ok,
        "server leaf must also be a valid client certificate: {out}"
    );
    // Nor is it valid after one year.
    let (ok, out) = openssl_verify(
        &ca_file,
        &leaf_file,
        "sslserver",
        ISSUED + LEAF_LIFETIME + Duration::days(1),
    );
    assert!(!ok, "expired leaf must fail: {out}");

    assert!(issued_by(&leaf.cert_pem, &ca));
    assert!(!issued_by(&leaf.cert_pem, &other));
}

#[test]
fn client_leaf_carries_its_role_and_client_purpose() {
    let ca = RootCa::generate(ISSUED).unwrap();
    let leaf = ca.issue_client("_tusk_repl", ISSUED).unwrap();
    assert_eq!(
        tusk_pki::common_name(&leaf.cert_pem).unwrap().as_deref(),
        Some("_tusk_repl")
    );
    let (_, pem) = parse_x509_pem(leaf.cert_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    assert!(!cert.is_ca());
    let eku = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::ExtendedKeyUsage(eku) => Some(eku.clone()),
            _ => None,
        })
        .expect("extendedKeyUsage present");
    assert!(eku.client_auth && !eku.server_auth);

    let files = Files::new();
    let ca_file = files.write("ca.pem", ca.cert_pem());
    let leaf_file = files.write("leaf.pem", &leaf.cert_pem);
    let at = ISSUED + Duration::days(100);
    assert!(openssl_verify(&ca_file, &leaf_file, "sslclient", at).0);
    assert!(!openssl_verify(&ca_file, &leaf_file, "sslserver", at).0);
}

#[test]
fn renewal_is_due_from_two_thirds_of_the_lifetime() {
    let ca = RootCa::generate(ISSUED).unwrap();
    let leaf = ca.issue_client("app", ISSUED).unwrap();
    let (_, pem) = parse_x509_pem(leaf.cert_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    // Whole seconds, computed independently of the crate's arithmetic.
    let two_thirds = not_before + (not_after - not_before) * 2 / 3;
    let at = |secs: i64| OffsetDateTime::from_unix_timestamp(secs).unwrap();

    assert!(!needs_renewal(&leaf.cert_pem, ISSUED).unwrap());
    assert!(!needs_renewal(&leaf.cert_pem, at(two_thirds - 1)).unwrap());
    assert!(needs_renewal(&leaf.cert_pem, at(two_thirds)).unwrap());
    assert!(needs_renewal(&leaf.cert_pem, at(two_thirds + 1)).unwrap());
    assert!(needs_renewal(&leaf.cert_pem, at(not_after + 1)).unwrap());
    assert_eq!(renew_at(&leaf.cert_pem).unwrap(), at(two_thirds));
    // One year, renewed after about eight months.
    let months = (at(two_thirds) - ISSUED).whole_days();
    assert!((240..=245).contains(&months), "{months} days");
}

#[test]
fn a_stored_root_ca_is_restored_and_checked() {
    let ca = RootCa::generate(ISSUED).unwrap();
    let restored = RootCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    let leaf = restored
        .issue_server("s", &["s.ns.svc".to_owned()], ISSUED)
        .unwrap();
    assert!(issued_by(&leaf.cert_pem, &ca));

    let files = Files::new();
    let ca_file = files.write("ca.pem", ca.cert_pem());
    let leaf_file = files.write("leaf.pem", &leaf.cert_pem);
    let (ok, out) = openssl_verify(&ca_file, &leaf_file, "sslserver", ISSUED);
    assert!(
        ok,
        "leaf of the restored CA verifies against the original: {out}"
    );

    let other = RootCa::generate(ISSUED).unwrap();
    assert!(matches!(
        RootCa::from_pem(ca.cert_pem(), other.key_pem()),
        Err(Error::CaKeyMismatch)
    ));
    assert!(matches!(
        RootCa::from_pem(&leaf.cert_pem, &leaf.key_pem),
        Err(Error::NotACa)
    ));
    assert!(matches!(
        RootCa::from_pem("not a cert", ca.key_pem()),
        Err(Error::ParseCaCertificate { .. })
    ));
    assert!(matches!(
        RootCa::from_pem(ca.cert_pem(), "not a key"),
        Err(Error::ParseCaKey { .. })
    ));
}

#[test]
fn trust_bundle_of_old_and_new_root_accepts_leaves_of_both() {
    let old = RootCa::generate(ISSUED).unwrap();
    let new = RootCa::generate(ISSUED + Duration::days(30)).unwrap();
    let at = ISSUED + Duration::days(40);
    let old_leaf = old.issue_server("a", &["a".to_owned()], at).unwrap();
    let new_leaf = new.issue_server("b", &["b".to_owned()], at).unwrap();
    let bundle = trust_bundle(&[old.cert_pem(), new.cert_pem()]);
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(bundle.contains(old.cert_pem().trim()) && bundle.contains(new.cert_pem().trim()));

    let files = Files::new();
    let bundle_file = files.write("bundle.pem", &bundle);
    let old_only = files.write("old.pem", old.cert_pem());
    let old_leaf_file = files.write("old-leaf.pem", &old_leaf.cert_pem);
    let new_leaf_file = files.write("new-leaf.pem", &new_leaf.cert_pem);
    let (ok, out) = openssl_verify(&bundle_file, &old_leaf_file, "sslserver", at);
    assert!(ok, "bundle accepts the old root's leaf: {out}");
    let (ok, out) = openssl_verify(&bundle_file, &new_leaf_file, "sslserver", at);
    assert!(ok, "bundle accepts the new root's leaf: {out}");
    let (ok, out) = openssl_verify(&old_only, &new_leaf_file, "sslserver", at);
    assert!(!ok, "the old root alone rejects the new root's leaf: {out}");
}

#[test]
fn debug_output_never_contains_private_keys() {
    let ca = RootCa::generate(ISSUED).unwrap();
    let leaf = ca.issue_client("app", ISSUED).unwrap();
    let body = |pem: &str| pem.lines().nth(1).unwrap().to_owned();
    let leaf_debug = format!("{leaf:?}");
    let ca_debug = format!("{ca:?}");
    assert!(!leaf_debug.contains(&body(&leaf.key_pem)), "{leaf_debug}");
    assert!(!leaf_debug.contains("PRIVATE KEY"), "{leaf_debug}");
    assert!(!ca_debug.contains(&body(ca.key_pem())), "{ca_debug}");
    assert!(leaf_debug.contains("app"), "{leaf_debug}");
}
