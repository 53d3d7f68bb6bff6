//! Default images, one per component and PostgreSQL major, from the operator's environment
//! (`RELATED_IMAGE_POSTGRES_15`, `RELATED_IMAGE_PGBACKREST`, `RELATED_IMAGE_PGBOUNCER`,
//! `RELATED_IMAGE_EXPORTER`, `RELATED_IMAGE_FENCER`), as the PGO family does for air-gapped
//! and OLM installs. The fencer is the `tusk` binary: the operator's own image.
//! `spec.image` and the per-component `image` fields override them.
//!
//! The database image holds every program the operator's pods run (Patroni and PostgreSQL,
//! pgBackRest, PgBouncer, postgres_exporter, the reload sidecars' shell tools), so without a
//! `RELATED_IMAGE_PGBACKREST`, `_PGBOUNCER` or `_EXPORTER` each component runs the cluster's
//! own database image. For pgBackRest that is more than a convenience: the sidecar, the repo
//! host and the database container's `archive_command` talk pgBackRest's protocol to each
//! other, which requires the same pgBackRest version on every side, and the database image of
//! each PostgreSQL major comes from its own Debian release.

use std::collections::BTreeMap;

use tusk_api::ValidatedCluster;

/// Image used when neither the spec nor the environment names one.
pub const FALLBACK_REGISTRY: &str = "ghcr.io/tusk-rs";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// Database image per PostgreSQL major.
    pub postgres: BTreeMap<u32, String>,
    /// Component images when the environment names them; `None`: the cluster's database image.
    pub pgbackrest: Option<String>,
    pub pgbouncer: Option<String>,
    pub exporter: Option<String>,
    /// The instance pods' `fencer` container: the operator's image of this version.
    pub fencer: String,
}

impl Default for Images {
    fn default() -> Self {
        Self::from_vars(std::iter::empty::<(String, String)>())
    }
}

impl Images {
    /// Reads `RELATED_IMAGE_*` from the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    /// Reads `RELATED_IMAGE_*` from `vars` (testable without touching the environment).
    pub fn from_vars<K: AsRef<str>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut postgres = BTreeMap::new();
        for major in tusk_api::types::MIN_POSTGRES_VERSION..=tusk_api::types::MAX_POSTGRES_VERSION {
            postgres.insert(
                major as u32,
                format!("{FALLBACK_REGISTRY}/postgres:{major}"),
            );
        }
        let mut images = Images {
            postgres,
            pgbackrest: None,
            pgbouncer: None,
            exporter: None,
            fencer: format!(
                "{FALLBACK_REGISTRY}/tusk-operator:{}",
                env!("CARGO_PKG_VERSION")
            ),
        };
        for (k, v) in vars {
            let k = k.as_ref();
            let v: String = v.into();
            if v.is_empty() {
                continue;
            }
            if let Some(major) = k
                .strip_prefix("RELATED_IMAGE_POSTGRES_")
                .and_then(|m| m.parse::<u32>().ok())
            {
                images.postgres.insert(major, v);
            } else if k == "RELATED_IMAGE_PGBACKREST" {
                images.pgbackrest = Some(v);
            } else if k == "RELATED_IMAGE_PGBOUNCER" {
                images.pgbouncer = Some(v);
            } else if k == "RELATED_IMAGE_EXPORTER" {
                images.exporter = Some(v);
            } else if k == "RELATED_IMAGE_FENCER" {
                images.fencer = v;
            }
        }
        images
    }

    /// The database container's image for `cluster`.
    pub fn database(&self, cluster: &ValidatedCluster) -> String {
        cluster.image.clone().unwrap_or_else(|| {
            self.postgres
                .get(&cluster.postgres_version)
                .cloned()
                .unwrap_or_else(|| {
                    format!("{FALLBACK_REGISTRY}/postgres:{}", cluster.postgres_version)
                })
        })
    }

    /// The pgBackRest image (sidecar, repo host, backup Jobs) for `cluster`:
    /// `spec.backups.pgbackrest.image`, else `RELATED_IMAGE_PGBACKREST`, else the cluster's
    /// database image.
    pub fn pgbackrest(&self, cluster: &ValidatedCluster) -> String {
        cluster
            .backups
            .as_ref()
            .and_then(|b| b.image.clone())
            .or_else(|| self.pgbackrest.clone())
            .unwrap_or_else(|| self.database(cluster))
    }

    /// `spec.proxy.pgBouncer.image`, else `RELATED_IMAGE_PGBOUNCER`, else the database image.
    pub fn pgbouncer(&self, cluster: &ValidatedCluster) -> String {
        cluster
            .pgbouncer
            .as_ref()
            .and_then(|b| b.image.clone())
            .or_else(|| self.pgbouncer.clone())
            .unwrap_or_else(|| self.database(cluster))
    }

    /// `spec.monitoring.pgmonitor.exporter.image`, else `RELATED_IMAGE_EXPORTER`, else the
    /// database image.
    pub fn exporter(&self, cluster: &ValidatedCluster) -> String {
        cluster
            .exporter
            .as_ref()
            .and_then(|e| e.image.clone())
            .or_else(|| self.exporter.clone())
            .unwrap_or_else(|| self.database(cluster))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults_per_major() {
        let images = Images::from_vars([
            ("RELATED_IMAGE_POSTGRES_15", "registry.local/pg:15.8"),
            ("RELATED_IMAGE_PGBOUNCER", "registry.local/pgbouncer:1.23"),
            ("UNRELATED", "x"),
        ]);
        assert_eq!(images.postgres[&15], "registry.local/pg:15.8");
        assert_eq!(
            images.postgres[&16],
            format!("{FALLBACK_REGISTRY}/postgres:16")
        );
        assert_eq!(
            images.pgbouncer.as_deref(),
            Some("registry.local/pgbouncer:1.23")
        );
        // Unset or empty: the cluster's database image, decided per cluster.
        assert_eq!(images.pgbackrest, None);
        assert_eq!(
            Images::from_vars([("RELATED_IMAGE_EXPORTER", "")]).exporter,
            None
        );
    }
}
