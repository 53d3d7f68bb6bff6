//! Reading certificates the operator finds in Secrets: when to renew them, who issued them,
//! which names they cover, whether a key belongs to them; and the CA bundle clients trust.
//! Parsing only (x509-parser); never issues anything.

use rcgen::KeyPair;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::{Error, Result, RootCa};

/// Runs `read` on the first certificate of `cert_pem`.
pub(crate) fn with_certificate<T>(
    cert_pem: &str,
    read: impl FnOnce(&X509Certificate<'_>) -> T,
) -> Result<T> {
    let parse_error = |reason: String| Error::ParseCertificate { reason };
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| parse_error(format!("not PEM: {e}")))?;
    if pem.label != "CERTIFICATE" {
        return Err(parse_error(format!(
            "PEM block is {:?}, not CERTIFICATE",
            pem.label
        )));
    }
    let cert = pem
        .parse_x509()
        .map_err(|e| parse_error(format!("not an X.509 certificate: {e}")))?;
    Ok(read(&cert))
}

/// `(notBefore, notAfter)` of a certificate.
pub fn validity(cert_pem: &str) -> Result<(OffsetDateTime, OffsetDateTime)> {
    with_certificate(cert_pem, |cert| {
        (
            cert.validity().not_before.to_datetime(),
            cert.validity().not_after.to_datetime(),
        )
    })
}

/// The moment a certificate is due for renewal: 2/3 of the way from notBefore to notAfter.
/// Renewing with a third of the lifetime left leaves months to notice a failing renewal.
/// The controller can requeue for this moment instead of polling.
pub fn renew_at(cert_pem: &str) -> Result<OffsetDateTime> {
    let (not_before, not_after) = validity(cert_pem)?;
    Ok(not_before + (not_after - not_before) * 2 / 3)
}

/// Whether the certificate should be replaced at `now`: at or after 2/3 of its lifetime
/// (so also once expired), before its notBefore (no peer accepts it yet), or when it cannot be
/// parsed at all. Garbage in a Secret is a reason to reissue, not to fail the reconcile, so
/// this never returns `Err` for bad input; the `Result` is the published contract.
pub fn needs_renewal(cert_pem: &str, now: OffsetDateTime) -> Result<bool> {
    let Ok((not_before, _)) = validity(cert_pem) else {
        return Ok(true);
    };
    let due = renew_at(cert_pem)?;
    Ok(now < not_before || now >= due)
}

/// Whether `cert_pem` was signed by `ca`'s key under `ca`'s subject name. False for anything
/// unparseable.
pub fn issued_by(cert_pem: &str, ca: &RootCa) -> bool {
    signed_by(cert_pem, ca.cert_pem())
}

/// Whether `cert_pem` was signed by the CA certificate `ca_cert_pem` (its subject and key):
/// [`issued_by`] for a CA whose private key is gone, e.g. the previous root during a rollover.
/// False for anything unparseable.
pub fn signed_by(cert_pem: &str, ca_cert_pem: &str) -> bool {
    let signed = with_certificate(ca_cert_pem, |ca_cert| {
        with_certificate(cert_pem, |cert| {
            cert.issuer() == ca_cert.subject()
                && cert.verify_signature(Some(ca_cert.public_key())).is_ok()
        })
    });
    matches!(signed, Ok(Ok(true)))
}

/// The DNS subjectAltNames of a certificate, in certificate order.
pub fn dns_names(cert_pem: &str) -> Result<Vec<String>> {
    with_certificate(cert_pem, |cert| match cert.subject_alternative_name() {
        Ok(Some(san)) => Ok(san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
            .collect()),
        Ok(None) => Ok(Vec::new()),
        Err(e) => Err(Error::ParseCertificate {
            reason: format!("subjectAltName: {e}"),
        }),
    })?
}

/// The subject common name, if the certificate has one.
pub fn common_name(cert_pem: &str) -> Result<Option<String>> {
    with_certificate(cert_pem, |cert| {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
    })
}

/// Whether `key_pem` is the private key of `cert_pem`. A Secret edited by hand can hold a
/// pair that does not match; serving it would fail every TLS handshake.
pub fn key_matches(cert_pem: &str, key_pem: &str) -> bool {
    let Ok(key) = KeyPair::from_pem(key_pem) else {
        return false;
    };
    with_certificate(cert_pem, |cert| {
        cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
    })
    .unwrap_or(false)
}

/// One PEM bundle of the given CA certificates, in order, each once. During a root rollover
/// it holds the old and the new root, so peers accept leaves of either until all are reissued.
pub fn trust_bundle(cas: &[&str]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for ca in cas.iter().map(|ca| ca.trim()) {
        if !ca.is_empty() && !seen.contains(&ca) {
            seen.push(ca);
        }
    }
    let mut bundle = seen.join("\n");
    bundle.push('\n');
    bundle
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn unparseable_certificates_are_due_and_not_issued_by_anyone() {
        let ca = RootCa::generate(datetime!(2030-01-01 0:00 UTC)).unwrap();
        let now = datetime!(2030-01-02 0:00 UTC);
        assert!(needs_renewal("", now).unwrap());
        assert!(needs_renewal(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            now
        )
        .unwrap());
        assert!(needs_renewal(ca.key_pem(), now).unwrap());
        assert!(!issued_by("garbage", &ca));
        assert!(matches!(
            dns_names("garbage"),
            Err(Error::ParseCertificate { .. })
        ));
        assert!(!key_matches(ca.cert_pem(), "garbage"));
    }

    #[test]
    fn a_not_yet_valid_certificate_is_due() {
        let issued = datetime!(2030-01-01 0:00 UTC);
        let ca = RootCa::generate(issued).unwrap();
        let leaf = ca.issue_client("x", issued).unwrap();
        assert!(!needs_renewal(&leaf.cert_pem, issued).unwrap());
        assert!(needs_renewal(&leaf.cert_pem, datetime!(2029-12-31 0:00 UTC)).unwrap());
    }

    #[test]
    fn trust_bundle_keeps_order_and_drops_duplicates_and_blanks() {
        let bundle = trust_bundle(&["A\n", "", "B", "A"]);
        assert_eq!(bundle, "A\nB\n");
        assert_eq!(trust_bundle(&["A"]), "A\n");
    }

    #[test]
    fn key_matches_only_its_own_certificate() {
        let now = datetime!(2030-01-01 0:00 UTC);
        let ca = RootCa::generate(now).unwrap();
        let a = ca.issue_client("a", now).unwrap();
        let b = ca.issue_client("b", now).unwrap();
        assert!(key_matches(&a.cert_pem, &a.key_pem));
        assert!(!key_matches(&a.cert_pem, &b.key_pem));
        assert_eq!(common_name(&b.cert_pem).unwrap().as_deref(), Some("b"));
    }
}
