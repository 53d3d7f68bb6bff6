//! PostgreSQL parameters: those Tusk requires, its defaults, and the user's. Filled in by the
//! config work.
