//! The state directory of one local cluster: where every file lives ([`Layout`]), which
//! members exist and on which loopback address ([`State`], `state.json`), and the loopback
//! network they share ([`Network`]). Touches only files under the state directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tusk_config::patroni::EtcdApi;

use crate::error::{io, Error, Result};

/// First three octets of the members' loopback addresses, e.g. `127.0.0`: etcd is `.1`,
/// members `.2` and up (Patroni refuses to advertise 127.0.0.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network(String);

/// Host number of etcd inside the network.
const ETCD_HOST: u8 = 1;
/// Host number of the first member.
pub const FIRST_MEMBER_HOST: u8 = 2;
/// Host number of PgBouncer, reserved so no member ever takes it.
pub const PGBOUNCER_HOST: u8 = 250;

impl Network {
    /// Parses `127.x.y`; anything outside 127.0.0.0/8 is refused so no listener leaves the
    /// loopback interface.
    pub fn parse(text: &str) -> Result<Network> {
        let invalid = |reason: &str| Error::InvalidNetwork {
            network: text.into(),
            reason: reason.into(),
        };
        let octets: Vec<&str> = text.split('.').collect();
        if octets.len() != 3 || octets.iter().any(|o| o.parse::<u8>().is_err()) {
            return Err(invalid("expected three octets such as 127.0.0"));
        }
        if octets[0] != "127" {
            return Err(invalid("must be inside 127.0.0.0/8 (loopback only)"));
        }
        Ok(Network(text.into()))
    }

    pub fn host(&self, number: u8) -> String {
        format!("{}.{number}", self.0)
    }

    pub fn etcd_host(&self) -> String {
        self.host(ETCD_HOST)
    }

    pub fn pgbouncer_host(&self) -> String {
        self.host(PGBOUNCER_HOST)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One member as recorded: its name is stable for its whole life (data dir, certificates and
/// the DCS key are named after it), its host number too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub name: String,
    pub set: String,
    pub host_number: u8,
}

/// `state.json`: what `up` created, read by every other command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub cluster: String,
    pub network: Network,
    pub members: Vec<MemberRecord>,
    /// The etcd API the cluster's Patroni keeps its keys in, chosen when the cluster was
    /// created and kept for its life (the two APIs are separate key spaces). Clusters created
    /// before it was recorded used v3.
    #[serde(default = "legacy_etcd_api")]
    pub etcd_api: EtcdApi,
}

fn legacy_etcd_api() -> EtcdApi {
    EtcdApi::V3
}

impl State {
    pub fn host(&self, member: &MemberRecord) -> String {
        self.network.host(member.host_number)
    }

    pub fn member(&self, name: &str) -> Result<&MemberRecord> {
        self.members
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::UnknownMember {
                name: name.into(),
                known: self
                    .members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The lowest host number no member uses (PgBouncer's is never handed out).
    pub fn free_host_number(&self) -> u8 {
        (FIRST_MEMBER_HOST..=u8::MAX)
            .filter(|n| *n != PGBOUNCER_HOST)
            .find(|n| self.members.iter().all(|m| m.host_number != *n))
            .expect("fewer than 250 members")
    }
}

/// Paths inside the state directory.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    /// Absolute, because every path is written into configuration files that servers read
    /// from their own working directories.
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        let root = root.into();
        Layout {
            root: std::path::absolute(&root).unwrap_or(root),
        }
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// The last manifest `up` applied (the desired state `status` and `secret` read).
    pub fn manifest(&self) -> PathBuf {
        self.root.join("manifest.yaml")
    }
    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }
    /// Client certificate `tusk` presents to Patroni's REST API.
    pub fn admin_tls_dir(&self) -> PathBuf {
        self.root.join("ca/admin")
    }
    pub fn etcd_dir(&self) -> PathBuf {
        self.root.join("etcd")
    }
    pub fn pgbackrest_dir(&self) -> PathBuf {
        self.root.join("pgbackrest")
    }
    pub fn member_dir(&self, name: &str) -> PathBuf {
        self.root.join("members").join(name)
    }
    pub fn member(&self, name: &str) -> MemberPaths {
        MemberPaths {
            dir: self.member_dir(name),
        }
    }
}

/// Paths of one member.
#[derive(Clone, Debug)]
pub struct MemberPaths {
    pub dir: PathBuf,
}

impl MemberPaths {
    pub fn config(&self) -> PathBuf {
        self.dir.join("patroni.yaml")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("patroni.log")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("patroni.pid")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("pgdata")
    }
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub fn server_tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }
    pub fn replication_tls_dir(&self) -> PathBuf {
        self.dir.join("tls/replication")
    }
    pub fn pgbackrest_conf(&self) -> PathBuf {
        self.dir.join("pgbackrest.conf")
    }
}

pub fn load(layout: &Layout) -> Result<Option<State>> {
    let path = layout.state_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("reading", &path)(e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::ParseState {
            path,
            reason: e.to_string(),
        })
}

/// Loads the state a command other than `up` needs; its absence is an error.
pub fn require(layout: &Layout) -> Result<State> {
    load(layout)?.ok_or_else(|| Error::StateDir {
        path: layout.root.clone(),
        reason: "no cluster here (run `tusk local up` first)".into(),
    })
}

/// Writes `state.json` atomically (rename), so a crash never leaves half a file.
pub fn save(layout: &Layout, state: &State) -> Result<()> {
    let path = layout.state_file();
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(state).expect("state serializes");
    std::fs::write(&tmp, text).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("renaming", &path))
}

