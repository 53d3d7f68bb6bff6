//! Local runtime: a ValidatedCluster as real processes (etcd, Patroni + PostgreSQL per
//! instance on 127.0.0.N, pgBackRest, PgBouncer, exporter). Built in the `tusk local` issue.
