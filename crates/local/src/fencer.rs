//! One member's fencer: a process beside its Patroni that stops the member's PostgreSQL when
//! it runs as a primary whose leader lease can no longer be valid (the rule and why it is
//! needed: [`tusk_config::fence`]). It polls the leader key in etcd, and when the rule says so
//! asks the member's Patroni over its REST API, then kills the postmaster and every backend,
//! so nothing more is acknowledged. Patroni, once it runs again, starts PostgreSQL as what the
//! DCS says it is (crash recovery as the leader, or a rewound replica).
//!
//! Started before Patroni by [`start`] and stopped after it by [`stop`]; its settings are
//! `fencer.json` in the member's directory ([`write_config`]), its log `fencer.log`. Touches
//! only that member's postmaster, its children and its own files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tusk_config::fence::{Fence, FencePolicy, LeaseRead, PatroniAnswer, Verdict};
use tusk_config::patroni::EtcdApi;

use crate::error::{io, Error, Result};
use crate::members::Context;
use crate::patroni_api::PatroniApi;
use crate::state::{Layout, MemberPaths, MemberRecord};
use crate::system;

/// How often the lease is read. Part of the fence margin (`FencePolicy`).
const POLL: Duration = Duration::from_millis(250);
/// How long one read of etcd or one question to Patroni may take. A frozen Patroni accepts
/// the connection (the kernel does) and never answers: this is how long that takes to tell.
/// Patroni's own leader race waits 2 s for a member's answer, so the fencer acts first.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// Patroni's key namespace (Tusk never changes it).
const NAMESPACE: &str = "/service";
/// How long a starting fencer may take to load its settings and certificates.
const STARTUP: Duration = Duration::from_secs(10);
/// Marks the fencer's command line, so a recycled pid is not taken for it.
const MARKER: &str = "fencer.json";

/// Everything the fencer needs, written by `tusk local up` for each member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencerConfig {
    pub state_dir: PathBuf,
    pub member: String,
    /// The member's address (its REST API listens there).
    pub host: String,
    pub rest_port: u16,
    pub scope: String,
    /// etcd's `host:port`, and which of its APIs Patroni keeps the keys in.
    pub etcd: String,
    pub etcd_api: EtcdApi,
    /// Patroni's `ttl` and `loop_wait` (seconds), for the margin.
    pub ttl: u32,
    pub loop_wait: u32,
}

fn paths_config(paths: &MemberPaths) -> PathBuf {
    paths.dir.join(MARKER)
}

fn pid_file(paths: &MemberPaths) -> PathBuf {
    paths.dir.join("fencer.pid")
}

/// Writes the member's `fencer.json`; a running fencer picks a change up on its next poll.
pub fn write_config(ctx: &Context, record: &MemberRecord) -> Result<()> {
    let paths = ctx.layout.member(&record.name);
    let config = FencerConfig {
        state_dir: ctx.layout.root.clone(),
        member: record.name.clone(),
        host: ctx.state.host(record),
        rest_port: ctx.cluster.patroni.port,
        scope: ctx.cluster.names.patroni_scope(),
        etcd: crate::etcd::client_endpoint(&ctx.state.network),
        etcd_api: ctx.state.etcd_api,
        ttl: ctx.cluster.patroni.leader_lease_seconds,
        loop_wait: ctx.cluster.patroni.sync_period_seconds,
    };
    let text = serde_json::to_string_pretty(&config).expect("the fencer config serialises");
    let file = paths_config(&paths);
    if std::fs::read_to_string(&file).ok().as_deref() != Some(&text) {
        std::fs::write(&file, text).map_err(io("writing", &file))?;
    }
    Ok(())
}

/// The fencer's pid when it runs.
pub fn pid(paths: &MemberPaths) -> Option<u32> {
    let marker = paths_config(paths);
    system::read_pid(&pid_file(paths)).filter(|pid| system::alive(*pid, &lossy(&marker)))
}

