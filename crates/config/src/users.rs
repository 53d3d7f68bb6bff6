//! Users and databases as SQL state: the PURE plan from a [`ValidatedCluster`] and what the
//! server currently has (`pg_roles`, `pg_authid.rolpassword`, `pg_database` and ACLs) to the
//! ordered SQL statements that make the server match `spec.users`. The operator and `tusk
//! local` read the actual state and execute the plan themselves; this module does no I/O
//! (its only outside input is the CSPRNG for SCRAM salts).
//!
//! Decisions (the PGO family's behaviour unless said otherwise):
//! - Every user is a role with `LOGIN` and its `options` applied. Attributes the options do
//!   not mention converge to PostgreSQL's defaults (`NOSUPERUSER NOCREATEDB NOCREATEROLE
//!   INHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT -1`): the spec is the truth, so
//!   deleting `SUPERUSER` from `options` revokes it (PGO keeps it until `NOSUPERUSER` is
//!   written). Only attributes that differ are altered, so an unchanged state plans nothing.
//! - Passwords travel as SCRAM-SHA-256 verifiers computed here, never in clear. A password is
//!   reset only when the stored verifier does not verify the desired password (recomputed
//!   with the stored salt), so a second plan over an unchanged state is empty without keeping
//!   any revision anywhere.
//! - `postgres` (the superuser) is never altered except for its password: it gets one when it
//!   is listed in `spec.users` and loses it (`PASSWORD NULL`) when it is not, so unlisting it
//!   revokes the credential. Its `options` are ignored: stripping attributes from the
//!   superuser would break Patroni.
//! - Databases are created owned by the superuser that runs the plan, not by a user: several
//!   users may list the same database as equals, and removing or renaming a user never leaves
//!   a database owned by a role that no longer matters. Each listed user gets `ALL` on the
//!   database and `ALL` (USAGE, CREATE) on its `public` schema, which PostgreSQL 15 no longer
//!   opens to `PUBLIC`.
//! - Roles, databases and grants that leave the spec are NOT dropped or revoked: dropping
//!   would destroy data (objects the role owns, the database's contents) on what may be a
//!   typo; the user drops them by hand (`DROP OWNED`, `DROP ROLE`, `DROP DATABASE`).
//! - Reserved role names (`pg_*`, `_tusk*`) are rejected by validation before this runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tusk_api::model::UserSpec;
use tusk_api::naming::SUPERUSER;
use tusk_api::ValidatedCluster;

/// PostgreSQL's default and the RFC 7677 recommendation.
pub const SCRAM_ITERATIONS: u32 = 4096;
const SCRAM_SALT_LEN: usize = 16;

/// `"name"` with embedded quotes doubled: always quoted, so case and any character survive
/// and no name can be mistaken for a keyword.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with quotes doubled; text holding a backslash becomes `E'...'` with backslashes
/// doubled, which reads the same whatever `standard_conforming_strings` says (PostgreSQL's own
/// `quote_literal` does this).
pub fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if quoted.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// A SCRAM-SHA-256 password verifier as PostgreSQL stores it in `pg_authid.rolpassword`:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5802 / RFC 7677).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl ScramVerifier {
    /// A verifier with a fresh random 16-byte salt.
    pub fn new(password: &str) -> Self {
        let salt: [u8; SCRAM_SALT_LEN] = rand::random();
        Self::with_salt(password, &salt, SCRAM_ITERATIONS)
    }

    /// The verifier for a given salt. The password is used as its UTF-8 bytes: for the ASCII
    /// passwords Tusk generates, SASLprep (which libpq applies) is the identity.
    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// Parses PostgreSQL's text form; `None` for anything else (an MD5 hash, garbage).
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (iterations_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iterations_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Self {
            iterations: iterations.parse().ok()?,
            salt: BASE64.decode(salt).ok()?,
            stored_key: BASE64.decode(stored).ok()?.try_into().ok()?,
            server_key: BASE64.decode(server).ok()?.try_into().ok()?,
        })
    }

    /// Whether `password` is the one this verifier was made from.
    pub fn verifies(&self, password: &str) -> bool {
        Self::with_salt(password, &self.salt, self.iterations) == *self
    }
}

impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }
}

/// Keys are secret material (whoever holds them can impersonate the server): never printed.
impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScramVerifier {{ iterations: {}, .. }}", self.iterations)
    }
}

/// `Hi(password, salt, i)` of RFC 5802: PBKDF2 with HMAC-SHA-256 and one 32-byte block.
fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2::<Hmac<Sha256>>(password.as_bytes(), salt, iterations, &mut out)
        .expect("HMAC accepts keys of any length");
    out
}

/// HMAC-SHA-256, public for tests that replay a SCRAM exchange.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Role attributes as `pg_roles` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleAttributes {
    pub superuser: bool,
    pub createdb: bool,
    pub createrole: bool,
    pub login: bool,
    pub replication: bool,
    pub bypassrls: bool,
    pub inherit: bool,
    /// `-1` = no limit.
    pub connection_limit: i32,
}

impl RoleAttributes {
    /// A spec user before its `options`: PostgreSQL's `CREATE ROLE` defaults plus `LOGIN`.
    pub const USER_DEFAULT: RoleAttributes = RoleAttributes {
        superuser: false,
        createdb: false,
        createrole: false,
        login: true,
        replication: false,
        bypassrls: false,
        inherit: true,
        connection_limit: -1,
    };

    /// [`Self::USER_DEFAULT`] with validated `options` applied left to right (the last word
    /// for an attribute wins).
    pub fn from_options(options: &str) -> Self {
        let mut attrs = Self::USER_DEFAULT;
        let words: Vec<String> = options
            .split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect();
        let mut i = 0;
        while i < words.len() {
            let (flag, value) = match words[i].strip_prefix("NO") {
                // `NOINHERIT` etc.; but not a bare word that merely starts with NO.
                Some(rest) if Self::flag(&mut attrs, rest).is_some() => (rest, false),
                _ => (words[i].as_str(), true),
            };
            if let Some(slot) = Self::flag(&mut attrs, flag) {
                *slot = value;
            } else if words[i] == "CONNECTION" {
                // Validation guarantees `CONNECTION LIMIT <int >= -1>`.
                if let Some(limit) = words.get(i + 2).and_then(|n| n.parse().ok()) {
                    attrs.connection_limit = limit;
                }
                i += 2;
            }
            i += 1;
        }
        attrs
    }

    fn flag<'a>(attrs: &'a mut Self, word: &str) -> Option<&'a mut bool> {
        Some(match word {
            "SUPERUSER" => &mut attrs.superuser,
            "CREATEDB" => &mut attrs.createdb,
            "CREATEROLE" => &mut attrs.createrole,
            "LOGIN" => &mut attrs.login,
            "REPLICATION" => &mut attrs.replication,
            "BYPASSRLS" => &mut attrs.bypassrls,
            "INHERIT" => &mut attrs.inherit,
            _ => return None,
        })
    }

    /// `CREATE/ALTER ROLE` keywords for every attribute, or (with `than`) only for those
    /// that differ from `than`.
    fn keywords(&self, than: Option<&RoleAttributes>) -> Vec<String> {
        let flags = [
            ("SUPERUSER", self.superuser, than.map(|t| t.superuser)),
            ("CREATEDB", self.createdb, than.map(|t| t.createdb)),
            ("CREATEROLE", self.createrole, than.map(|t| t.createrole)),
            ("INHERIT", self.inherit, than.map(|t| t.inherit)),
            ("LOGIN", self.login, than.map(|t| t.login)),
            ("REPLICATION", self.replication, than.map(|t| t.replication)),
            ("BYPASSRLS", self.bypassrls, than.map(|t| t.bypassrls)),
        ];
        let mut out: Vec<String> = flags
            .into_iter()
            .filter(|(_, want, have)| Some(*want) != *have)
            .map(|(name, want, _)| {
                if want {
                    name.into()
                } else {
                    format!("NO{name}")
                }
            })
            .collect();
        if than.map(|t| t.connection_limit) != Some(self.connection_limit) {
            out.push(format!("CONNECTION LIMIT {}", self.connection_limit));
        }
        out
    }
}

