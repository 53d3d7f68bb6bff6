//! Reading the actual SQL state the plan compares against: roles (with `pg_authid`'s stored
//! password, so the plan can check the verifier instead of resetting passwords blindly) and
//! databases with the grants the plan manages. Needs the superuser (`pg_authid` is private).
//! Only the roles and databases it is asked about are read, so no other role's password
//! verifier is ever loaded. Read-only.

use std::collections::BTreeSet;

use tokio_postgres::Client;
use tusk_config::users::{ActualDatabase, ActualRole, RoleAttributes};

use crate::{connect, describe, ConnectTarget, SqlError};

const ROLES: &str = "SELECT rolname::text, rolsuper, rolinherit, rolcreaterole, rolcreatedb, \
     rolcanlogin, rolreplication, rolbypassrls, rolconnlimit, rolpassword \
     FROM pg_authid WHERE rolname = ANY($1::text[])";

/// Grantees holding all of the privileges counted in `HAVING` (an ACL that is NULL means the
/// owner's defaults, hence `acldefault`). Grantee 0 is PUBLIC, which the plan never grants to.
const DATABASES: &str = "SELECT d.datname::text, pg_get_userbyid(d.datdba)::text, \
     ARRAY(SELECT pg_get_userbyid(e.grantee)::text \
           FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) e \
           WHERE e.grantee <> 0 GROUP BY e.grantee \
           HAVING count(DISTINCT e.privilege_type) FILTER \
                  (WHERE e.privilege_type IN ('CREATE', 'CONNECT', 'TEMPORARY')) = 3) \
     FROM pg_database d WHERE d.datname = ANY($1::text[])";

const PUBLIC_SCHEMA: &str = "SELECT ARRAY(SELECT pg_get_userbyid(e.grantee)::text \
           FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) e \
           WHERE e.grantee <> 0 GROUP BY e.grantee \
           HAVING count(DISTINCT e.privilege_type) FILTER \
                  (WHERE e.privilege_type IN ('USAGE', 'CREATE')) = 2) \
     FROM pg_namespace n WHERE n.nspname = 'public'";

/// The roles among `names` that exist.
pub async fn read_actual_roles(
    client: &Client,
    names: &[&str],
) -> Result<Vec<ActualRole>, SqlError> {
    let rows = client
        .query(ROLES, &[&names])
        .await
        .map_err(|e| read_error("roles (pg_authid)", &e))?;
    rows.iter()
        .map(|row| {
            Ok(ActualRole {
                name: row.try_get(0).map_err(|e| read_error("rolname", &e))?,
                attributes: RoleAttributes {
                    superuser: row.try_get(1).map_err(|e| read_error("rolsuper", &e))?,
                    inherit: row.try_get(2).map_err(|e| read_error("rolinherit", &e))?,
                    createrole: row
                        .try_get(3)
                        .map_err(|e| read_error("rolcreaterole", &e))?,
                    createdb: row.try_get(4).map_err(|e| read_error("rolcreatedb", &e))?,
                    login: row.try_get(5).map_err(|e| read_error("rolcanlogin", &e))?,
                    replication: row
                        .try_get(6)
                        .map_err(|e| read_error("rolreplication", &e))?,
                    bypassrls: row.try_get(7).map_err(|e| read_error("rolbypassrls", &e))?,
                    connection_limit: row.try_get(8).map_err(|e| read_error("rolconnlimit", &e))?,
                },
                stored_password: row.try_get(9).map_err(|e| read_error("rolpassword", &e))?,
            })
        })
        .collect()
}

/// The databases among `names` that exist, with their grants; the `public` schema's grants
/// are read by connecting to each of them through `target`.
pub async fn read_actual_databases(
    client: &Client,
    target: &ConnectTarget,
    names: &[&str],
) -> Result<Vec<ActualDatabase>, SqlError> {
    let rows = client
        .query(DATABASES, &[&names])
        .await
        .map_err(|e| read_error("databases (pg_database)", &e))?;
    let mut out = Vec::new();
    for row in rows {
        let name: String = row.try_get(0).map_err(|e| read_error("datname", &e))?;
        let owner: String = row.try_get(1).map_err(|e| read_error("datdba", &e))?;
        let granted: Vec<String> = row.try_get(2).map_err(|e| read_error("datacl", &e))?;
        let db_client = connect(target, &name).await?;
        let schema = db_client
            .query_opt(PUBLIC_SCHEMA, &[])
            .await
            .map_err(|e| read_error("schema public (pg_namespace)", &e))?;
        let public_schema_privileges = match schema {
            Some(row) => Some(
                row.try_get::<_, Vec<String>>(0)
                    .map_err(|e| read_error("nspacl", &e))?
                    .into_iter()
                    .collect(),
            ),
            None => None,
        };
        out.push(ActualDatabase {
            name,
            owner,
            all_privileges: granted.into_iter().collect::<BTreeSet<_>>(),
            public_schema_privileges,
        });
    }
    Ok(out)
}

/// The verifier (or other hash) stored for `role`, e.g. for the Secret's `verifier` key.
pub async fn stored_password(client: &Client, role: &str) -> Result<Option<String>, SqlError> {
    let roles = read_actual_roles(client, &[role]).await?;
    Ok(roles.into_iter().next().and_then(|r| r.stored_password))
}

fn read_error(what: &'static str, error: &tokio_postgres::Error) -> SqlError {
    SqlError::ReadState {
        what,
        message: describe(error),
    }
}
