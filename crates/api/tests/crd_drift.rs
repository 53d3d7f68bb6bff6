//! The checked-in CRD (`deploy/crds/postgresclusters.tusk.rs.yaml`) is exactly what the Rust
//! types generate. Regenerate with:
//!
//! ```text
//! TUSK_UPDATE_CRDS=1 cargo test -p tusk-api --test crd_drift
//! ```

use std::path::PathBuf;

fn checked_in_crd() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/crds/postgresclusters.tusk.rs.yaml")
}

#[test]
fn checked_in_crd_matches_the_types() {
    let generated = tusk_api::crd::crd_yaml();
    let path = checked_in_crd();
    if std::env::var_os("TUSK_UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).expect("write the CRD");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{} is out of date with crates/api/src/types.rs; regenerate it with\n\n    \
         TUSK_UPDATE_CRDS=1 cargo test -p tusk-api --test crd_drift\n\nand commit the result",
        path.display()
    );
}
