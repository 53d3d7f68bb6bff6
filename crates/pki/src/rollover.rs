//! Root CA rollover: which roots a trust bundle must hold while leaves move from an old root to
//! a new one. A bundle is the memory of a rollover: the previous root's private key may be gone
//! (that is usually why there is a new root), but its certificate stays in the bundle peers
//! trust for exactly as long as some leaf still chains to it.
//!
//! Pure functions over PEM text, shared by the operator (the `ca.crt` it publishes per cluster)
//! and `tusk local` (the state directory's `ca/ca.crt`).

use crate::inspect::{signed_by, trust_bundle, with_certificate};

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// The certificates of a PEM bundle, each as its own PEM block ending in a newline, in order.
/// Blocks that do not parse as X.509 certificates (and any text between blocks) are left out:
/// a bundle is rebuilt from what verifies, never from garbage someone pasted into it.
pub fn bundle_certificates(bundle_pem: &str) -> Vec<String> {
    let mut certificates = Vec::new();
    let mut rest = bundle_pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(length) = rest[start..].find(END) else {
            break;
        };
        let block = format!("{}\n", &rest[start..start + length + END.len()]);
        if with_certificate(&block, |_| ()).is_ok() {
            certificates.push(block);
        }
        rest = &rest[start + length + END.len()..];
    }
    certificates
}

/// The trust bundle for the next step of a rollover: `current_ca_pem` (the root that signs new
/// leaves) first, then every root of `previous_bundle` that signed at least one of `leaves`
/// (the leaves in use now). A root no leaf chains to any more leaves the bundle, so once every
/// leaf has been reissued the bundle is the current root alone.
pub fn rollover_bundle(current_ca_pem: &str, previous_bundle: &str, leaves: &[&str]) -> String {
    let still_used: Vec<String> = bundle_certificates(previous_bundle)
        .into_iter()
        .filter(|root| leaves.iter().any(|leaf| signed_by(leaf, root)))
        .collect();
    let mut roots = vec![current_ca_pem];
    roots.extend(still_used.iter().map(String::as_str));
    trust_bundle(&roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RootCa;
    use time::macros::datetime;

    /// Runs the real `openssl verify -CAfile bundle leaf`.
    fn openssl_verifies(bundle: &str, leaf: &str) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let (ca_file, leaf_file) = (dir.path().join("ca.crt"), dir.path().join("leaf.crt"));
        std::fs::write(&ca_file, bundle).unwrap();
        std::fs::write(&leaf_file, leaf).unwrap();
        std::process::Command::new("openssl")
            .args(["verify", "-attime", "1900000000", "-CAfile"])
            .arg(&ca_file)
            .arg(&leaf_file)
            .output()
            .expect("run openssl (apt-get install openssl)")
            .status
            .success()
    }

    #[test]
    fn bundle_certificates_splits_and_skips_garbage() {
        let now = datetime!(2030-01-01 0:00 UTC);
        let a = RootCa::generate(now).unwrap();
        let b = RootCa::generate(now).unwrap();
        let bundle = format!(
            "junk\n{}\n{BEGIN}\nAAAA\n{END}\n{}",
            a.cert_pem(),
            b.cert_pem().trim_end()
        );
        let certs = bundle_certificates(&bundle);
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].trim(), a.cert_pem().trim());
        assert_eq!(certs[1].trim(), b.cert_pem().trim());
        assert!(bundle_certificates("").is_empty());
    }

    #[test]
    fn old_root_stays_while_a_leaf_uses_it_and_leaves_after() {
        let now = datetime!(2030-03-17 0:00 UTC);
        let old = RootCa::generate(now).unwrap();
        let new = RootCa::generate(now).unwrap();
        let old_leaf = old.issue_client("replicator", now).unwrap().cert_pem;
        let new_leaf = new.issue_client("replicator", now).unwrap().cert_pem;

        // Rollover: the published bundle was the old root alone; a leaf still uses it.
        let during = rollover_bundle(new.cert_pem(), old.cert_pem(), &[&old_leaf]);
        assert_eq!(bundle_certificates(&during).len(), 2);
        assert!(during.starts_with(new.cert_pem().trim()));
        // Both generations verify against the rollover bundle (same subject, different keys).
        assert!(openssl_verifies(&during, &old_leaf));
        assert!(openssl_verifies(&during, &new_leaf));
        assert!(!openssl_verifies(new.cert_pem(), &old_leaf));

        // Still one old leaf among new ones: the old root stays.
        let mixed = rollover_bundle(new.cert_pem(), &during, &[&new_leaf, &old_leaf]);
        assert_eq!(mixed, during);

        // Every leaf reissued: only the new root remains.
        let after = rollover_bundle(new.cert_pem(), &during, &[&new_leaf]);
        assert_eq!(bundle_certificates(&after), vec![new.cert_pem().to_owned()]);
        assert!(!openssl_verifies(&after, &old_leaf));
        assert!(openssl_verifies(&after, &new_leaf));

        // No rollover at all: the bundle is the current root, stable.
        assert_eq!(rollover_bundle(new.cert_pem(), &after, &[&new_leaf]), after);
    }
}
