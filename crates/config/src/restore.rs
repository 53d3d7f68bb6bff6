//! The argument lists of `pgbackrest restore` that Tusk runs, for both runtimes. Pure; no I/O.
//!
//! Three uses, one rule for who owns which option:
//! - [`RestoreMode::Bootstrap`]: a new cluster's first member restores into an empty data
//!   directory (Patroni's custom bootstrap method, see `patroni::Bootstrap`), for
//!   `spec.dataSource.postgresCluster` (a clone) and `spec.dataSource.pgbackrest`.
//! - [`RestoreMode::InPlace`]: `spec.backups.pgbackrest.restore` / `tusk local restore`
//!   rewinds an existing data directory (`--delta` copies only what differs).
//! - [`replica_args`]: Patroni's `pgbackrest` replica method seeds a new replica from the repo.
//!
//! Tusk manages `--stanza`, `--pg1-path`, `--repo` (from `repoName`), `--delta` (in place)
//! and `--target-action=promote` whenever a target is set, so a restored cluster always ends
//! recovery as a writable primary that Patroni can lead; `api::validate` rejects these in
//! user options. Users keep `--set`, `--db-include`, `--type`, `--target`,
//! `--target-timeline`, `--process-max`, ... An explicit target time (the CLI's `--target`)
//! replaces any `--type`/`--target` of the user options: pgBackRest refuses an option given
//! twice, and the explicit request is the newer intent.

use crate::parameters::PGBACKREST_STANZA;

/// Whether the data directory is new or restored over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreMode {
    /// Into an empty data directory (new cluster).
    Bootstrap,
    /// Over an existing data directory; only changed files are copied.
    InPlace,
}

/// One restore to render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreRequest<'a> {
    pub mode: RestoreMode,
    /// pgBackRest stanza of the source repo (Tusk's clusters all use `db`; a
    /// `dataSource.pgbackrest` may name another).
    pub stanza: &'a str,
    pub data_dir: &'a str,
    /// The repo to restore from, 1..=4.
    pub repo: u8,
    /// Where the source repo is when it is not this cluster's own (runtime-specific, e.g.
    /// `--repo1-path=/state/src/pgbackrest/repo1` locally). Written before user options.
    pub source_options: Vec<String>,
    /// The manifest's options (`restore.options`, `dataSource.*.options`).
    pub user_options: &'a [String],
    /// Point in time to stop at (`--type=time --target=...`), PostgreSQL timestamp syntax.
    pub target_time: Option<&'a str>,
}

/// The option's name without its value: `--set=x` and `--set x` are both `--set`.
pub fn option_name(option: &str) -> &str {
    let option = option.trim();
    let end = option
        .find(|c: char| c == '=' || c.is_whitespace())
        .unwrap_or(option.len());
    &option[..end]
}

/// Whether the options set a recovery target: then Tusk adds `--target-action=promote`.
/// `--type=immediate` stops at consistency, a target too.
fn sets_target(options: &[String]) -> bool {
    options.iter().any(|o| match option_name(o) {
        "--target" => true,
        "--type" => matches!(
            o.split_once('=').map(|(_, v)| v.trim()),
            Some("time" | "xid" | "name" | "lsn" | "immediate")
        ),
        _ => false,
    })
}

/// Arguments after `pgbackrest`, ending with the `restore` command itself.
pub fn restore_args(request: &RestoreRequest) -> Vec<String> {
    let mut args = vec![
        format!("--stanza={}", request.stanza),
        format!("--pg1-path={}", request.data_dir),
        format!("--repo={}", request.repo),
    ];
    if request.mode == RestoreMode::InPlace {
        args.push("--delta".into());
    }
    args.extend(request.source_options.iter().cloned());
    let explicit = request.target_time.is_some();
    args.extend(
        request
            .user_options
            .iter()
            .flat_map(|o| option_words(o))
            .filter(|o| !(explicit && matches!(option_name(o), "--type" | "--target"))),
    );
    if let Some(time) = request.target_time {
        args.push("--type=time".into());
        args.push(format!("--target={time}"));
    }
    if sets_target(&args) {
        // Without it PostgreSQL pauses at the target (a read-only server Patroni cannot
        // lead); with it recovery ends on a new timeline that accepts writes.
        args.push("--target-action=promote".into());
    }
    args.push("restore".into());
    args
}