/// A role as the server has it.
#[derive(Clone, PartialEq, Eq)]
pub struct ActualRole {
    pub name: String,
    pub attributes: RoleAttributes,
    /// `pg_authid.rolpassword`: a SCRAM verifier, an MD5 hash, or `None`.
    pub stored_password: Option<String>,
}

impl ActualRole {
    pub fn has_password(&self) -> bool {
        self.stored_password.is_some()
    }
}

impl fmt::Debug for ActualRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActualRole")
            .field("name", &self.name)
            .field("attributes", &self.attributes)
            .field("has_password", &self.has_password())
            .finish()
    }
}

/// A database as the server has it, with the grants the plan manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActualDatabase {
    pub name: String,
    pub owner: String,
    /// Roles holding every database privilege (CREATE, CONNECT, TEMPORARY) by ACL.
    pub all_privileges: BTreeSet<String>,
    /// Roles holding USAGE and CREATE on its `public` schema; `None` when the database has no
    /// `public` schema (dropped by its owner), which the plan then leaves alone.
    pub public_schema_privileges: Option<BTreeSet<String>>,
}

/// One SQL statement of a plan, run in `database` (`None` = the maintenance database
/// `postgres`). `Display` and `Debug` show the description; SQL carrying a verifier is never
/// printed by them.
#[derive(Clone, PartialEq, Eq)]
pub struct Statement {
    pub database: Option<String>,
    pub description: String,
    sql: String,
    carries_secret: bool,
}

impl Statement {
    fn new(description: String, sql: String) -> Self {
        Self {
            database: None,
            description,
            sql,
            carries_secret: false,
        }
    }

    fn secret(description: String, sql: String) -> Self {
        Self {
            carries_secret: true,
            ..Self::new(description, sql)
        }
    }

    fn in_database(mut self, database: &str) -> Self {
        self.database = Some(database.to_owned());
        self
    }

    /// The SQL text to execute. May contain a password verifier: do not log it.
    pub fn sql(&self) -> &str {
        &self.sql
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

impl fmt::Debug for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sql = if self.carries_secret {
            "<redacted: carries a password verifier>"
        } else {
            &self.sql
        };
        f.debug_struct("Statement")
            .field("database", &self.database)
            .field("description", &self.description)
            .field("sql", &sql)
            .finish()
    }
}

/// The statements that make the server's users and databases match `cluster.users`, in the
/// order they must run: roles, then databases, then grants. `passwords` maps user names to
/// their clear passwords; a user without an entry keeps whatever password it has. Empty when
/// the server already matches.
pub fn plan(
    cluster: &ValidatedCluster,
    actual_roles: &[ActualRole],
    actual_databases: &[ActualDatabase],
    passwords: &BTreeMap<String, String>,
) -> Vec<Statement> {
    let roles: BTreeMap<&str, &ActualRole> =
        actual_roles.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut out = Vec::new();
    for user in &cluster.users {
        let name = user.name.as_str();
        let password = passwords.get(name).map(String::as_str);
        out.extend(role_statements(user, roles.get(name).copied(), password));
    }
    let superuser_listed = cluster.users.iter().any(|u| u.name.as_str() == SUPERUSER);
    if let Some(superuser) = roles.get(SUPERUSER) {
        if !superuser_listed && superuser.has_password() {
            out.push(Statement::new(
                format!("remove the password of {SUPERUSER} (not in spec.users)"),
                format!("ALTER ROLE {} PASSWORD NULL", quote_ident(SUPERUSER)),
            ));
        }
    }
    out.extend(database_statements(&cluster.users, actual_databases));
    out
}