/// Starts the member's fencer unless it runs.
pub fn start(ctx: &Context, record: &MemberRecord) -> Result<()> {
    let paths = ctx.layout.member(&record.name);
    if pid(&paths).is_some() {
        return Ok(());
    }
    let (program, args) = program()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .arg(paths_config(&paths))
        .current_dir(&paths.dir);
    system::clear_libpq_env(&mut command);
    // As the invoking user, not the server user: it presents the admin client certificate
    // to Patroni, which only `tusk`'s user may read. (It can signal the server user's
    // processes: that user is either the invoking one or `tusk` runs as root.)
    let what = format!("the fencer of {}", record.name);
    let log = paths.dir.join("fencer.log");
    let pid = system::spawn_detached(
        &what,
        command,
        &log,
        &pid_file(&paths),
        &ctx.run_as.invoking(),
    )?;
    // It reads its settings and certificates at once: a fencer that cannot guard says so
    // here, not by being silently absent later.
    let start = Instant::now();
    while start.elapsed() < STARTUP {
        if std::fs::read_to_string(&log).is_ok_and(|text| text.contains(&guarding(&record.name))) {
            return Ok(());
        }
        if !system::alive(pid, &lossy(&paths_config(&paths))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(Error::Exited {
        what,
        log: log.clone(),
        tail: system::log_tail(&log, 10),
    })
}

/// The line a fencer logs once it guards `member`.
fn guarding(member: &str) -> String {
    format!("guarding {member} ")
}

/// Stops the member's fencer (after its Patroni, so a primary is never left unguarded).
pub fn stop(paths: &MemberPaths) {
    if let Some(pid) = pid(paths) {
        system::terminate(pid, &lossy(&paths_config(paths)), Duration::from_secs(5));
    }
    let _ = std::fs::remove_file(pid_file(paths));
}

/// The fencer program and its leading arguments: `tusk local fence` when this is the `tusk`
/// binary; otherwise (tests, the chaos runner) the `tusk-fencer` binary built beside it, or
/// one on the PATH.
fn program() -> Result<(PathBuf, Vec<&'static str>)> {
    let me = std::env::current_exe().map_err(io("locating", "the running program"))?;
    if me.file_stem().is_some_and(|stem| stem == "tusk") {
        return Ok((me, vec!["local", "fence"]));
    }
    // Test binaries live in target/<profile>/deps, the package's binaries one level up.
    let beside = me.parent().into_iter().flat_map(|dir| {
        [dir.to_path_buf(), dir.join("..")]
            .into_iter()
            .map(|d| d.join("tusk-fencer"))
    });
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("tusk-fencer"))
                .collect()
        })
        .unwrap_or_default();
    beside
        .chain(on_path)
        .find(|candidate| candidate.is_file())
        .map(|found| (found, Vec::new()))
        .ok_or_else(|| Error::Os {
            action: "locating the member fencer".into(),
            reason: format!(
                "no `tusk-fencer` beside {} or on the PATH (run `tusk local`, which fences with \
                 itself, or build the tusk-local package's binaries)",
                me.display()
            ),
        })
}

fn lossy(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The fencer's loop: runs until it is terminated. Reads `config_file` again when it changes.
pub fn run(config_file: &Path) -> Result<()> {
    let read_config = || -> Result<FencerConfig> {
        let text = std::fs::read_to_string(config_file).map_err(io("reading", config_file))?;
        serde_json::from_str(&text).map_err(|e| Error::Os {
            action: format!("parsing {}", config_file.display()),
            reason: e.to_string(),
        })
    };
    let mut config = read_config()?;
    let mut guard = Guard::new(&config)?;
    log(&format!(
        "{}(lease margin {} ms)",
        guarding(&config.member),
        guard.fence_policy().margin.as_millis()
    ));
    loop {
        let started = Instant::now();
        if let Ok(latest) = read_config() {
            if latest != config {
                guard.reconfigure(&latest)?;
                config = latest;
                log("configuration changed");
            }
        }
        guard.poll();
        std::thread::sleep(POLL.saturating_sub(started.elapsed()));
    }
}

fn log(message: &str) {
    let now = time::OffsetDateTime::now_utc();
    eprintln!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} UTC fencer: {message}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    );
}

