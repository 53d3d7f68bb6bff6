//! `tusk local backup` / `backups` on a real 1-member cluster (127.55.1.x) with a `volume`
//! repo: full, differential and incremental backups are listed with their types and chain,
//! and with `repo1-retention-full: "1"` pgBackRest expires the first full and everything
//! built on it when the second full completes.

mod common;

use common::{manifest, Cluster};
use tusk_local::backup::{list_backups, run_backup, BackupKind};

const BACKUPS: &str = "  backups:
    pgbackrest:
      global:
        repo1-retention-full: \"1\"
      repos:
        - name: repo1
          volume:
            volumeClaimSpec:
              accessModes: [\"ReadWriteOnce\"]
              resources: { requests: { storage: 1Gi } }
";

#[test]
fn full_diff_incr_are_listed_and_retention_expires_the_old_chain() {
    let cluster = Cluster::new("127.55.1");
    let file = cluster.write("zoo.yaml", &manifest("zoo", 1, BACKUPS));
    cluster.up(&file).expect("up");
    let layout = cluster.layout();
    let mut progress = |line: &str| eprintln!("[backup] {line}");
    let write = |n: u32| {
        cluster
            .sql(
                "postgres",
                &format!("CREATE TABLE IF NOT EXISTS t (id int); INSERT INTO t SELECT generate_series(1, {n})"),
            )
            .expect("insert");
    };

    write(1000);
    let full = run_backup(&layout, BackupKind::Full, None, &mut progress).expect("full");
    write(10);
    let diff = run_backup(&layout, BackupKind::Diff, None, &mut progress).expect("diff");
    write(10);
    let incr = run_backup(&layout, BackupKind::Incr, Some(1), &mut progress).expect("incr");

    let listed = list_backups(&layout).expect("backups");
    let kinds: Vec<(String, BackupKind)> =
        listed.iter().map(|b| (b.label.clone(), b.kind)).collect();
    assert_eq!(
        kinds,
        [
            (full.label.clone(), BackupKind::Full),
            (diff.label.clone(), BackupKind::Diff),
            (incr.label.clone(), BackupKind::Incr),
        ]
    );
    assert_eq!(diff.prior.as_deref(), Some(full.label.as_str()));
    assert_eq!(incr.prior.as_deref(), Some(diff.label.as_str()));
    assert!(listed
        .iter()
        .all(|b| b.repo == 1 && b.size > 0 && b.stop >= b.start));
    // A differential copies less than the full it builds on.
    assert!(diff.repo_size < full.repo_size, "{diff:?} vs {full:?}");

    // A repo that is not in the manifest is refused, naming the flag.
    let err = run_backup(&layout, BackupKind::Full, Some(2), &mut progress).unwrap_err();
    assert!(
        err.to_string().starts_with("--repo: repo2 is not in"),
        "{err}"
    );

    let second = run_backup(&layout, BackupKind::Full, None, &mut progress).expect("full 2");
    let after: Vec<String> = list_backups(&layout)
        .expect("backups")
        .into_iter()
        .map(|b| b.label)
        .collect();
    assert_eq!(
        after,
        [second.label],
        "retention 1 keeps only the newest full"
    );
}
