//! Passwords of `spec.users` in local mode: one file per user under `<state>/passwords/`
//! (what the `<c>-pguser-<user>` Secret holds in Kubernetes), generated once from a CSPRNG
//! with the user's `password.type` and kept across `up`s, so applications keep working. Files
//! are created 0600 inside a 0700 directory owned by whoever runs `tusk` (never the server
//! user: PostgreSQL only ever sees SCRAM verifiers). Tusk's own service roles (PgBouncer's
//! auth role, the exporter's role) get theirs the same way under `<state>/passwords/service/`,
//! apart from user names. Touches only that directory; never logs a password.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tusk_api::model::UserSpec;
use tusk_api::types::PasswordType;
use tusk_pki::password::{generate_password, Alphabet};

use crate::error::{io, Error, Result};
use crate::state::Layout;

/// Directory holding one file per user, named after the user.
pub fn passwords_dir(layout: &Layout) -> PathBuf {
    layout.root.join("passwords")
}

fn password_file(layout: &Layout, user: &str) -> PathBuf {
    passwords_dir(layout).join(user)
}

/// The stored password of every user in `users`, generating (and storing) the missing ones.
/// A user not listed gets no entry, so the plan gives it no password (`postgres` included).
pub fn ensure_passwords(layout: &Layout, users: &[UserSpec]) -> Result<BTreeMap<String, String>> {
    let dir = passwords_dir(layout);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io("creating", &dir))?;
    let mut out = BTreeMap::new();
    for user in users {
        let name = user.name.to_string();
        let path = password_file(layout, &name);
        let password = match read_password(&path)? {
            Some(password) => password,
            None => {
                let password = generate_password(alphabet(user.password_type), &mut rand::rng());
                write_new(&path, &password)?;
                password
            }
        };
        out.insert(name, password);
    }
    Ok(out)
}

/// The stored password of Tusk's service role `role`, generated (alphanumeric: it goes into
/// PgBouncer's quoted auth_file and a password file verbatim) on first use.
pub fn ensure_service_password(layout: &Layout, role: &str) -> Result<String> {
    let dir = passwords_dir(layout).join("service");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io("creating", &dir))?;
    let path = dir.join(role);
    if let Some(password) = read_password(&path)? {
        return Ok(password);
    }
    let password = generate_password(Alphabet::AlphaNumeric, &mut rand::rng());
    write_new(&path, &password)?;
    Ok(password)
}

/// The stored password of `user`; an error when `up` has not generated it yet.
pub fn password(layout: &Layout, user: &str) -> Result<String> {
    let path = password_file(layout, user);
    read_password(&path)?.ok_or_else(|| Error::StateDir {
        path: layout.root.clone(),
        reason: format!("no password stored for user {user:?} yet (run `tusk local up` first)"),
    })
}

fn alphabet(kind: PasswordType) -> Alphabet {
    match kind {
        PasswordType::AlphaNumeric => Alphabet::AlphaNumeric,
        PasswordType::Ascii => Alphabet::Ascii,
    }
}

fn read_password(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim_end_matches('\n').to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", path)(e)),
    }
}

/// `create_new`, so two concurrent `up`s cannot both write different passwords unnoticed:
/// the loser fails instead of silently replacing a password already in use.
fn write_new(path: &Path, password: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("creating", path))?;
    file.write_all(format!("{password}\n").as_bytes())
        .map_err(io("writing", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn users(yaml: &str) -> Vec<UserSpec> {
        let manifest = format!(
            "apiVersion: tusk.rs/v1beta1\nkind: PostgresCluster\nmetadata: {{name: c}}\n\
             spec:\n  postgresVersion: 15\n  instances:\n    - name: i\n      \
             dataVolumeClaimSpec: {{accessModes: [ReadWriteOnce], \
             resources: {{requests: {{storage: 1Gi}}}}}}\n{yaml}"
        );
        tusk_api::validate_yaml(&manifest).unwrap().users
    }

    #[test]
    fn generated_once_kept_private_and_typed() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        let spec = users("  users:\n    - {name: a}\n    - {name: b, password: {type: ASCII}}\n");
        let first = ensure_passwords(&layout, &spec).unwrap();
        assert_eq!(first.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(first["a"].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(first["a"].len(), tusk_pki::password::PASSWORD_LENGTH);
        assert_ne!(first["a"], first["b"]);
        let again = ensure_passwords(&layout, &spec).unwrap();
        assert_eq!(first, again, "passwords must survive a second up");
        assert_eq!(password(&layout, "b").unwrap(), first["b"]);
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(passwords_dir(&layout)), 0o700);
        assert_eq!(mode(password_file(&layout, "a")), 0o600);
        let service = ensure_service_password(&layout, "_tusk_exporter").unwrap();
        assert_eq!(
            ensure_service_password(&layout, "_tusk_exporter").unwrap(),
            service
        );
        assert!(!first.values().any(|p| *p == service));
        assert_eq!(mode(passwords_dir(&layout).join("service")), 0o700);
        let missing = password(&layout, "nobody").unwrap_err().to_string();
        assert!(missing.contains("\"nobody\""), "{missing}");
    }
}
