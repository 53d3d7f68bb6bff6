//! The operating system side: which OS user the servers run as, required programs, starting
//! servers detached from `tusk` (own process group, output to a log file), and finding,
//! signalling and waiting for them by pid. Touches processes and file ownership only.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{Gid, Pid, Uid, User};

use crate::error::{io, Error, Result};

/// The OS identity the servers run as, and the one `tusk` runs as.
#[derive(Clone, Debug)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Name of the user Patroni runs as.
    pub server_user: String,
    /// Name of the user running `tusk`: pg_ident maps it (and `postgres`) to the superuser so
    /// `tusk` itself can connect over the Unix socket by peer authentication.
    pub invoking_user: String,
}

impl RunAs {
    /// PostgreSQL refuses to run as root: as root, servers run as Debian's `postgres` user
    /// (created by the postgresql packages); otherwise as the invoking user.
    pub fn detect() -> Result<RunAs> {
        let me = Uid::effective();
        let invoking = User::from_uid(me)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| me.to_string());
        if !me.is_root() {
            return Ok(RunAs {
                uid: me.as_raw(),
                gid: Gid::effective().as_raw(),
                server_user: invoking.clone(),
                invoking_user: invoking,
            });
        }
        let postgres = User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or_else(|| Error::Os {
                action: "looking up the `postgres` OS user servers run as when tusk is root".into(),
                reason: "no such user; install it with: apt-get install -y postgresql-common"
                    .into(),
            })?;
        Ok(RunAs {
            uid: postgres.uid.as_raw(),
            gid: postgres.gid.as_raw(),
            server_user: postgres.name,
            invoking_user: invoking,
        })
    }

    /// The user running `tusk` itself, for a helper that must not switch user.
    pub fn invoking(&self) -> RunAs {
        RunAs {
            uid: Uid::effective().as_raw(),
            gid: Gid::effective().as_raw(),
            server_user: self.server_user.clone(),
            invoking_user: self.invoking_user.clone(),
        }
    }

    fn switches_user(&self) -> bool {
        self.uid != Uid::effective().as_raw()
    }

    /// Gives `path` and everything below it to the server user (no-op when not switching).
    pub fn own_tree(&self, path: &Path) -> Result<()> {
        if !self.switches_user() {
            return Ok(());
        }
        let owner = (Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid)));
        let mut stack = vec![path.to_owned()];
        while let Some(p) = stack.pop() {
            nix::unistd::chown(&p, owner.0, owner.1).map_err(|e| Error::Os {
                action: format!("chown {}", p.display()),
                reason: e.to_string(),
            })?;
            let meta = std::fs::symlink_metadata(&p).map_err(io("inspecting", &p))?;
            if meta.is_dir() {
                for entry in std::fs::read_dir(&p).map_err(io("listing", &p))? {
                    stack.push(entry.map_err(io("listing", &p))?.path());
                }
            }
        }
        Ok(())
    }

    /// The server user must be able to reach the state directory: every ancestor needs the
    /// search bit for "others" (we cannot and should not chown the user's parent dirs).
    pub fn check_reachable(&self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        if !self.switches_user() {
            return Ok(());
        }
        let absolute = std::path::absolute(dir).map_err(io("resolving", dir))?;
        for ancestor in absolute.ancestors().skip(1) {
            let Ok(meta) = std::fs::metadata(ancestor) else {
                continue; // created later by us, owned by root with 0755
            };
            if meta.uid() != self.uid && meta.mode() & 0o001 == 0 {
                return Err(Error::StateDir {
                    path: dir.into(),
                    reason: format!(
                        "the `{}` OS user the servers run as cannot enter {} (chmod o+x it or choose another --state-dir)",
                        self.server_user,
                        ancestor.display()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A program `tusk local` needs and the Debian package that ships it.
pub struct Requirement {
    pub path: PathBuf,
    pub package: String,
}

/// Fails naming every missing program and its package, before anything is started.
pub fn check_programs(required: &[Requirement]) -> Result<()> {
    let missing: Vec<&Requirement> = required.iter().filter(|r| !r.path.is_file()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|r| r.package.as_str()).collect();
    packages.dedup();
    Err(Error::MissingPackages {
        missing: missing
            .iter()
            .map(|r| r.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        packages: packages.join(" "),
    })
}

/// `name` on PATH (or /usr/bin, /usr/sbin), else `/usr/bin/<name>` so the error names it.
pub fn find_program(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin").join(name))
}

/// Starts `command` so it outlives `tusk`: its own process group (a Ctrl-C aimed at `tusk`
/// does not reach it), stdin closed, stdout and stderr appended to `log`, as the server user.
/// Writes the pid to `pid_file` and returns it.
pub fn spawn_detached(
    what: &str,
    mut command: Command,
    log: &Path,
    pid_file: &Path,
    run_as: &RunAs,
) -> Result<u32> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io("opening", log))?;
    let err = out.try_clone().map_err(io("opening", log))?;
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    if run_as.switches_user() {
        command.uid(run_as.uid).gid(run_as.gid);
    }
    let child = command.spawn().map_err(|source| Error::Spawn {
        what: what.into(),
        source,
    })?;
    let pid = child.id();
    wait_exec_finished(pid);
    std::fs::write(pid_file, format!("{pid}\n")).map_err(io("writing", pid_file))?;
    run_as.own_tree(log)?;
    Ok(pid)
}

/// Waits (briefly) until `pid`'s command line is readable. `spawn` returns once the exec
/// closed the child's close-on-exec pipe, but the kernel sets the new image's argument
/// bounds a moment later: on a loaded machine `/proc/<pid>/cmdline` can still read empty,
/// and [`alive`] would take the server for gone (seen as "etcd exited while starting" with
/// an empty log). Returns early when the process is already gone.
fn wait_exec_finished(pid: u32) {
    let cmdline = PathBuf::from(format!("/proc/{pid}/cmdline"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        match std::fs::read(&cmdline) {
            Ok(bytes) if bytes.is_empty() && !matches!(process_state(pid), None | Some('Z')) => {
                std::thread::sleep(Duration::from_millis(2))
            }
            _ => return,
        }
    }
}

/// The pid in `pid_file` (first line, as in postmaster.pid), if the file exists.
pub fn read_pid(pid_file: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_file)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is a live process whose command line contains `marker` (a path unique to
/// the server), so a recycled pid is never mistaken for ours. Zombies count as gone, and are
/// reaped when they are our children (tests run `up` in-process).
pub fn alive(pid: u32, marker: &str) -> bool {
    match process_state(pid) {
        None => return false,
        Some('Z') => {
            let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
            return false;
        }
        Some(_) => {}
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
        .unwrap_or(false)
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `Z`, ...), `None` when there is no such
/// process.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name, which may contain spaces.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Sends `signal` to `pid`; a process already gone is not an error.
pub fn signal(pid: u32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), signal);
}

/// Polls until `pid` is gone; false when it is still there after `limit`.
pub fn wait_gone(pid: u32, marker: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while alive(pid, marker) {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// SIGTERM, wait up to `grace`, then SIGKILL: the process is gone when this returns.
pub fn terminate(pid: u32, marker: &str, grace: Duration) {
    if !alive(pid, marker) {
        return;
    }
    signal(pid, Signal::SIGTERM);
    if !wait_gone(pid, marker, grace) {
        signal(pid, Signal::SIGKILL);
        wait_gone(pid, marker, Duration::from_secs(10));
    }
}

/// Fails with [`Error::PortInUse`] when another process listens on `address` (`host:port`),
/// so a server is not started only to die at its bind, and a foreign listener is not taken
/// for it by [`wait_listening`].
pub fn ensure_port_free(what: &str, address: &str) -> Result<()> {
    match std::net::TcpListener::bind(address) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Error::PortInUse {
            what: what.into(),
            address: address.into(),
        }),
        _ => Ok(()),
    }
}

/// Polls until `address` (`host:port`) accepts TCP connections; [`Error::Exited`] (with the
/// end of `log`) when `running()` says the server died first, a timeout when `limit` passes.
pub fn wait_listening(
    what: &str,
    address: &str,
    log: &Path,
    limit: Duration,
    running: impl Fn() -> bool,
) -> Result<()> {
    let start = Instant::now();
    while std::net::TcpStream::connect(address).is_err() {
        if !running() {
            return Err(Error::Exited {
                what: format!("{what} on {address}"),
                log: log.to_owned(),
                tail: log_tail(log, 10),
            });
        }
        if start.elapsed() > limit {
            return Err(Error::Timeout {
                what: format!("{what} to listen on {address}"),
                seconds: start.elapsed().as_secs(),
                log: log.to_owned(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Runs a short helper command to completion (as the server user when `run_as` is given),
/// returning its stdout; failure carries stderr.
pub fn run_helper(what: &str, mut command: Command, run_as: Option<&RunAs>) -> Result<String> {
    if let Some(run_as) = run_as.filter(|r| r.switches_user()) {
        command.uid(run_as.uid).gid(run_as.gid);
    }
    let output = command.output().map_err(|source| Error::Spawn {
        what: what.into(),
        source,
    })?;
    if !output.status.success() {
        return Err(Error::Command {
            what: what.into(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Removes the libpq environment variables a caller's shell may hold: they would silently
/// redirect or weaken a `psql` connection Tusk sets up explicitly.
pub fn clear_libpq_env(command: &mut Command) {
    for var in [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGSERVICE",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGTARGETSESSIONATTRS",
        "PGOPTIONS",
    ] {
        command.env_remove(var);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_programs_are_named_with_their_debian_packages() {
        let present = Requirement {
            path: PathBuf::from("/bin/sh"),
            package: "dash".into(),
        };
        assert!(check_programs(std::slice::from_ref(&present)).is_ok());
        let missing = |path: &str, package: &str| Requirement {
            path: PathBuf::from(path),
            package: package.into(),
        };
        let err = check_programs(&[
            present,
            missing("/nonexistent/patroni", "patroni"),
            missing("/nonexistent/etcd", "etcd-server"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/patroni"), "{err}");
        assert!(err.contains("patroni etcd-server"), "{err}");
        assert!(!err.contains("dash"), "{err}");
    }
}