/// Patroni's `pgbackrest` replica method: the newest backup as a standby that then streams
/// from the primary; `--delta` reuses whatever a failed earlier attempt left.
pub fn replica_args(data_dir: &str) -> Vec<String> {
    vec![
        format!("--stanza={PGBACKREST_STANZA}"),
        format!("--pg1-path={data_dir}"),
        "--delta".into(),
        "--type=standby".into(),
        "restore".into(),
    ]
}

/// The words of one user option. Manifests of the PGO family write options as shell text
/// (`--target="2021-06-09 14:15:11-04"`, which their Jobs pass through a shell), so they are
/// split by POSIX shell rules; `api::validate` rejects options that do not split.
pub fn option_words(option: &str) -> Vec<String> {
    shlex::split(option).unwrap_or_else(|| vec![option.to_owned()])
}

/// `program` and `args` as one command line a POSIX shell (and Python's `shlex.split`,
/// which Patroni uses on method commands) splits back into the same words.
pub fn command_line(program: &str, args: &[String]) -> String {
    // NUL is the only thing a shell cannot carry; no option can hold one after validation.
    let words: Vec<String> = std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(|w| w.replace('\0', ""))
        .collect();
    shlex::try_join(words.iter().map(String::as_str)).expect("NUL bytes were removed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(mode: RestoreMode, options: &'a [String]) -> RestoreRequest<'a> {
        RestoreRequest {
            mode,
            stanza: "db",
            data_dir: "/pgdata/pg15",
            repo: 2,
            source_options: vec![],
            user_options: options,
            target_time: None,
        }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_plain_clone_replays_to_the_end_without_a_target_action() {
        let args = restore_args(&RestoreRequest {
            source_options: strings(&["--repo2-path=/src/repo2"]),
            ..request(RestoreMode::Bootstrap, &[])
        });
        assert_eq!(
            args,
            strings(&[
                "--stanza=db",
                "--pg1-path=/pgdata/pg15",
                "--repo=2",
                "--repo2-path=/src/repo2",
                "restore"
            ])
        );
    }

    #[test]
    fn user_targets_get_promote_and_keep_their_options() {
        let options = strings(&[
            "--type=time",
            "--target='2024-05-01 10:00:00+00'",
            "--set=20240501-000000F",
        ]);
        let args = restore_args(&request(RestoreMode::Bootstrap, &options));
        assert_eq!(
            &args[3..6],
            &strings(&[
                "--type=time",
                "--target=2024-05-01 10:00:00+00",
                "--set=20240501-000000F"
            ])
        );
        assert_eq!(
            &args[6..],
            &strings(&["--target-action=promote", "restore"])
        );
        let immediate = strings(&["--type=immediate"]);
        assert!(restore_args(&request(RestoreMode::Bootstrap, &immediate))
            .contains(&"--target-action=promote".to_owned()));
        let only_db = strings(&["--db-include=zoo"]);
        assert!(!restore_args(&request(RestoreMode::Bootstrap, &only_db))
            .iter()
            .any(|a| a.starts_with("--target-action")));
    }

    #[test]
    fn in_place_is_delta_and_an_explicit_time_replaces_the_users_target() {
        let options = strings(&["--type=xid", "--target=1234", "--process-max=2"]);
        let args = restore_args(&RestoreRequest {
            target_time: Some("2024-05-01 10:00:00+00"),
            ..request(RestoreMode::InPlace, &options)
        });
        assert_eq!(
            args,
            strings(&[
                "--stanza=db",
                "--pg1-path=/pgdata/pg15",
                "--repo=2",
                "--delta",
                "--process-max=2",
                "--type=time",
                "--target=2024-05-01 10:00:00+00",
                "--target-action=promote",
                "restore"
            ])
        );
    }

    #[test]
    fn option_names_ignore_values_and_spacing() {
        assert_eq!(option_name("--set=x"), "--set");
        assert_eq!(option_name(" --stanza db"), "--stanza");
        assert_eq!(option_name("--delta"), "--delta");
    }

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let line = command_line(
            "pgbackrest",
            &strings(&["--target=2024-05-01 10:00:00+00", "--x=it's", "restore"]),
        );
        assert_eq!(
            shlex::split(&line).unwrap(),
            strings(&[
                "pgbackrest",
                "--target=2024-05-01 10:00:00+00",
                "--x=it's",
                "restore"
            ])
        );
    }

    #[test]
    fn user_options_are_shell_words_as_in_pgo_manifests() {
        let options = strings(&[r#"--target="2021-06-09 14:15:11-04""#, "--type=time"]);
        let args = restore_args(&request(RestoreMode::Bootstrap, &options));
        assert_eq!(args[3], "--target=2021-06-09 14:15:11-04");
    }
}
