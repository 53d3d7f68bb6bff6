//! pg_hba and pg_ident rules: who may connect, from where, and how they prove who they are.
//!
//! PostgreSQL uses the FIRST line matching a connection's type, database and user, so order
//! is the policy:
//!
//! 1. The superuser only over the Unix socket, by peer authentication: it has no password to
//!    steal, and only a process in the database container (Patroni, pgBackRest, an operator
//!    `exec`) can use it. The ident map turns the OS user that runs Patroni into `postgres`.
//! 2. The replication role only over TLS with a client certificate (`cert`), for streaming
//!    replication and for pg_rewind, which connects to the `postgres` database. It has no
//!    password either; any other attempt with its name is refused.
//! 3. The superuser over TLS only with the operator's own client certificate (`cert`, map
//!    [`OPERATOR_IDENT_MAP`]): the map turns exactly the CN [`OPERATOR_CLIENT_CN`] into
//!    `postgres`, so no other certificate the CA signed (replication's, a user's) becomes the
//!    superuser. This is how the operator runs SQL on a Kubernetes primary without a
//!    superuser password existing. Any other TCP attempt as the superuser is then refused,
//!    TLS or not, so no later rule can open it.
//! 4. The user's own lines from `dynamicConfiguration.postgresql.pg_hba`. They come after
//!    Tusk's identity rules, which they cannot weaken, but before the catch-all below, so
//!    users can refine who gets in (e.g. `hostssl all all 10.0.0.0/8 cert`).
//! 5. Everyone else over TLS with a SCRAM password.
//! 6. `host all all all reject`: anything left — in practice every non-TLS TCP connection —
//!    is refused explicitly rather than by falling off the end of the file.
//!
//! Pure functions; no I/O.

use tusk_api::naming::{OPERATOR_CLIENT_CN, REPLICATION_USER, SUPERUSER};
use tusk_api::ValidatedCluster;

/// Name of the pg_ident map the superuser's `peer` rule uses.
pub const IDENT_MAP: &str = "tusk";
/// Name of the pg_ident map of the superuser's `cert` rule: the operator's certificate only.
pub const OPERATOR_IDENT_MAP: &str = "tusk-operator";

/// The pg_hba.conf lines, in order.
pub fn pg_hba(cluster: &ValidatedCluster) -> Vec<String> {
    let mut rules = vec![
        format!("local all {SUPERUSER} peer map={IDENT_MAP}"),
        format!("hostssl replication {REPLICATION_USER} all cert"),
        // pg_rewind reads files of the new primary through SQL functions in `postgres`.
        format!("hostssl postgres {REPLICATION_USER} all cert"),
        format!("host all {REPLICATION_USER} all reject"),
        format!("hostssl all {SUPERUSER} all cert map={OPERATOR_IDENT_MAP}"),
        format!("host all {SUPERUSER} all reject"),
    ];
    rules.extend(user_rules(cluster));
    rules.push("hostssl all all all scram-sha-256".into());
    rules.push("host all all all reject".into());
    rules
}

