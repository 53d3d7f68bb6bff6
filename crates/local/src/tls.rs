//! The local cluster's certificates as files: one root CA per state directory, per member a
//! server certificate (SANs: the member's loopback address and `localhost`) and the
//! replication client certificate, and an admin client certificate for Patroni's REST API.
//! Touches only the state directory; making servers re-read the files is `members`' job.
//!
//! Files: `ca/ca.key` is the signing root's key; `ca/ca.crt` is the *trust bundle* every
//! client and server uses as its CA file (copied as `ca.crt` into each TLS directory). It holds
//! the signing root and, during a rollover, the previous root for as long as a leaf still
//! chains to it ([`tusk_pki::rollover_bundle`]); the signing root is the bundle entry whose key
//! is `ca.key`. Certificates are kept across `up` while they are good; a leaf is reissued when
//! its key is missing or does not match, when it is past 2/3 of its lifetime, or when it no
//! longer chains to the signing root.
//!
//! A root rollover (the CA key deleted, or the root past 2/3 of its lifetime) spans `up`
//! runs so that no peer is ever shown a certificate it does not trust yet:
//! 1. the first `up` makes the new root and puts the bundle (new + old) everywhere, leaves
//!    untouched: clients holding only the old CA file still connect;
//! 2. the next `up`, once every member's CA file holds the new root, reissues the member
//!    leaves from it;
//! 3. the `up` after that reissues the admin certificate (Patroni's REST servers reloaded
//!    their CA file with their new certificate in step 2) and, with no leaf left on the old
//!    root, drops it from the bundle.
//!
//! Custom TLS (`spec.customTLSSecret` + `spec.customReplicationTLSSecret`, [`read_custom_tls`]):
//! as with `configuration` projections, a Secret `NAME` is the directory `NAME/` beside the
//! manifest, one file per key, `items` mapping keys to `tls.crt`/`tls.key`/`ca.crt`. They are
//! checked by the operator's own rules (same CA in both, replication CN, signatures, validity)
//! before anything changes. Every member then gets the custom server and replication leaves
//! (never renewed by Tusk), and the custom `ca.crt` joins the trust bundle next to the local
//! CA, which keeps signing the admin certificate `tusk` shows Patroni's REST API. Two local
//! clusters with Secrets of one CA trust each other: that is what a streaming standby needs.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::SecretProjection;
use time::OffsetDateTime;
use tusk_api::ValidatedCluster;
use tusk_config::custom_tls::{check_custom_tls, CustomSecret, CustomTlsSecrets};
use tusk_config::paths::{TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE};
use tusk_pki::{Leaf, RootCa};

use crate::error::{io, Error, Result};
use crate::state::{Layout, MemberPaths, State};

/// Common name of the client certificate `tusk` presents to Patroni.
pub const ADMIN_COMMON_NAME: &str = "tusk-local-admin";
/// Where the custom Secrets are named in the spec (error paths).
const CUSTOM_SERVER_FIELD: &str = "spec.customTLSSecret";
const CUSTOM_REPLICATION_FIELD: &str = "spec.customReplicationTLSSecret";
/// File of the signing root's private key, in the CA directory.
const CA_KEY_FILE: &str = "ca.key";

/// The root that signs new certificates and the bundle every peer trusts.
pub struct Authority {
    pub ca: RootCa,
    /// Contents of `ca/ca.crt`: the signing root first, then any previous root still in use;
    /// plus the custom CA when there is one ([`use_custom_tls`]).
    pub bundle_pem: String,
    /// The members' leaves when the spec brings its own (then no member leaf is issued).
    pub custom: Option<CustomTls>,
}

/// The leaves of `spec.customTLSSecret` / `spec.customReplicationTLSSecret` and their CA.
#[derive(Clone, Debug)]
pub struct CustomTls {
    pub server: Leaf,
    pub replication: Leaf,
    pub ca_pem: String,
}

