//! The operator root CA and the leaf certificates it signs. Everything is ECDSA P-256: small
//! keys, fast handshakes, and accepted by PostgreSQL, libpq, Patroni and pgBackRest alike.
//! May touch only rcgen and the CSPRNG; time comes from the caller.

use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

use crate::inspect::with_certificate;
use crate::{Error, Result};

/// Subject common name of every Tusk root CA. Two roots (old and new, during a rollover)
/// share it; leaves carry an authorityKeyIdentifier so verifiers still pick the right one.
pub const ROOT_CA_COMMON_NAME: &str = "tusk-root-ca";
/// How long a root CA is valid (about ten years).
pub const ROOT_CA_LIFETIME: Duration = Duration::days(3650);
/// How long a leaf certificate is valid (one year); renewed at 2/3 of that.
pub const LEAF_LIFETIME: Duration = Duration::days(365);
/// Certificates start this long before `now`, so a peer whose clock runs a little behind the
/// operator's still accepts a certificate issued a moment ago.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::minutes(5);

/// A certificate and its private key, PEM (key in PKCS#8). `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field(
                "common_name",
                &crate::common_name(&self.cert_pem).ok().flatten(),
            )
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The operator's root certificate authority: a self-signed ECDSA P-256 certificate with
/// `CA:TRUE, pathlen:0` (it signs leaves only, never intermediates) and its signing key.
pub struct RootCa {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for RootCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCa")
            .field(
                "common_name",
                &crate::common_name(&self.cert_pem).ok().flatten(),
            )
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl RootCa {
    /// A new root CA valid from `now` (less [`CLOCK_SKEW_ALLOWANCE`]) for
    /// [`ROOT_CA_LIFETIME`], CN [`ROOT_CA_COMMON_NAME`], key usages keyCertSign and cRLSign.
    pub fn generate(now: OffsetDateTime) -> Result<RootCa> {
        const WHAT: &str = "root CA";
        let key = new_key(WHAT)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(ROOT_CA_COMMON_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - CLOCK_SKEW_ALLOWANCE;
        params.not_after = now + ROOT_CA_LIFETIME;
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|source| Error::SignCertificate { what: WHAT, source })?;
        Ok(RootCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The root CA the operator stored earlier (e.g. in the `tusk-root-cacert` Secret).
    /// Rejects a certificate that is not a CA and a key that is not the certificate's, since
    /// either would make every issued leaf fail verification.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<RootCa> {
        let parse_error = |e: Error| match e {
            Error::ParseCertificate { reason } => Error::ParseCaCertificate { reason },
            other => other,
        };
        let (is_ca, public_key) = with_certificate(cert_pem, |cert| {
            (
                cert.is_ca(),
                cert.public_key().subject_public_key.data.to_vec(),
            )
        })
        .map_err(parse_error)?;
        if !is_ca {
            return Err(Error::NotACa);
        }
        let key = KeyPair::from_pem(key_pem).map_err(|source| Error::ParseCaKey { source })?;
        if key.public_key_raw() != public_key.as_slice() {
            return Err(Error::CaKeyMismatch);
        }
        // Subject and key identifier come from the certificate itself, so leaves name exactly
        // this issuer, whatever tool made it.
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| Error::ParseCaCertificate {
                reason: e.to_string(),
            })?;
        Ok(RootCa {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate, PEM: what clients and servers trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM (PKCS#8). Only the operator's own Secret may hold it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A server certificate (extendedKeyUsage serverAuth) for `common_name` whose
    /// subjectAltNames are exactly `dns_names` (entries that parse as IP addresses become IP
    /// SANs), valid [`LEAF_LIFETIME`] from `now`.
    pub fn issue_server(
        &self,
        common_name: &str,
        dns_names: &[String],
        now: OffsetDateTime,
    ) -> Result<Leaf> {
        let sans = dns_names
            .iter()
            .map(|name| {
                // `tusk local` members are reached by address (127.0.0.N): an IP SAN lets
                // clients verify them with sslmode=verify-full.
                if let Ok(ip) = name.parse::<std::net::IpAddr>() {
                    return Ok(SanType::IpAddress(ip));
                }
                name.clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|source| Error::InvalidDnsName {
                        name: name.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        // clientAuth too: the instances present this certificate when Patroni members call
        // each other's REST API, which accepts state-changing calls only with a client
        // certificate (`verify_client: optional`).
        self.issue_leaf(
            "server",
            common_name,
            sans,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            now,
        )
    }

    /// A client certificate (extendedKeyUsage clientAuth) for `common_name`, which is the
    /// database role it authenticates as (`clientcert=verify-full` / `cert` in pg_hba).
    pub fn issue_client(&self, common_name: &str, now: OffsetDateTime) -> Result<Leaf> {
        self.issue_leaf(
            "client",
            common_name,
            Vec::new(),
            &[ExtendedKeyUsagePurpose::ClientAuth],
            now,
        )
    }

    fn issue_leaf(
        &self,
        what: &'static str,
        common_name: &str,
        sans: Vec<SanType>,
        usages: &[ExtendedKeyUsagePurpose],
        now: OffsetDateTime,
    ) -> Result<Leaf> {
        let key = new_key(what)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        // ECDSA keys only sign (no key encipherment).
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages.to_vec();
        // Lets verifiers tell apart two roots with the same subject during a rollover.
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - CLOCK_SKEW_ALLOWANCE;
        params.not_after = now + LEAF_LIFETIME;
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| Error::SignCertificate { what, source })?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn new_key(what: &'static str) -> Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| Error::GenerateKey { what, source })
}

fn common_name_dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// 128 random bits, positive and without a leading zero byte (RFC 5280 §4.1.2.2): unique
/// per certificate even when two are issued for the same key and second.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes[..]);
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}
