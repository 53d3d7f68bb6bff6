//! The fencing rule: when a running primary must stop acknowledging writes because its
//! leader lease can no longer be valid. Pure: [`crate::Guard`] reads the lease from the DCS,
//! asks Patroni and kills PostgreSQL; this module only decides. No I/O.
//!
//! Patroni demotes a primary whose leader key it cannot renew, but only while Patroni itself
//! runs. A Patroni that is frozen (SIGSTOP, a stuck host, a starved container) leaves
//! PostgreSQL serving as primary after its lease expired and another member was promoted:
//! two primaries, and every write acknowledged by the old one is lost when it rejoins. The
//! fencer is a separate process beside PostgreSQL that watches the lease itself and stops
//! PostgreSQL before the lease runs out.
//!
//! When may a replica be promoted? Not before the leader key has expired in the DCS, and then
//! only after Patroni's leader race found no member answering as a primary. So a primary whose
//! PostgreSQL has held the lease (a bootstrapping primary has none yet, and no replica races
//! for an uninitialised cluster) is fenced:
//! - a [`FencePolicy::margin`] before the lease expires, as last read from the DCS, when no
//!   later read showed it renewed;
//! - at once when the DCS names another leader;
//! - unless its own Patroni answers that it is running as the leader in failsafe mode: the
//!   DCS is gone for everyone and every member heard from it within the lease, the one case in
//!   which serving without a lease is Patroni's own, safe decision. Tusk's `retry_timeout`
//!   ([`tusk_api::model::retry_timeout_seconds`]) makes Patroni decide that before the
//!   fencer's margin begins. And when the DCS answers that nobody holds the lease, a
//!   Patroni that answers as a running leader is spared too: it is alive and re-taking the
//!   lease (failsafe mode ends as soon as the DCS is back, before the key is re-taken), and
//!   Patroni's leader race stands back while a primary answers. A frozen Patroni answers
//!   nothing and is fenced.

use std::time::{Duration, Instant};

/// How early before the lease's expiry the fencer acts: enough for one poll, one
/// unanswered question to Patroni and the kill ([`tusk_api::model::FENCE_MARGIN_MILLIS`]),
/// and clear of the normal renewal: renewed to `ttl` every `loop_wait`, a healthy primary's
/// lease never drops much below `ttl - loop_wait`, so the margin is at most a quarter of that
/// slack. With a slack under 6 s the margin is smaller than what the fencer needs and it
/// may act up to a second after the expiry; Tusk's defaults leave 10 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FencePolicy {
    pub margin: Duration,
}

impl FencePolicy {
    /// The policy for Patroni's `ttl` and `loop_wait` (seconds).
    pub fn for_timings(ttl: u32, loop_wait: u32) -> FencePolicy {
        let slack = Duration::from_secs(u64::from(ttl.saturating_sub(loop_wait)));
        let wanted = Duration::from_millis(tusk_api::model::FENCE_MARGIN_MILLIS);
        FencePolicy {
            margin: wanted.min(slack / 4).max(Duration::from_millis(250)),
        }
    }
}

/// The leader key as one read of the DCS saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseRead {
    /// This member holds the key; it expires `remaining` after `sent` (when the request left,
    /// so the estimate errs early).
    Mine { sent: Instant, remaining: Duration },
    /// Another member holds the key, or nobody does.
    NotMine { holder: Option<String> },
    /// The DCS did not answer (unreachable, timed out, refused).
    Unknown,
}

/// What the fencer should do on this poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing: not a primary, or its lease is valid.
    Serve,
    /// The lease may be gone: unless Patroni answers as the leader in failsafe mode now (or,
    /// with `spare_running_leader`, as a running leader at all), fence. The reason is for the
    /// log.
    CheckPatroni {
        reason: String,
        /// The DCS answered that nobody holds the lease: a running Patroni that answers as the
        /// leader is re-taking it (as after a DCS outage, when failsafe mode has just ended),
        /// and no replica races while that primary answers its REST API.
        spare_running_leader: bool,
    },
}

/// The fencer's memory between polls: until when this member's lease is known to be valid.
/// The caller [`Fence::reset`]s it whenever its PostgreSQL is not running as a primary, so
/// it judges one primary's run at a time.
#[derive(Debug)]
pub struct Fence {
    policy: FencePolicy,
    /// `None` until a read showed this primary holding the lease (it is not judged before).
    valid_until: Option<Instant>,
    /// Set when the DCS named another leader: fence without waiting for a deadline.
    lost_to: Option<String>,
    /// The last answer of the DCS was that nobody holds the lease.
    vacant: bool,
}

impl Fence {
    pub fn new(policy: FencePolicy) -> Fence {
        Fence {
            policy,
            valid_until: None,
            lost_to: None,
            vacant: false,
        }
    }