/// The state directory a command uses: `--state-dir`, else `./.tusk/<name of -f FILE>`,
/// else the only cluster under `./.tusk`.
pub fn resolve_state_dir(explicit: Option<&Path>, manifest: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_owned());
    }
    let base = PathBuf::from(".tusk");
    if let Some(file) = manifest {
        return Ok(base.join(manifest_name(file)?));
    }
    let candidates: Vec<PathBuf> = std::fs::read_dir(&base)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("state.json").is_file())
                .collect()
        })
        .unwrap_or_default();
    match candidates.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(Error::StateDir {
            path: base,
            reason: "no cluster found; pass --state-dir or -f FILE".into(),
        }),
        _ => Err(Error::StateDir {
            path: base,
            reason: "several clusters found; pass --state-dir or -f FILE".into(),
        }),
    }
}

/// `metadata.name` of a manifest, without validating the rest: `down` must work even when
/// the file has since become invalid.
pub fn manifest_name(file: &Path) -> Result<String> {
    let text = std::fs::read_to_string(file).map_err(|source| Error::ReadManifest {
        path: file.into(),
        source,
    })?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| Error::InvalidManifest {
            path: file.into(),
            errors: e.to_string(),
        })?;
    doc["metadata"]["name"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::InvalidManifest {
            path: file.into(),
            errors: "metadata.name: required".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_from_before_the_etcd_api_was_recorded_means_v3() {
        let old = r#"{"cluster":"c","network":"127.0.0","members":[]}"#;
        let state: State = serde_json::from_str(old).unwrap();
        assert_eq!(state.etcd_api, EtcdApi::V3);
        let new: State = serde_json::from_str(
            &serde_json::to_string(&State {
                etcd_api: EtcdApi::V2,
                ..state
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(new.etcd_api, EtcdApi::V2, "the choice survives a save");
    }

    #[test]
    fn network_must_be_three_loopback_octets() {
        assert_eq!(Network::parse("127.31.7").unwrap().host(2), "127.31.7.2");
        assert!(Network::parse("10.0.0").is_err());
        assert!(Network::parse("127.0").is_err());
        assert!(Network::parse("127.0.300").is_err());
    }

    #[test]
    fn free_host_numbers_fill_gaps() {
        let member = |n| MemberRecord {
            name: format!("m{n}"),
            set: "s".into(),
            host_number: n,
        };
        let state = State {
            cluster: "c".into(),
            network: Network::parse("127.0.0").unwrap(),
            members: vec![member(2), member(4)],
            etcd_api: EtcdApi::V2,
        };
        assert_eq!(state.free_host_number(), 3);
        let crowded = State {
            members: (FIRST_MEMBER_HOST..PGBOUNCER_HOST).map(member).collect(),
            ..state
        };
        assert_eq!(crowded.free_host_number(), PGBOUNCER_HOST + 1);
    }
}
