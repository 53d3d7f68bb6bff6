//! The member fencer both runtimes run beside each Patroni (`tusk local fence` for local
//! members, `tusk fence` in a container of each instance pod): it stops the member's
//! PostgreSQL when it runs as a primary whose leader lease can no longer be valid. The rule
//! and why it is needed are in [`policy`]; [`Guard`] applies it once per poll, reading the
//! lease from the DCS ([`etcd`], [`kubernetes`]), asking the member's Patroni, and killing
//! the postmaster and its backends ([`process`]).
//!
//! Touches only the one PostgreSQL instance whose data directory it is given, and reads the
//! DCS and the member's Patroni REST API.

pub mod etcd;
pub mod kubernetes;
pub mod policy;
pub mod process;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use policy::{Fence, FencePolicy, LeaseRead, PatroniAnswer, Verdict};

/// How often the lease is read. Part of [`tusk_api::model::FENCE_MARGIN_MILLIS`].
pub const POLL: Duration = Duration::from_millis(250);
/// How long one read of the DCS or one question to Patroni may take. A frozen Patroni accepts
/// the connection (the kernel does) and never answers: this is how long that takes to tell.
/// Patroni's own leader race waits 2 s for a member's answer, so the fencer acts first.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the member's leader lease is read from.
pub trait LeaseSource {
    /// One read; [`LeaseRead::Unknown`] when the DCS did not answer usefully.
    fn read(&self) -> LeaseRead;
}

/// The member's own Patroni, asked before a fence.
pub trait PatroniStatus {
    fn ask(&self) -> PatroniAnswer;
}

/// One member's fence, its sources and the instance it guards.
pub struct Guard {
    pub member: String,
    pub data_dir: PathBuf,
    pub lease: Box<dyn LeaseSource>,
    pub patroni: Box<dyn PatroniStatus>,
    fence: Fence,
    /// The postmaster the fence currently judges: a new one starts from an empty fence.
    postmaster: Option<u32>,
}

impl Guard {
    pub fn new(
        member: String,
        data_dir: PathBuf,
        policy: FencePolicy,
        lease: Box<dyn LeaseSource>,
        patroni: Box<dyn PatroniStatus>,
    ) -> Guard {
        Guard {
            member,
            data_dir,
            lease,
            patroni,
            fence: Fence::new(policy),
            postmaster: None,
        }
    }

    /// New timings; what the fence knows about the running primary stays.
    pub fn set_policy(&mut self, policy: FencePolicy) {
        self.fence.set_policy(policy);
    }

    /// The line a fencer logs once it guards its member (`tusk local` waits for it).
    pub fn guarding_line(member: &str) -> String {
        format!("guarding {member} ")
    }

    /// One poll: returns what was done when PostgreSQL was fenced, for the log.
    pub fn poll(&mut self) -> Option<String> {
        let primary = process::primary_postmaster(&self.data_dir);
        if primary.is_none() || primary != self.postmaster {
            self.fence.reset();
            self.postmaster = primary;
        }
        let postmaster = primary?;
        self.fence.observe(self.lease.read());
        let Verdict::CheckPatroni {
            reason,
            spare_running_leader,
        } = self.fence.verdict(true, Instant::now())
        else {
            return None;
        };
        let answer = match self.patroni.ask() {
            PatroniAnswer::FailsafeLeader => return None,
            PatroniAnswer::RunningLeader if spare_running_leader => return None,
            PatroniAnswer::RunningLeader => {
                "Patroni reports a running leader, failsafe mode not active".to_owned()
            }
            PatroniAnswer::Other(answer) => answer,
        };
        process::kill_postgres(postmaster);
        self.fence.reset();
        Some(format!(
            "FENCED: killed PostgreSQL (postmaster {postmaster}) of {}: {reason}; {answer}",
            self.member
        ))
    }
}

/// A line for the fencer's log, with a UTC timestamp (stderr goes to the log).
pub fn log(message: &str) {
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

/// An HTTP client for the DCS and Patroni: every request gives up after [`ANSWER_TIMEOUT`],
/// never through a proxy from the environment, non-2xx answers returned as they are.
pub fn agent(tls: Option<ureq::tls::TlsConfig>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(ANSWER_TIMEOUT));
    if let Some(tls) = tls {
        config = config.tls_config(tls);
    }
    config.build().into()
}

/// Asks Patroni's `GET /patroni` at `url` with `agent`.
pub struct PatroniRest {
    pub agent: ureq::Agent,
    pub url: String,
}

impl PatroniStatus for PatroniRest {
    fn ask(&self) -> PatroniAnswer {
        let answer = self.agent.get(&self.url).call();
        let status =
            answer.and_then(|mut response| response.body_mut().read_json::<serde_json::Value>());
        match status {
            Ok(status) => PatroniAnswer::from_status(&status),
            Err(e) => PatroniAnswer::Other(format!("Patroni did not answer at {}: {e}", self.url)),
        }
    }
}