/// Loads the state directory's CA, creating it on first use and rolling it over when its key
/// is gone or it is past 2/3 of its lifetime; reissues the admin certificate when due; drops
/// from the bundle every previous root no leaf uses any more. `previous` is the recorded state
/// (its members' leaves count as in use).
pub fn ensure_ca(
    layout: &Layout,
    previous: Option<&State>,
    progress: &mut dyn FnMut(&str),
) -> Result<Authority> {
    let now = OffsetDateTime::now_utc();
    let dir = layout.ca_dir();
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let bundle_file = dir.join(TLS_CA_FILE);
    let key_file = dir.join(CA_KEY_FILE);
    let old_bundle = read_optional(&bundle_file)?.unwrap_or_default();
    let ca = match signing_root(&old_bundle, read_optional(&key_file)?.as_deref(), now)? {
        Some(ca) => ca,
        None => {
            let ca = RootCa::generate(now)?;
            if !old_bundle.trim().is_empty() {
                progress(
                    "the local CA key is missing or the CA is due for renewal: made a new root CA; \
                     the old one stays trusted until every certificate is reissued (by the next `up`s)",
                );
            }
            // The bundle (naming the new root) first: should the key write not happen, the
            // next `up` still finds the previous root trusted and just makes another root.
            let bundle = tusk_pki::trust_bundle(&[ca.cert_pem(), &old_bundle]);
            write_file(&bundle_file, &bundle, 0o644)?;
            write_secret(&key_file, ca.key_pem())?;
            ca
        }
    };
    let current_bundle = read_optional(&bundle_file)?.unwrap_or_default();
    let member_paths: Vec<MemberPaths> = previous
        .map(|s| s.members.iter().map(|m| layout.member(&m.name)).collect())
        .unwrap_or_default();
    ensure_admin_cert(layout, &ca, &current_bundle, &member_paths, now)?;

    let mut leaves = vec![read_optional(&layout.admin_tls_dir().join(TLS_CERT_FILE))?];
    for paths in &member_paths {
        for dir in [paths.server_tls_dir(), paths.replication_tls_dir()] {
            leaves.push(read_optional(&dir.join(TLS_CERT_FILE))?);
        }
    }
    let leaves: Vec<&str> = leaves.iter().flatten().map(String::as_str).collect();
    let bundle_pem = tusk_pki::rollover_bundle(ca.cert_pem(), &current_bundle, &leaves);
    if bundle_pem != current_bundle {
        if tusk_pki::bundle_certificates(&current_bundle).len() > 1 {
            progress(
                "every certificate is issued by the new root CA: the old one is no longer trusted",
            );
        }
        write_file(&bundle_file, &bundle_pem, 0o644)?;
    }
    write_trust(&layout.admin_tls_dir(), &bundle_pem)?;
    Ok(Authority {
        ca,
        bundle_pem,
        custom: None,
    })
}

/// The bundle entry whose key is `key_pem`, as a [`RootCa`], unless there is none or it is due
/// for renewal (then the caller makes a new root).
fn signing_root(
    bundle: &str,
    key_pem: Option<&str>,
    now: OffsetDateTime,
) -> Result<Option<RootCa>> {
    let Some(key_pem) = key_pem else {
        return Ok(None);
    };
    let Some(cert) = tusk_pki::bundle_certificates(bundle)
        .into_iter()
        .find(|cert| tusk_pki::key_matches(cert, key_pem))
    else {
        return Ok(None);
    };
    if tusk_pki::needs_renewal(&cert, now)? {
        return Ok(None);
    }
    Ok(Some(RootCa::from_pem(&cert, key_pem)?))
}

/// The admin client certificate: issued when missing, broken or due; moved to a new root only
/// once every member's server certificate is on that root. Patroni's REST server re-reads its
/// CA file only together with a new server certificate, so before that it would refuse an
/// admin certificate from the new root.
fn ensure_admin_cert(
    layout: &Layout,
    ca: &RootCa,
    bundle: &str,
    members: &[MemberPaths],
    now: OffsetDateTime,
) -> Result<()> {
    let dir = layout.admin_tls_dir();
    let members_moved = || {
        members.iter().all(|paths| {
            read_optional(&paths.server_tls_dir().join(TLS_CERT_FILE))
                .ok()
                .flatten()
                .is_some_and(|cert| tusk_pki::issued_by(&cert, ca))
        })
    };
    let reissue = match leaf_state(&dir, ca, bundle, now)? {
        LeafState::Good => false,
        LeafState::Broken => true,
        LeafState::OtherRoot => members_moved(),
    };
    if reissue {
        let admin = ca.issue_client(ADMIN_COMMON_NAME, now)?;
        write_tls_dir(&dir, &admin, bundle)?;
    }
    Ok(())
}

