//! Validation of `spec.users`: role names, databases and the role attributes allowed in `options`.
//! Part of [`super`]'s validation; reads only the raw spec it is given. No I/O.

use super::*;

pub(super) fn users(
    errs: &mut Errors,
    cluster: &str,
    users: Option<&[PostgresUser]>,
) -> Vec<UserSpec> {
    let Some(users) = users.filter(|u| !u.is_empty()) else {
        // The PGO family's convention: a user and database named after the cluster.
        return DnsLabel::new(cluster)
            .map(|name| {
                vec![UserSpec {
                    databases: vec![cluster.to_owned()],
                    name,
                    options: String::new(),
                    password_type: PasswordType::AlphaNumeric,
                }]
            })
            .unwrap_or_default();
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let path = format!("spec.users[{i}]");
        if !seen.insert(u.name.clone()) {
            errs.push(format!("{path}.name"), format!("duplicate {:?}", u.name));
        }
        let name = match DnsLabel::new(u.name.clone()) {
            Ok(n) => n,
            Err(e) => {
                errs.push(format!("{path}.name"), e.to_string());
                continue;
            }
        };
        if u.name.starts_with("pg_") || u.name.starts_with("_tusk") {
            errs.push(
                format!("{path}.name"),
                "names starting with pg_ or _tusk are reserved",
            );
        }
        let mut databases = Vec::new();
        for (d, db) in u.databases.iter().flatten().enumerate() {
            if db.is_empty() || db.len() > 63 || db.contains('\0') {
                errs.push(
                    format!("{path}.databases[{d}]"),
                    "must be 1 to 63 characters without NUL",
                );
            } else if ["template0", "template1"].contains(&db.as_str()) {
                errs.push(
                    format!("{path}.databases[{d}]"),
                    format!("{db:?} is reserved"),
                );
            } else if !databases.contains(db) {
                databases.push(db.clone());
            }
        }
        let options = u
            .options
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if let Err(reason) = check_role_options(&options) {
            errs.push(format!("{path}.options"), reason);
        }
        out.push(UserSpec {
            name,
            databases,
            options,
            password_type: u.password.as_ref().map(|p| p.type_).unwrap_or_default(),
        });
    }
    out
}

/// Role attributes accepted in `options`: the `CREATE ROLE` keywords, and `CONNECTION LIMIT n`
/// / `VALID UNTIL '...'`. Anything else (`;`, `PASSWORD`, `IN ROLE`, ...) is rejected so that
/// options can be spliced into `ALTER ROLE` safely.
fn check_role_options(options: &str) -> Result<(), String> {
    const FLAGS: &[&str] = &[
        "SUPERUSER",
        "NOSUPERUSER",
        "CREATEDB",
        "NOCREATEDB",
        "CREATEROLE",
        "NOCREATEROLE",
        "INHERIT",
        "NOINHERIT",
        "LOGIN",
        "NOLOGIN",
        "REPLICATION",
        "NOREPLICATION",
        "BYPASSRLS",
        "NOBYPASSRLS",
    ];
    let words: Vec<&str> = options.split(' ').filter(|w| !w.is_empty()).collect();
    let mut i = 0;
    while i < words.len() {
        let w = words[i].to_ascii_uppercase();
        if FLAGS.contains(&w.as_str()) {
            i += 1;
        } else if w == "CONNECTION"
            && words.get(i + 1).map(|s| s.to_ascii_uppercase()) == Some("LIMIT".into())
        {
            match words.get(i + 2).map(|n| n.parse::<i64>()) {
                Some(Ok(n)) if n >= -1 => i += 3,
                _ => return Err("CONNECTION LIMIT needs an integer >= -1".to_owned()),
            }
        } else if w == "PASSWORD" || w == "ENCRYPTED" {
            return Err("PASSWORD is managed by Tusk and may not be set".to_owned());
        } else {
            return Err(format!(
                "{:?} is not a role attribute (allowed: {}, CONNECTION LIMIT n)",
                words[i],
                FLAGS.join(" ")
            ));
        }
    }
    Ok(())
}
