//! pg_hba rules. Filled in by the config work.
