//! The PostgreSQL instance of one data directory: whether it runs as a primary, and killing
//! it. From files and /proc only, so a frozen or busy PostgreSQL is judged as quickly as a
//! healthy one. Touches only the postmaster named in the directory's `postmaster.pid` and its
//! children.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The postmaster's pid when the instance in `data_dir` runs as a primary: its
/// `postmaster.pid` names a live process started on that directory, and there is no
/// `standby.signal`/`recovery.signal` (Patroni writes one for every replica and standby
/// leader).
pub fn primary_postmaster(data_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    let running = !matches!(state(pid), None | Some('Z'))
        && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            String::from_utf8_lossy(&cmdline).contains(&*data_dir.to_string_lossy())
        });
    let recovering = ["standby.signal", "recovery.signal"]
        .iter()
        .any(|signal| data_dir.join(signal).exists());
    (running && !recovering).then_some(pid)
}

/// Stops every process of the instance at once so no backend acknowledges another commit:
/// the postmaster is stopped first (it can fork no replacement), then its children and the
/// postmaster are killed. SIGKILL also reaches stopped (frozen) processes. Returns once the
/// postmaster is gone or a zombie its (possibly frozen) parent has not reaped.
pub fn kill_postgres(postmaster: u32) {
    signal(postmaster, Signal::SIGSTOP);
    for child in children(postmaster) {
        signal(child, Signal::SIGKILL);
    }
    signal(postmaster, Signal::SIGKILL);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5)
        && state(postmaster).is_some_and(|state| state != 'Z')
    {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: u32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), signal);
}

/// The fields of `/proc/<pid>/stat` after the parenthesised command name (which may hold
/// spaces): state, ppid, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// The state letter (`R`, `S`, `T`, `Z`, ...), `None` when there is no such process.
fn state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The pids whose parent is `parent`.
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            stat_fields(*pid).and_then(|fields| fields.get(1)?.parse::<u32>().ok()) == Some(parent)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    #[test]
    fn children_are_found_by_their_parent_pid() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep runs");
        let found = children(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            found.contains(&child.id()),
            "{} not among {found:?}",
            child.id()
        );
        assert!(children(u32::MAX).is_empty());
    }

    #[test]
    fn kill_postgres_kills_a_stopped_parent_and_its_children() {
        // A stand-in process tree: a shell (the "postmaster") with a child, frozen first as a
        // frozen member would be; SIGKILL must still take both.
        let mut parent = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .expect("sh runs");
        let pid = parent.id();
        let start = Instant::now();
        let kids = loop {
            let kids = children(pid);
            if !kids.is_empty() || start.elapsed() > Duration::from_secs(5) {
                break kids;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(kids.len(), 1, "the shell's sleep: {kids:?}");
        signal(pid, Signal::SIGSTOP);
        kill_postgres(pid);
        let status = parent.wait().expect("the parent is reaped");
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        let gone = Instant::now();
        // The orphaned child is reaped by init; its /proc entry goes with it.
        while state(kids[0]).is_some_and(|s| s != 'Z') && gone.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            state(kids[0]).is_none_or(|s| s == 'Z'),
            "child {} survived",
            kids[0]
        );
    }

    #[test]
    fn only_a_running_instance_without_a_recovery_signal_is_a_primary() {
        let dir = std::env::temp_dir().join(format!("tusk-fence-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A live process whose command line names the directory stands in for a postmaster.
        // (`; true` keeps the shell from exec'ing sleep, which would drop the directory.)
        let mut postmaster = Command::new("sh")
            .args(["-c", "sleep 30; true", &*dir.to_string_lossy()])
            .spawn()
            .expect("sh runs");
        let pid = postmaster.id();
        assert_eq!(primary_postmaster(&dir), None, "no postmaster.pid");
        std::fs::write(
            dir.join("postmaster.pid"),
            format!("{pid}\n{}\n", dir.display()),
        )
        .unwrap();
        let found = primary_postmaster(&dir);
        std::fs::write(dir.join("standby.signal"), "").unwrap();
        let as_replica = primary_postmaster(&dir);
        std::fs::remove_file(dir.join("standby.signal")).unwrap();
        std::fs::write(dir.join("postmaster.pid"), "4194305\n").unwrap();
        let stale = primary_postmaster(&dir);
        let _ = postmaster.kill();
        let _ = postmaster.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found, Some(pid));
        assert_eq!(as_replica, None, "a replica is never a primary");
        assert_eq!(stale, None, "a pid that is not running");
    }
}
