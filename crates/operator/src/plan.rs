//! Instance planning lives in `tusk_api::plan` (shared with `tusk local`); re-exported here
//! so the operator's pipeline reads `plan::plan_instances`.

pub use tusk_api::plan::*;