    /// Takes in one read of the DCS. An unanswered read changes nothing: the last known
    /// expiry stands, and runs out on its own.
    pub fn observe(&mut self, read: LeaseRead) {
        match read {
            LeaseRead::Mine { sent, remaining } => {
                self.lost_to = None;
                self.vacant = false;
                // The DCS is the authority: what it says now replaces any earlier read.
                self.valid_until = Some(sent + remaining.saturating_sub(self.policy.margin));
            }
            // Another holder is always a reason, at once. No holder only tells that the lease
            // ran out (or was released), which the deadline covers.
            LeaseRead::NotMine {
                holder: Some(other),
            } => self.lost_to = Some(other),
            LeaseRead::NotMine { holder: None } => {
                self.lost_to = None;
                self.vacant = true;
            }
            LeaseRead::Unknown => {}
        }
    }

    /// The verdict for a member that is (`primary`) or is not running PostgreSQL as a
    /// primary, at `now`.
    pub fn verdict(&self, primary: bool, now: Instant) -> Verdict {
        if !primary {
            return Verdict::Serve;
        }
        if let Some(other) = &self.lost_to {
            return Verdict::CheckPatroni {
                reason: format!("the DCS names {other} as the leader"),
                spare_running_leader: false,
            };
        }
        match self.valid_until {
            Some(until) if now >= until => {}
            _ => return Verdict::Serve,
        }
        Verdict::CheckPatroni {
            reason: format!(
                "the leader lease was not renewed and expires within {} ms{}",
                self.policy.margin.as_millis(),
                if self.vacant {
                    " (the DCS has no leader)"
                } else {
                    ""
                }
            ),
            spare_running_leader: self.vacant,
        }
    }

    /// New timings (the cluster's `ttl`/`loop_wait` changed); what was read stays.
    pub fn set_policy(&mut self, policy: FencePolicy) {
        self.policy = policy;
    }

    /// When PostgreSQL is not running as a primary (stopped, fenced, a replica): forget the
    /// lease, so a primary started again is judged by its own.
    pub fn reset(&mut self) {
        self.valid_until = None;
        self.lost_to = None;
        self.vacant = false;
    }
}

/// What Patroni's `GET /patroni` said about this member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatroniAnswer {
    /// Running as the primary with failsafe mode active: the DCS is gone and Patroni keeps
    /// serving on its own, checked authority. Do not fence.
    FailsafeLeader,
    /// Running as the primary, failsafe mode not active: Patroni is alive and acting on the
    /// DCS itself.
    RunningLeader,
    /// Anything else, including no answer within the timeout: a frozen Patroni answers nothing.
    Other(String),
}

