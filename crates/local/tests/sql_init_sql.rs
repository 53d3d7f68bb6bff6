//! `databaseInitSQL` against a real PostgreSQL 15 through the real psql: it runs once (a
//! counter table proves the second call executed nothing), a failure is reported and not
//! recorded, and psql meta-commands work.

mod sql_support;

use std::path::Path;

use sql_support::{TestServer, BIN};
use tusk_api::model::ConfigMapKey;
use tusk_local::sql::{
    forget_database_init_sql, init_sql_path, run_database_init_sql, InitSqlOutcome, SqlError,
    INIT_SQL_MARKER,
};

const COUNTING_SQL: &str = "CREATE TABLE IF NOT EXISTS init_runs (n int);\n\
     INSERT INTO init_runs VALUES (1);\n";

#[test]
fn init_sql_runs_once_and_its_success_is_recorded() {
    let server = TestServer::start();
    let work = tempfile::tempdir().unwrap();
    let key = ConfigMapKey {
        name: "hippo-init-sql".into(),
        key: "init.sql".into(),
    };
    let file = init_sql_path(work.path(), &key);
    assert_eq!(file, work.path().join("init.sql"));
    std::fs::write(&file, COUNTING_SQL).unwrap();
    let psql = Path::new(BIN).join("psql");
    let state = work.path().join("state");
    std::fs::create_dir(&state).unwrap();

    let first = run_database_init_sql(&server.superuser(), &psql, &file, &state).unwrap();
    let InitSqlOutcome::Ran { sha256 } = first else {
        panic!("first run must execute: {first:?}")
    };
    assert_eq!(
        std::fs::read_to_string(state.join(INIT_SQL_MARKER))
            .unwrap()
            .trim(),
        sha256
    );
    let second = run_database_init_sql(&server.superuser(), &psql, &file, &state).unwrap();
    assert_eq!(
        second,
        InitSqlOutcome::AlreadyRan {
            recorded_sha256: sha256.clone(),
            content_changed: false
        }
    );
    assert_eq!(
        server.psql("postgres", "SELECT count(*) FROM init_runs"),
        "1"
    );

    // An edited file is not re-run while the marker exists, but the change is reported.
    std::fs::write(&file, format!("{COUNTING_SQL}-- edited\n")).unwrap();
    let edited = run_database_init_sql(&server.superuser(), &psql, &file, &state).unwrap();
    assert!(matches!(
        edited,
        InitSqlOutcome::AlreadyRan {
            content_changed: true,
            ..
        }
    ));
    assert_eq!(
        server.psql("postgres", "SELECT count(*) FROM init_runs"),
        "1"
    );

    // Forgetting (spec.databaseInitSQL removed) lets it run once more.
    forget_database_init_sql(&state).unwrap();
    let again = run_database_init_sql(&server.superuser(), &psql, &file, &state).unwrap();
    assert!(matches!(again, InitSqlOutcome::Ran { .. }), "{again:?}");
    assert_eq!(
        server.psql("postgres", "SELECT count(*) FROM init_runs"),
        "2"
    );
}

#[test]
fn a_failing_script_is_reported_and_retried_and_meta_commands_work() {
    let server = TestServer::start();
    server.psql("postgres", "CREATE DATABASE zoo");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("init.sql");
    let psql = Path::new(BIN).join("psql");
    std::fs::write(
        &file,
        "\\set ON_ERROR_STOP on\n\\c zoo\nCREATE TABLE t_zoo (id int);\nSELECT no_such_column FROM t_zoo;\n",
    )
    .unwrap();
    let failed = run_database_init_sql(&server.superuser(), &psql, &file, work.path());
    let Err(SqlError::InitSqlFailed { stderr, .. }) = &failed else {
        panic!("expected a failure: {failed:?}")
    };
    assert!(stderr.contains("no_such_column"), "{stderr}");
    assert!(!work.path().join(INIT_SQL_MARKER).exists());
    // `\c zoo` took effect: the table was created there before the failing statement.
    assert_eq!(
        server.psql(
            "zoo",
            "SELECT count(*) FROM pg_tables WHERE tablename = 't_zoo'"
        ),
        "1"
    );

    std::fs::write(
        &file,
        "\\set ON_ERROR_STOP on\n\\c zoo\nCREATE TABLE IF NOT EXISTS t_zoo (id int);\nINSERT INTO t_zoo VALUES (42);\n",
    )
    .unwrap();
    let fixed = run_database_init_sql(&server.superuser(), &psql, &file, work.path()).unwrap();
    assert!(matches!(fixed, InitSqlOutcome::Ran { .. }));
    assert_eq!(server.psql("zoo", "SELECT sum(id) FROM t_zoo"), "42");
}

#[test]
fn a_missing_file_names_its_path() {
    let work = tempfile::tempdir().unwrap();
    let target = tusk_local::sql::ConnectTarget::superuser_socket(work.path(), 5432);
    let missing = work.path().join("nope.sql");
    let err = run_database_init_sql(&target, Path::new("psql"), &missing, work.path()).unwrap_err();
    assert!(err.to_string().contains("nope.sql"), "{err}");
}