/// One member's fence and the clients it reads with.
struct Guard {
    config: FencerConfig,
    paths: MemberPaths,
    fence: Fence,
    etcd: ureq::Agent,
    patroni: PatroniApi,
    /// The postmaster the fence currently judges: a new one starts from an empty fence.
    postmaster: Option<u32>,
}

impl Guard {
    fn new(config: &FencerConfig) -> Result<Guard> {
        let layout = Layout::new(&config.state_dir);
        Ok(Guard {
            paths: layout.member(&config.member),
            fence: Fence::new(FencePolicy::for_timings(config.ttl, config.loop_wait)),
            etcd: ureq::Agent::config_builder()
                .proxy(None)
                .http_status_as_error(false)
                .timeout_global(Some(ANSWER_TIMEOUT))
                .build()
                .into(),
            patroni: PatroniApi::with_timeout(&layout, config.rest_port, ANSWER_TIMEOUT)?,
            config: config.clone(),
            postmaster: None,
        })
    }

    /// New settings; what the fence knows about the running primary stays.
    fn reconfigure(&mut self, config: &FencerConfig) -> Result<()> {
        let fresh = Guard::new(config)?;
        self.fence.set_policy(fresh.fence_policy());
        self.etcd = fresh.etcd;
        self.patroni = fresh.patroni;
        self.paths = fresh.paths;
        self.config = fresh.config;
        Ok(())
    }

    fn fence_policy(&self) -> FencePolicy {
        FencePolicy::for_timings(self.config.ttl, self.config.loop_wait)
    }

    fn poll(&mut self) {
        let primary = self.primary_postmaster();
        if primary.is_none() || primary != self.postmaster {
            self.fence.reset();
            self.postmaster = primary;
        }
        let Some(postmaster) = primary else {
            return;
        };
        self.fence.observe(self.read_lease());
        let Verdict::CheckPatroni { reason } = self.fence.verdict(true, Instant::now()) else {
            return;
        };
        match self.ask_patroni() {
            PatroniAnswer::FailsafeLeader => {}
            PatroniAnswer::Other(answer) => {
                kill_postgres(postmaster);
                log(&format!(
                    "FENCED: killed PostgreSQL (postmaster {postmaster}) of {}: {reason}; {answer}",
                    self.config.member
                ));
                self.fence.reset();
            }
        }
    }

    /// The postmaster's pid when this member's PostgreSQL runs as a primary: running, and no
    /// `standby.signal`/`recovery.signal` (Patroni writes one for every replica and standby
    /// leader). Files, so a frozen or busy PostgreSQL is judged as quickly as a healthy one.
    fn primary_postmaster(&self) -> Option<u32> {
        let data = self.paths.data_dir();
        let pid = crate::members::pids(&self.paths).postgres?;
        let recovering = ["standby.signal", "recovery.signal"]
            .iter()
            .any(|signal| data.join(signal).exists());
        (!recovering).then_some(pid)
    }

    fn read_lease(&self) -> LeaseRead {
        let key = format!("{NAMESPACE}/{}/leader", self.config.scope);
        let sent = Instant::now();
        let read = match self.config.etcd_api {
            EtcdApi::V2 => self.read_v2(&key),
            EtcdApi::V3 => self.read_v3(&key),
        };
        match read {
            Some(Some((holder, remaining))) if holder == self.config.member => LeaseRead::Mine {
                sent,
                // etcd rounds the remaining TTL up to whole seconds.
                remaining: remaining.saturating_sub(Duration::from_secs(1)),
            },
            Some(Some((holder, _))) => LeaseRead::NotMine {
                holder: Some(holder),
            },
            Some(None) => LeaseRead::NotMine { holder: None },
            None => LeaseRead::Unknown,
        }
    }