impl PatroniAnswer {
    /// Reads the JSON of `GET /patroni`: `role` `master`/`primary`, `state` `running` and
    /// `failsafe_mode_is_active: true`.
    pub fn from_status(status: &serde_json::Value) -> PatroniAnswer {
        let role = status["role"].as_str().unwrap_or("");
        let state = status["state"].as_str().unwrap_or("");
        let failsafe = status["failsafe_mode_is_active"].as_bool() == Some(true);
        let leader = matches!(role, "master" | "primary") && state == "running";
        if leader && failsafe {
            PatroniAnswer::FailsafeLeader
        } else if leader {
            PatroniAnswer::RunningLeader
        } else {
            PatroniAnswer::Other(format!(
                "Patroni reports role {role:?}, state {state:?}, failsafe {failsafe}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_margin_stays_clear_of_renewals_and_within_bounds() {
        let ms = Duration::from_millis;
        // Tusk's defaults: ttl 15, loop_wait 5 -> 10 s of slack, the full margin.
        assert_eq!(FencePolicy::for_timings(15, 5).margin, ms(1500));
        assert_eq!(FencePolicy::for_timings(10, 2).margin, ms(1500));
        // A tight lease: a quarter of the slack.
        assert_eq!(FencePolicy::for_timings(12, 8).margin, ms(1000));
        assert_eq!(FencePolicy::for_timings(7, 5).margin, ms(500));
        // Nonsense timings never give a zero margin.
        assert_eq!(FencePolicy::for_timings(5, 10).margin, ms(250));
    }

    #[test]
    fn a_renewed_lease_keeps_the_primary_serving_until_the_margin() {
        let mut fence = Fence::new(FencePolicy { margin: secs(3) });
        let t0 = Instant::now();
        fence.observe(LeaseRead::Mine {
            sent: t0,
            remaining: secs(15),
        });
        assert_eq!(fence.verdict(true, t0 + secs(11)), Verdict::Serve);
        assert!(matches!(
            fence.verdict(true, t0 + secs(12)),
            Verdict::CheckPatroni { .. }
        ));
        // A renewal read later moves it on.
        fence.observe(LeaseRead::Mine {
            sent: t0 + secs(5),
            remaining: secs(15),
        });
        assert_eq!(fence.verdict(true, t0 + secs(16)), Verdict::Serve);
        // A replica is never fenced, whatever the lease.
        assert_eq!(fence.verdict(false, t0 + secs(60)), Verdict::Serve);
    }

    #[test]
    fn an_unanswered_read_lets_the_last_known_expiry_run_out() {
        let mut fence = Fence::new(FencePolicy { margin: secs(3) });
        let t0 = Instant::now();
        fence.observe(LeaseRead::Mine {
            sent: t0,
            remaining: secs(10),
        });
        fence.observe(LeaseRead::Unknown);
        assert_eq!(fence.verdict(true, t0 + secs(6)), Verdict::Serve);
        let Verdict::CheckPatroni {
            reason,
            spare_running_leader,
        } = fence.verdict(true, t0 + secs(7))
        else {
            panic!("an expiring lease must be checked");
        };
        assert!(reason.contains("not renewed"), "{reason}");
        // Nothing says who holds the lease: only a failsafe leader is spared.
        assert!(!spare_running_leader);
    }

    #[test]
    fn another_leader_fences_at_once_and_a_reset_forgets() {
        let mut fence = Fence::new(FencePolicy { margin: secs(3) });
        let t0 = Instant::now();
        fence.observe(LeaseRead::Mine {
            sent: t0,
            remaining: secs(15),
        });
        fence.observe(LeaseRead::NotMine {
            holder: Some("b".into()),
        });
        let Verdict::CheckPatroni {
            reason,
            spare_running_leader,
        } = fence.verdict(true, t0)
        else {
            panic!("another leader must fence");
        };
        assert!(reason.contains("names b"), "{reason}");
        assert!(!spare_running_leader, "another leader spares nobody");
        fence.reset();
        assert_eq!(fence.verdict(true, t0), Verdict::Serve);
    }

    #[test]
    fn a_vacant_lease_waits_for_the_deadline_and_spares_a_running_leader() {
        // After a DCS outage the key has expired while failsafe mode kept the primary; once
        // the DCS answers again, failsafe ends before the live Patroni re-takes the key.
        let mut fence = Fence::new(FencePolicy { margin: secs(3) });
        let t0 = Instant::now();
        fence.observe(LeaseRead::Mine {
            sent: t0,
            remaining: secs(15),
        });
        fence.observe(LeaseRead::NotMine { holder: None });
        assert_eq!(fence.verdict(true, t0 + secs(5)), Verdict::Serve);
        let Verdict::CheckPatroni {
            reason,
            spare_running_leader,
        } = fence.verdict(true, t0 + secs(13))
        else {
            panic!("an expired lease must be checked");
        };
        assert!(reason.contains("no leader"), "{reason}");
        assert!(spare_running_leader);
        // Re-taken: judged by the new lease again.
        fence.observe(LeaseRead::Mine {
            sent: t0 + secs(13),
            remaining: secs(15),
        });
        assert_eq!(fence.verdict(true, t0 + secs(14)), Verdict::Serve);
    }

    #[test]
    fn a_primary_that_never_held_the_lease_is_not_judged() {
        // Patroni bootstraps a new cluster as a primary and takes the leader key only after
        // its post-bootstrap step; no replica races meanwhile.
        let mut fence = Fence::new(FencePolicy { margin: secs(3) });
        let t0 = Instant::now();
        fence.observe(LeaseRead::NotMine { holder: None });
        fence.observe(LeaseRead::Unknown);
        assert_eq!(fence.verdict(true, t0 + secs(60)), Verdict::Serve);
        // But a primary while the DCS names another leader is judged, lease read or not
        // (a fencer started after the split).
        fence.observe(LeaseRead::NotMine {
            holder: Some("b".into()),
        });
        assert!(matches!(
            fence.verdict(true, t0),
            Verdict::CheckPatroni { .. }
        ));
    }

    #[test]
    fn patroni_answers_are_told_apart() {
        let spared = json!({"role": "master", "state": "running", "failsafe_mode_is_active": true});
        assert_eq!(
            PatroniAnswer::from_status(&spared),
            PatroniAnswer::FailsafeLeader
        );
        let patroni4 =
            json!({"role": "primary", "state": "running", "failsafe_mode_is_active": true});
        assert_eq!(
            PatroniAnswer::from_status(&patroni4),
            PatroniAnswer::FailsafeLeader
        );
        assert_eq!(
            PatroniAnswer::from_status(&json!({"role": "master", "state": "running"})),
            PatroniAnswer::RunningLeader
        );
        for status in [
            json!({"role": "master", "state": "stopping", "failsafe_mode_is_active": true}),
            json!({"role": "replica", "state": "running", "failsafe_mode_is_active": true}),
            json!({}),
        ] {
            assert!(
                matches!(PatroniAnswer::from_status(&status), PatroniAnswer::Other(_)),
                "{status}"
            );
        }
    }
}