/// The user's `dynamicConfiguration.postgresql.pg_hba` lines (validated to be strings).
pub fn user_rules(cluster: &ValidatedCluster) -> Vec<String> {
    cluster
        .patroni
        .dynamic_configuration
        .get("postgresql")
        .and_then(|pg| pg.get("pg_hba"))
        .and_then(|hba| hba.as_array())
        .map(|lines| {
            lines
                .iter()
                .filter_map(|l| l.as_str())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// pg_ident.conf lines mapping the OS user that runs Patroni (`postgres` in the image; the
/// invoking user in `tusk local`) to the superuser, and nothing else: no other local account
/// becomes `postgres`; and, in the operator's map, the operator certificate's CN to the
/// superuser (an exact name, not a regular expression: no other CN matches).
pub fn pg_ident(os_user: &str) -> Vec<String> {
    let mut lines = vec![format!("{IDENT_MAP} {SUPERUSER} {SUPERUSER}")];
    if os_user != SUPERUSER {
        lines.push(format!("{IDENT_MAP} {os_user} {SUPERUSER}"));
    }
    lines.push(format!(
        "{OPERATOR_IDENT_MAP} {OPERATOR_CLIENT_CN} {SUPERUSER}"
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::cluster_from;

    use crate::test_support::BASE;

    fn position(rules: &[String], line: &str) -> usize {
        rules
            .iter()
            .position(|r| r == line)
            .unwrap_or_else(|| panic!("{line:?} missing from {rules:#?}"))
    }

    #[test]
    fn identity_rules_then_user_rules_then_scram_then_reject() {
        let yaml = format!(
            "{BASE}  patroni:\n    dynamicConfiguration:\n      postgresql:\n        pg_hba: ['hostssl all all 10.0.0.0/8 cert', 'hostssl zoo rhino all scram-sha-256']\n"
        );
        let rules = pg_hba(&cluster_from(&yaml));
        let superuser = position(&rules, "local all postgres peer map=tusk");
        let replication = position(&rules, "hostssl replication _tusk_repl all cert");
        let rewind = position(&rules, "hostssl postgres _tusk_repl all cert");
        let operator = position(&rules, "hostssl all postgres all cert map=tusk-operator");
        let superuser_tcp = position(&rules, "host all postgres all reject");
        let user_first = position(&rules, "hostssl all all 10.0.0.0/8 cert");
        let user_second = position(&rules, "hostssl zoo rhino all scram-sha-256");
        let scram = position(&rules, "hostssl all all all scram-sha-256");
        let reject = position(&rules, "host all all all reject");
        assert_eq!(superuser, 0);
        assert!(replication < superuser_tcp && rewind < superuser_tcp);
        // The operator's certificate rule is the only way in before the superuser reject.
        assert_eq!(operator + 1, superuser_tcp);
        assert!(superuser_tcp < user_first && user_first < user_second);
        assert!(user_second < scram);
        assert_eq!(reject, rules.len() - 1);
    }

    #[test]
    fn no_rule_lets_the_superuser_or_replication_role_use_a_password() {
        let rules = pg_hba(&cluster_from(BASE));
        for rule in &rules {
            let fields: Vec<&str> = rule.split_whitespace().collect();
            // local TYPE DATABASE USER METHOD; host* TYPE DATABASE USER ADDRESS METHOD
            let (user, method) = if fields[0] == "local" {
                (fields[2], fields[3])
            } else {
                (fields[2], fields[4])
            };
            if user == SUPERUSER || user == REPLICATION_USER {
                assert!(["peer", "cert", "reject"].contains(&method), "{rule}");
            }
        }
        // Every TCP rule that lets anyone in requires TLS.
        for rule in &rules {
            if rule.starts_with("host ") {
                assert!(rule.ends_with("reject"), "{rule}");
            }
        }
    }

    #[test]
    fn ident_maps_the_os_user_to_postgres_only() {
        assert_eq!(
            pg_ident("postgres"),
            vec![
                "tusk postgres postgres",
                "tusk-operator _tusk_operator postgres"
            ]
        );
        assert_eq!(
            pg_ident("alice"),
            vec![
                "tusk postgres postgres",
                "tusk alice postgres",
                "tusk-operator _tusk_operator postgres"
            ]
        );
    }

    #[test]
    fn the_operator_map_admits_only_the_operator_cn_and_only_as_the_superuser() {
        let operator_lines: Vec<Vec<String>> = pg_ident("alice")
            .iter()
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .filter(|f: &Vec<String>| f[0] == OPERATOR_IDENT_MAP)
            .collect();
        assert_eq!(
            operator_lines,
            vec![vec![
                OPERATOR_IDENT_MAP.to_owned(),
                OPERATOR_CLIENT_CN.to_owned(),
                SUPERUSER.to_owned()
            ]]
        );
        // A leading '/' would make the system name a regular expression.
        assert!(!operator_lines[0][1].starts_with('/'));
        // The map is used only by the superuser's certificate rule.
        let rules = pg_hba(&cluster_from(BASE));
        let users_of_map: Vec<&String> = rules
            .iter()
            .filter(|r| r.contains(&format!("map={OPERATOR_IDENT_MAP}")))
            .collect();
        assert_eq!(
            users_of_map,
            vec!["hostssl all postgres all cert map=tusk-operator"]
        );
    }
}
