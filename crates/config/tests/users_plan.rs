//! Pure tests of `tusk_config::users`: quoting, the SCRAM verifier against the RFC 7677 test
//! vector, and the plan over hand-made actual states. The same plan against a real PostgreSQL
//! is tested in `crates/local/tests/sql_users.rs`.

use std::collections::{BTreeMap, BTreeSet};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use tusk_config::users::{
    hmac_sha256, plan, quote_ident, quote_literal, ActualDatabase, ActualRole, RoleAttributes,
    ScramVerifier, Statement,
};

fn cluster(users_yaml: &str) -> tusk_api::ValidatedCluster {
    let yaml = format!(
        "apiVersion: tusk.rs/v1beta1\nkind: PostgresCluster\nmetadata: {{name: hippo}}\n\
         spec:\n  postgresVersion: 15\n  instances: [{{name: one, dataVolumeClaimSpec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}}}]\n{users_yaml}"
    );
    tusk_api::validate_yaml(&yaml).unwrap_or_else(|e| panic!("invalid test manifest: {e:?}"))
}

fn passwords(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .collect()
}

fn sql(statements: &[Statement]) -> Vec<&str> {
    statements.iter().map(Statement::sql).collect()
}

#[test]
fn identifiers_are_always_quoted_with_inner_quotes_doubled() {
    assert_eq!(quote_ident("hippo"), r#""hippo""#);
    assert_eq!(quote_ident("Zoo"), r#""Zoo""#);
    assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
    assert_eq!(quote_ident("db; DROP TABLE x"), r#""db; DROP TABLE x""#);
}

#[test]
fn literals_double_quotes_and_escape_backslashes() {
    assert_eq!(quote_literal("plain"), "'plain'");
    assert_eq!(quote_literal("it's"), "'it''s'");
    assert_eq!(quote_literal(r"a\b'"), r"E'a\\b'''");
}

/// RFC 7677 section 3: user "user", password "pencil". The client proof and server signature
/// of that exchange can only be reproduced with the right StoredKey and ServerKey.
#[test]
fn verifier_matches_the_rfc_7677_exchange() {
    let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let v = ScramVerifier::with_salt("pencil", &salt, 4096);
    let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
        r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
        c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    let server_signature = hmac_sha256(&v.server_key, auth_message.as_bytes());
    assert_eq!(
        BASE64.encode(server_signature),
        "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
    // ClientKey = ClientProof XOR ClientSignature, and StoredKey = H(ClientKey).
    let proof = BASE64
        .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        .unwrap();
    let client_signature = hmac_sha256(&v.stored_key, auth_message.as_bytes());
    let client_key: Vec<u8> = proof
        .iter()
        .zip(client_signature)
        .map(|(p, s)| p ^ s)
        .collect();
    assert_eq!(<[u8; 32]>::from(Sha256::digest(client_key)), v.stored_key);
}

#[test]
fn verifier_text_round_trips_and_verifies_only_its_password() {
    let v = ScramVerifier::new("s3cret");
    let text = v.to_string();
    assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
    let parsed = ScramVerifier::parse(&text).expect("own format parses");
    assert_eq!(parsed.salt.len(), 16);
    assert!(parsed.verifies("s3cret"));
    assert!(!parsed.verifies("s3cret "));
    assert_ne!(
        ScramVerifier::new("s3cret").salt,
        v.salt,
        "salts are random"
    );
    assert!(ScramVerifier::parse("md5abcdef").is_none());
    assert!(!format!("{v:?}").contains(&BASE64.encode(v.server_key)));
}

#[test]
fn options_apply_left_to_right_over_login_defaults() {
    let a = RoleAttributes::from_options("SUPERUSER CREATEDB NOINHERIT CONNECTION LIMIT 5");
    assert!(a.superuser && a.createdb && a.login && !a.inherit && !a.createrole);
    assert_eq!(a.connection_limit, 5);
    let b = RoleAttributes::from_options("superuser NOSUPERUSER nologin");
    assert!(!b.superuser && !b.login);
    assert_eq!(
        RoleAttributes::from_options(""),
        RoleAttributes::USER_DEFAULT
    );
}

#[test]
fn an_empty_server_gets_roles_then_databases_then_grants() {
    let c = cluster(
        "  users:\n    - {name: rhino, databases: [zoo, Shared], options: CREATEDB}\n    - {name: hippo, databases: [Shared]}\n",
    );
    let pw = passwords(&[("rhino", "pw-r"), ("hippo", "pw-h")]);
    let statements = plan(&c, &[], &[], &pw);
    let texts: Vec<String> = statements.iter().map(ToString::to_string).collect();
    assert_eq!(
        texts,
        [
            "create role rhino (NOSUPERUSER CREATEDB NOCREATEROLE INHERIT LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT -1) with a password",
            "create role hippo (NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT -1) with a password",
            "create database zoo",
            "create database Shared",
            "grant all on database zoo to rhino",
            "grant all on schema public of zoo to rhino",
            "grant all on database Shared to rhino",
            "grant all on schema public of Shared to rhino",
            "grant all on database Shared to hippo",
            "grant all on schema public of Shared to hippo",
        ]
    );
    assert!(statements[0]
        .sql()
        .starts_with(r#"CREATE ROLE "rhino" WITH "#));
    assert!(statements[0]
        .sql()
        .contains("PASSWORD 'SCRAM-SHA-256$4096:"));
    assert_eq!(statements[3].sql(), r#"CREATE DATABASE "Shared""#);
    assert_eq!(statements[5].database.as_deref(), Some("zoo"));
    assert_eq!(statements[4].database, None);
    for s in &statements {
        let shown = format!("{s} {s:?}");
        assert!(
            !shown.contains("pw-r") && !shown.contains("SCRAM-SHA-256$"),
            "{shown}"
        );
        assert!(
            !s.sql().contains("pw-"),
            "clear password in SQL: {}",
            s.sql()
        );
    }
}

/// What the server looks like after `plan` ran against an empty one.
fn converged(
    c: &tusk_api::ValidatedCluster,
    pw: &BTreeMap<String, String>,
) -> (Vec<ActualRole>, Vec<ActualDatabase>) {
    let mut roles = vec![ActualRole {
        name: "postgres".into(),
        attributes: RoleAttributes {
            superuser: true,
            createrole: true,
            createdb: true,
            replication: true,
            bypassrls: true,
            ..RoleAttributes::USER_DEFAULT
        },
        stored_password: None,
    }];
    let mut dbs: BTreeMap<String, ActualDatabase> = BTreeMap::new();
    for u in &c.users {
        roles.push(ActualRole {
            name: u.name.to_string(),
            attributes: RoleAttributes::from_options(&u.options),
            stored_password: pw
                .get(u.name.as_str())
                .map(|p| ScramVerifier::new(p).to_string()),
        });
        for d in &u.databases {
            let db = dbs.entry(d.clone()).or_insert_with(|| ActualDatabase {
                name: d.clone(),
                owner: "postgres".into(),
                all_privileges: BTreeSet::from(["postgres".to_string()]),
                public_schema_privileges: Some(BTreeSet::from(["pg_database_owner".to_string()])),
            });
            db.all_privileges.insert(u.name.to_string());
            db.public_schema_privileges
                .as_mut()
                .unwrap()
                .insert(u.name.to_string());
        }
    }
    (roles, dbs.into_values().collect())
}

#[test]
fn an_unchanged_server_plans_nothing() {
    let c = cluster("  users:\n    - {name: rhino, databases: [zoo], options: SUPERUSER}\n    - {name: postgres}\n");
    let pw = passwords(&[("rhino", "a"), ("postgres", "b")]);
    let (roles, dbs) = converged(&c, &pw);
    assert_eq!(plan(&c, &roles, &dbs, &pw), Vec::<Statement>::new());
}

#[test]
fn changes_alter_only_what_differs_and_never_drop() {
    let before = cluster("  users:\n    - {name: rhino, databases: [zoo], options: SUPERUSER}\n");
    let pw = passwords(&[("rhino", "old")]);
    let (roles, dbs) = converged(&before, &pw);
    let after = cluster("  users:\n    - {name: rhino, databases: [park], options: NOSUPERUSER}\n");
    let new_pw = passwords(&[("rhino", "new")]);
    let statements = plan(&after, &roles, &dbs, &new_pw);
    let texts: Vec<String> = statements.iter().map(ToString::to_string).collect();
    assert_eq!(
        texts,
        [
            "alter role rhino: NOSUPERUSER",
            "set the password of role rhino",
            "create database park",
            "grant all on database park to rhino",
            "grant all on schema public of park to rhino",
        ]
    );
    assert_eq!(
        statements[0].sql(),
        r#"ALTER ROLE "rhino" WITH NOSUPERUSER"#
    );
    assert!(sql(&statements)
        .iter()
        .all(|s| !s.contains("DROP") && !s.contains("REVOKE")));
}

#[test]
fn the_superuser_keeps_its_attributes_and_has_a_password_only_while_listed() {
    let listed = cluster("  users:\n    - {name: postgres, options: NOSUPERUSER}\n");
    let pw = passwords(&[("postgres", "pg")]);
    let (roles, dbs) = converged(&cluster(""), &BTreeMap::new());
    let statements = plan(&listed, &roles, &dbs, &pw);
    assert_eq!(statements.len(), 1, "{statements:?}");
    assert!(statements[0]
        .sql()
        .starts_with(r#"ALTER ROLE "postgres" PASSWORD 'SCRAM"#));

    let mut with_password = roles.clone();
    with_password[0].stored_password = Some(ScramVerifier::new("pg").to_string());
    let unlisted = plan(&cluster(""), &with_password, &dbs, &BTreeMap::new());
    assert_eq!(sql(&unlisted), [r#"ALTER ROLE "postgres" PASSWORD NULL"#]);
}

#[test]
fn a_dropped_public_schema_is_left_alone_and_md5_passwords_are_replaced() {
    let c = cluster("  users:\n    - {name: rhino, databases: [zoo]}\n");
    let pw = passwords(&[("rhino", "a")]);
    let (mut roles, mut dbs) = converged(&c, &pw);
    dbs[0].public_schema_privileges = None;
    roles[1].stored_password = Some("md5d41d8cd98f00b204e9800998ecf8427e".into());
    let texts: Vec<String> = plan(&c, &roles, &dbs, &pw)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(texts, ["set the password of role rhino"]);
}

#[test]
fn a_user_without_a_known_password_keeps_its_own() {
    let c = cluster("  users:\n    - {name: rhino}\n");
    let (roles, dbs) = converged(&c, &passwords(&[("rhino", "a")]));
    assert!(plan(&c, &roles, &dbs, &BTreeMap::new()).is_empty());
    let created = plan(&c, &roles[..1], &dbs, &BTreeMap::new());
    assert_eq!(created.len(), 1);
    assert!(!created[0].sql().contains("PASSWORD"));
}