fn role_statements(
    user: &UserSpec,
    actual: Option<&ActualRole>,
    password: Option<&str>,
) -> Vec<Statement> {
    let name = user.name.as_str();
    let role = quote_ident(name);
    let is_superuser = name == SUPERUSER;
    let desired = RoleAttributes::from_options(&user.options);
    let Some(actual) = actual else {
        // The superuser always exists, so a missing `postgres` means the server is not ours.
        let attrs = desired.keywords(None).join(" ");
        return vec![match password {
            Some(pw) => Statement::secret(
                format!("create role {name} ({attrs}) with a password"),
                format!(
                    "CREATE ROLE {role} WITH {attrs} PASSWORD {}",
                    quote_literal(&ScramVerifier::new(pw).to_string())
                ),
            ),
            None => Statement::new(
                format!("create role {name} ({attrs})"),
                format!("CREATE ROLE {role} WITH {attrs}"),
            ),
        }];
    };
    let mut out = Vec::new();
    let changed = desired.keywords(Some(&actual.attributes));
    if !is_superuser && !changed.is_empty() {
        let changed = changed.join(" ");
        out.push(Statement::new(
            format!("alter role {name}: {changed}"),
            format!("ALTER ROLE {role} WITH {changed}"),
        ));
    }
    if let Some(pw) = password {
        let current = actual.stored_password.as_deref();
        let up_to_date = current
            .and_then(ScramVerifier::parse)
            .is_some_and(|v| v.verifies(pw));
        if !up_to_date {
            out.push(Statement::secret(
                format!("set the password of role {name}"),
                format!(
                    "ALTER ROLE {role} PASSWORD {}",
                    quote_literal(&ScramVerifier::new(pw).to_string())
                ),
            ));
        }
    }
    out
}

fn database_statements(users: &[UserSpec], actual: &[ActualDatabase]) -> Vec<Statement> {
    // Databases in first-listed order, each with its users in spec order.
    let mut desired: Vec<(&str, Vec<&str>)> = Vec::new();
    for user in users {
        for db in &user.databases {
            match desired.iter_mut().find(|(name, _)| name == db) {
                Some((_, grantees)) => grantees.push(user.name.as_str()),
                None => desired.push((db, vec![user.name.as_str()])),
            }
        }
    }
    let actual: BTreeMap<&str, &ActualDatabase> =
        actual.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut creates = Vec::new();
    let mut grants = Vec::new();
    for (db, grantees) in desired {
        let existing = actual.get(db);
        if existing.is_none() {
            creates.push(Statement::new(
                format!("create database {db}"),
                format!("CREATE DATABASE {}", quote_ident(db)),
            ));
        }
        for grantee in grantees {
            let has_db = existing.is_some_and(|d| d.all_privileges.contains(grantee));
            if !has_db {
                grants.push(Statement::new(
                    format!("grant all on database {db} to {grantee}"),
                    format!(
                        "GRANT ALL PRIVILEGES ON DATABASE {} TO {}",
                        quote_ident(db),
                        quote_ident(grantee)
                    ),
                ));
            }
            // A new database is copied from template1, which has a `public` schema.
            let needs_schema = match existing {
                None => true,
                Some(d) => d
                    .public_schema_privileges
                    .as_ref()
                    .is_some_and(|holders| !holders.contains(grantee)),
            };
            if needs_schema {
                grants.push(
                    Statement::new(
                        format!("grant all on schema public of {db} to {grantee}"),
                        format!("GRANT ALL ON SCHEMA public TO {}", quote_ident(grantee)),
                    )
                    .in_database(db),
                );
            }
        }
    }
    creates.extend(grants);
    creates
}