    /// `Some(None)` when there is no key, `None` when etcd did not answer usefully.
    fn read_v2(&self, key: &str) -> Option<Option<(String, Duration)>> {
        let url = format!("http://{}/v2/keys{key}", self.config.etcd);
        let mut response = self.etcd.get(&url).call().ok()?;
        if response.status() == 404 {
            return Some(None);
        }
        if !response.status().is_success() {
            return None;
        }
        let body: Value = response.body_mut().read_json().ok()?;
        let node = &body["node"];
        let holder = node["value"].as_str()?.to_string();
        let ttl = node["ttl"].as_u64()?;
        Some(Some((holder, Duration::from_secs(ttl))))
    }

    fn read_v3(&self, key: &str) -> Option<Option<(String, Duration)>> {
        let engine = base64::engine::general_purpose::STANDARD;
        let range = self.v3("kv/range", json!({ "key": engine.encode(key) }))?;
        let Some(kv) = range["kvs"].as_array().and_then(|kvs| kvs.first()) else {
            return Some(None);
        };
        let holder = String::from_utf8(engine.decode(kv["value"].as_str()?).ok()?).ok()?;
        let lease = kv["lease"].as_str()?;
        let lease = self.v3("lease/timetolive", json!({ "ID": lease }))?;
        // The gateway writes int64s as strings; -1 is an expired lease.
        let ttl = match &lease["TTL"] {
            Value::String(s) => s.parse::<i64>().ok()?,
            other => other.as_i64()?,
        };
        Some(Some((holder, Duration::from_secs(ttl.max(0) as u64))))
    }

    fn v3(&self, call: &str, body: Value) -> Option<Value> {
        let url = format!("http://{}/v3/{call}", self.config.etcd);
        let mut response = self.etcd.post(&url).send_json(body).ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.body_mut().read_json().ok()
    }

    fn ask_patroni(&self) -> PatroniAnswer {
        match self.patroni.status(&self.config.host) {
            Ok(status) => PatroniAnswer::from_status(&status),
            Err(e) => PatroniAnswer::Other(format!("Patroni did not answer: {e}")),
        }
    }
}

/// Stops every process of the instance at once so no backend acknowledges another commit:
/// the postmaster is stopped first (it can fork no replacement), then its children and the
/// postmaster are killed. SIGKILL also reaches stopped (frozen) processes.
fn kill_postgres(postmaster: u32) {
    system::signal(postmaster, Signal::SIGSTOP);
    for child in children(postmaster) {
        system::signal(child, Signal::SIGKILL);
    }
    system::signal(postmaster, Signal::SIGKILL);
    // Gone (or a zombie its frozen parent has not reaped) before the next poll looks.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5)
        && system::process_state(postmaster).is_some_and(|state| state != 'Z')
    {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pids whose parent is `parent`, from /proc.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // Fields after the parenthesised command: state, ppid, ...
                    let rest = stat.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // A stand-in process tree: a shell (the "postmaster") with a child, both frozen first
        // as a frozen member would be; SIGKILL must still take both.
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
        system::signal(pid, Signal::SIGSTOP);
        kill_postgres(pid);
        let status = parent.wait().expect("the parent is reaped");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc_sigkill()));
        let gone = Instant::now();
        while std::path::Path::new(&format!("/proc/{}", kids[0])).exists()
            && gone.elapsed() < Duration::from_secs(5)
        {
            // The orphaned child is reaped by init; its /proc entry goes with it.
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !std::path::Path::new(&format!("/proc/{}", kids[0])).exists(),
            "child {} survived",
            kids[0]
        );
    }

    fn libc_sigkill() -> i32 {
        Signal::SIGKILL as i32
    }

    #[test]
    fn the_config_round_trips_through_its_file_format() {
        let config = FencerConfig {
            state_dir: "/tmp/s".into(),
            member: "hippo-0".into(),
            host: "127.0.0.2".into(),
            rest_port: 8008,
            scope: "hippo-ha".into(),
            etcd: "127.0.0.1:2379".into(),
            etcd_api: EtcdApi::V2,
            ttl: 15,
            loop_wait: 5,
        };
        let text = serde_json::to_string(&config).unwrap();
        assert!(text.contains(r#""etcd_api":"v2""#), "{text}");
        assert_eq!(serde_json::from_str::<FencerConfig>(&text).unwrap(), config);
    }
}