/// Where a member's certificates live and whom they name.
pub struct MemberTls<'a> {
    pub paths: &'a MemberPaths,
    pub member: &'a str,
    pub host: &'a str,
}

/// Whether the member's CA files already hold the signing root (so its servers, once reloaded,
/// trust leaves of that root). A member without files yet counts as trusting: it is not
/// running and gets the bundle before it starts.
pub fn trusts_signing_root(paths: &MemberPaths, authority: &Authority) -> Result<bool> {
    for dir in [paths.server_tls_dir(), paths.replication_tls_dir()] {
        if let Some(bundle) = read_optional(&dir.join(TLS_CA_FILE))? {
            let signing = authority.ca.cert_pem().trim();
            if !tusk_pki::bundle_certificates(&bundle)
                .iter()
                .any(|cert| cert.trim() == signing)
            {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Writes the trust bundle as the member's CA files. Returns whether a file changed.
pub fn write_member_trust(paths: &MemberPaths, authority: &Authority) -> Result<bool> {
    let server = write_trust(&paths.server_tls_dir(), &authority.bundle_pem)?;
    let replication = write_trust(&paths.replication_tls_dir(), &authority.bundle_pem)?;
    Ok(server || replication)
}

/// Issues the member's server and replication certificates when missing, broken, due for
/// renewal, or (with `move_to_signing_root`) issued by a previous root. Returns whether a
/// certificate changed, i.e. whether the member's servers must re-read their files.
pub fn ensure_member_certs(
    authority: &Authority,
    member: &MemberTls,
    move_to_signing_root: bool,
) -> Result<bool> {
    let now = OffsetDateTime::now_utc();
    let ca = &authority.ca;
    let due = |dir: &Path| -> Result<bool> {
        Ok(match leaf_state(dir, ca, &authority.bundle_pem, now)? {
            LeafState::Good => false,
            LeafState::Broken => true,
            LeafState::OtherRoot => move_to_signing_root,
        })
    };
    let server_dir = member.paths.server_tls_dir();
    let replication_dir = member.paths.replication_tls_dir();
    if let Some(custom) = &authority.custom {
        let server = write_custom_leaf(&server_dir, &custom.server, &authority.bundle_pem)?;
        let replication =
            write_custom_leaf(&replication_dir, &custom.replication, &authority.bundle_pem)?;
        return Ok(server || replication);
    }
    let mut changed = false;
    if due(&server_dir)? {
        let names = [member.host.to_owned(), "localhost".to_owned()];
        let leaf = ca.issue_server(member.member, &names, now)?;
        write_tls_dir(&server_dir, &leaf, &authority.bundle_pem)?;
        changed = true;
    }
    if due(&replication_dir)? {
        let leaf = ca.issue_client(tusk_api::naming::REPLICATION_USER, now)?;
        write_tls_dir(&replication_dir, &leaf, &authority.bundle_pem)?;
        changed = true;
    }
    Ok(changed)
}

/// A server certificate for a process beside the members (PgBouncer): `common_name`, SANs
/// `host` and `localhost`, issued when missing, broken, due or not issued by `ca`. Its
/// `ca.crt` is `ca`'s certificate alone. Returns whether it was (re)issued.
pub fn ensure_server_cert(ca: &RootCa, dir: &Path, common_name: &str, host: &str) -> Result<bool> {
    let now = OffsetDateTime::now_utc();
    if matches!(leaf_state(dir, ca, ca.cert_pem(), now)?, LeafState::Good) {
        return Ok(false);
    }
    let names = [host.to_owned(), "localhost".to_owned()];
    let leaf = ca.issue_server(common_name, &names, now)?;
    write_tls_dir(dir, &leaf, ca.cert_pem())?;
    Ok(true)
}

/// Reads and checks the custom TLS Secrets of the spec from directories beside `manifest`;
/// `None` when the spec has none. Errors name the field; warnings go to `progress`.
pub fn read_custom_tls(
    cluster: &ValidatedCluster,
    manifest: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Option<CustomTls>> {
    // Validation guarantees both or neither.
    let (Some(server), Some(replication)) =
        (&cluster.tls.custom_server, &cluster.tls.custom_replication)
    else {
        return Ok(None);
    };
    let manifest_dir = manifest.parent().unwrap_or(Path::new("."));
    let read = |field: &str, projection: &SecretProjection| -> Result<CustomSecret> {
        let dir = manifest_dir.join(&projection.name);
        if !dir.is_dir() {
            return Err(Error::Unsupported {
                field: format!("{field}.name"),
                reason: format!(
                    "no directory {} (locally a Secret is a directory beside the manifest \
                     with one file per key: tls.crt, tls.key, ca.crt)",
                    dir.display()
                ),
            });
        }
        let mut data = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).map_err(io("reading", &dir))? {
            let path = entry.map_err(io("reading", &dir))?.path();
            if path.is_file() {
                let key = path.file_name().unwrap_or_default().to_string_lossy();
                let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
                data.insert(key.into_owned(), bytes);
            }
        }
        Ok(CustomSecret {
            projection: projection.clone(),
            data: Some(data),
        })
    };
    let secrets = CustomTlsSecrets {
        server: read(CUSTOM_SERVER_FIELD, server)?,
        replication: read(CUSTOM_REPLICATION_FIELD, replication)?,
    };
    let findings = check_custom_tls(cluster, &secrets, OffsetDateTime::now_utc());
    if !findings.errors.is_empty() {
        return Err(Error::InvalidManifest {
            path: manifest.into(),
            errors: findings
                .errors
                .iter()
                .map(|e| format!("  {e}"))
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    for warning in &findings.warnings {
        progress(&format!("warning: {warning}"));
    }
    // The check made sure each file is there and usable; this maps them by `items`.
    let file = |secret: &CustomSecret, field: &str, target: &str| -> Result<String> {
        let dir = manifest_dir.join(&secret.projection.name);
        let items = secret.projection.items.as_deref();
        let files = crate::backup::projections::selected_files(&dir, items, false, field)?;
        let (_, path) = files
            .iter()
            .find(|(name, _)| name == target)
            .ok_or_else(|| Error::Unsupported {
                field: format!("{field}.items"),
                reason: format!("nothing is projected as {target}"),
            })?;
        std::fs::read_to_string(path).map_err(io("reading", path))
    };
    let leaf = |secret: &CustomSecret, field: &str| -> Result<Leaf> {
        Ok(Leaf {
            cert_pem: file(secret, field, TLS_CERT_FILE)?,
            key_pem: file(secret, field, TLS_KEY_FILE)?,
        })
    };
    Ok(Some(CustomTls {
        server: leaf(&secrets.server, CUSTOM_SERVER_FIELD)?,
        replication: leaf(&secrets.replication, CUSTOM_REPLICATION_FIELD)?,
        ca_pem: file(&secrets.server, CUSTOM_SERVER_FIELD, TLS_CA_FILE)?,
    }))
}

/// Makes `authority` hand out the custom leaves and trust their CA, and writes the widened
/// bundle as the CA file of `tusk`'s own client (members get it from `members::refresh_tls`).
pub fn use_custom_tls(
    layout: &Layout,
    authority: &mut Authority,
    custom: Option<CustomTls>,
) -> Result<()> {
    let Some(custom) = custom else {
        return Ok(());
    };
    authority.bundle_pem = tusk_pki::trust_bundle(&[&authority.bundle_pem, &custom.ca_pem]);
    authority.custom = Some(custom);
    write_trust(&layout.admin_tls_dir(), &authority.bundle_pem)?;
    Ok(())
}

/// Writes a custom leaf into `dir` when it differs from what is there. Returns whether it did.
fn write_custom_leaf(dir: &Path, leaf: &Leaf, bundle: &str) -> Result<bool> {
    let same = read_optional(&dir.join(TLS_CERT_FILE))?.as_deref() == Some(&leaf.cert_pem)
        && read_optional(&dir.join(TLS_KEY_FILE))?.as_deref() == Some(&leaf.key_pem);
    if same {
        return write_trust(dir, bundle);
    }
    write_tls_dir(dir, leaf, bundle)?;
    Ok(true)
}

/// Writes a file only its owner may read (passwords, keys).
pub fn write_secret(path: &Path, contents: &str) -> Result<()> {
    write_file(path, contents, 0o600)
}

/// What a TLS directory's leaf needs.
enum LeafState {
    /// Issued by the signing root, key matches, not due: keep.
    Good,
    /// Missing, unreadable, key missing or not its own, due for renewal, or chaining to no
    /// root in the bundle: reissue now.
    Broken,
    /// Good, but issued by a previous root still in the bundle: reissue when the rollover
    /// allows.
    OtherRoot,
}

fn leaf_state(dir: &Path, ca: &RootCa, bundle: &str, now: OffsetDateTime) -> Result<LeafState> {
    let (Some(cert), Some(key)) = (
        read_optional(&dir.join(TLS_CERT_FILE))?,
        read_optional(&dir.join(TLS_KEY_FILE))?,
    ) else {
        return Ok(LeafState::Broken);
    };
    if !tusk_pki::key_matches(&cert, &key) || tusk_pki::needs_renewal(&cert, now)? {
        return Ok(LeafState::Broken);
    }
    if tusk_pki::issued_by(&cert, ca) {
        return Ok(LeafState::Good);
    }
    let trusted = tusk_pki::bundle_certificates(bundle)
        .iter()
        .any(|root| tusk_pki::signed_by(&cert, root));
    Ok(if trusted {
        LeafState::OtherRoot
    } else {
        LeafState::Broken
    })
}

/// `tls.crt`, `tls.key` (0600: PostgreSQL and libpq refuse group/world-readable keys) and
/// `ca.crt`, the layout of a Kubernetes TLS Secret.
fn write_tls_dir(dir: &Path, leaf: &Leaf, bundle: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    write_secret(&dir.join(TLS_KEY_FILE), &leaf.key_pem)?;
    write_file(&dir.join(TLS_CERT_FILE), &leaf.cert_pem, 0o644)?;
    write_trust(dir, bundle)?;
    Ok(())
}

/// A copy of the member's server trust bundle named after its content (`ca-<sha256>.crt`, in
/// the server TLS directory), for Patroni's REST API; older copies are removed. `None` before
/// the bundle exists. Patroni 3.0 rebuilds its REST server's TLS context only when a TLS
/// option (a file *name*) or its own certificate's serial changes, so a new bundle under the
/// same name would not be trusted on reload: during a root rollover a peer already presenting
/// a leaf of the new root would be refused. A new name for every new bundle makes the reload
/// that follows a changed patroni.yaml pick it up.
pub fn rest_api_trust(paths: &MemberPaths) -> Result<Option<std::path::PathBuf>> {
    use sha2::Digest;
    let dir = paths.server_tls_dir();
    let Some(bundle) = read_optional(&dir.join(TLS_CA_FILE))? else {
        return Ok(None);
    };
    let digest = sha2::Sha256::digest(bundle.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("{REST_CA_PREFIX}{hex}.crt");
    let path = dir.join(&name);
    if read_optional(&path)?.as_deref() != Some(bundle.as_str()) {
        write_file(&path, &bundle, 0o644)?;
    }
    for entry in std::fs::read_dir(&dir).map_err(io("reading", &dir))? {
        let entry = entry.map_err(io("reading", &dir))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(REST_CA_PREFIX) && file.ends_with(".crt") && file != name {
            std::fs::remove_file(entry.path()).map_err(io("removing", &entry.path()))?;
        }
    }
    Ok(Some(path))
}

const REST_CA_PREFIX: &str = "ca-";

/// Writes `ca.crt` in `dir` when it differs from `bundle`. Returns whether it changed.
fn write_trust(dir: &Path, bundle: &str) -> Result<bool> {
    let path = dir.join(TLS_CA_FILE);
    if read_optional(&path)?.as_deref() == Some(bundle) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    write_file(&path, bundle, 0o644)?;
    Ok(true)
}

/// The file's text, `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", path)(e)),
    }
}

/// Writes through a temporary file and a rename, so a server reloading at any moment reads
/// either the old or the new file, never half of one.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = std::path::PathBuf::from(temporary);
    // `mode` applies only to a file being created: never reuse one a crash left behind.
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io("writing", &temporary))?;
    file.write_all(contents.as_bytes())
        .map_err(io("writing", &temporary))?;
    std::fs::rename(&temporary, path).map_err(io("renaming", &temporary))
}

/// Makes ring rustls's process-wide provider. Feature unification can enable both of
/// rustls's providers (a dev-dependency elsewhere in the workspace pulls in aws-lc-rs), and
/// then libraries that rely on the default one (ureq here, kube's client) refuse to guess.
/// Idempotent: a provider installed earlier stays.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
