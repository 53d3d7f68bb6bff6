//! `tusk local`'s SQL: the shared executor ([`tusk_sql`]: connect, read state, plan-execute
//! users, service roles) re-exported under `crate::sql`, plus `spec.databaseInitSQL`, which
//! runs the real `psql` and records its success in the state directory (local only; the
//! operator's init SQL is a separate concern). Touches no files except the init-SQL marker.

mod init_sql;

pub use init_sql::{
    forget_database_init_sql, init_sql_path, run_database_init_sql, InitSqlOutcome, INIT_SQL_MARKER,
};
pub use tusk_sql::*;
