//! pgBackRest `configuration` projections in local mode. On Kubernetes they are Secrets and
//! ConfigMaps projected into pgBackRest's include directory, and pgBackRest appends every
//! `*.conf` file there to its configuration (e.g. an `s3.conf` holding `repo1-s3-key`).
//! Locally there is no Secret store, so a Secret or ConfigMap named `NAME` is the DIRECTORY
//! `NAME/` beside the manifest, holding one file per key, exactly what a Secret volume shows a
//! container (`kubectl create secret generic NAME --from-file=s3.conf` reads the same file).
//! `items` select keys and rename them as in Kubernetes; `optional: true` allows a missing
//! directory or key. The `*.conf` files (top level, as pgBackRest reads its include
//! directory) are appended, in file-name order, to the member's generated file.
//!
//! Everything is read and checked before `up` changes anything: a missing directory or key
//! is an error naming the field path. The contents are written to the state directory with
//! mode 0600 ([`write`]). Touches only that file.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, VolumeProjection};

use crate::error::{io, Error, Result};
use crate::state::Layout;

/// File in the state directory holding the resolved projections of `spec.backups`.
const BACKUPS_FILE: &str = "pgbackrest-configuration.conf";
/// The same for `spec.dataSource.pgbackrest.configuration`.
const DATA_SOURCE_FILE: &str = "data-source-configuration.conf";

/// Which `configuration` list a resolution is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Projected {
    Backups,
    DataSource,
}

impl Projected {
    fn file(self, layout: &Layout) -> PathBuf {
        layout.root.join(match self {
            Projected::Backups => BACKUPS_FILE,
            Projected::DataSource => DATA_SOURCE_FILE,
        })
    }
}

/// The `*.conf` text `projections` (the list at `field`) contribute, read from directories
/// beside the manifest (`manifest_dir`).
pub fn resolve(
    projections: &[VolumeProjection],
    manifest_dir: &Path,
    field: &str,
) -> Result<String> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for (i, projection) in projections.iter().enumerate() {
        let (kind, name, items, optional) = if let Some(secret) = &projection.secret {
            ("secret", &secret.name, &secret.items, secret.optional)
        } else if let Some(config_map) = &projection.config_map {
            (
                "configMap",
                &config_map.name,
                &config_map.items,
                config_map.optional,
            )
        } else {
            // Downward API and service account tokens carry no pgBackRest options.
            continue;
        };
        let at = format!("{field}[{i}].{kind}");
        let optional = optional.unwrap_or(false);
        let dir = manifest_dir.join(name);
        if !dir.is_dir() {
            if optional {
                continue;
            }
            return Err(Error::Unsupported {
                field: format!("{at}.name"),
                reason: format!(
                    "no directory {} (locally a {kind} is a directory beside the manifest \
                     with one file per key)",
                    dir.display()
                ),
            });
        }
        files.extend(selected_files(&dir, items.as_deref(), optional, &at)?);
    }
    files.retain(|(target, _)| target.ends_with(".conf") && !target.contains('/'));
    files.sort();
    let mut text = String::new();
    for (target, path) in files {
        let content = std::fs::read_to_string(&path).map_err(io("reading", &path))?;
        text.push_str(&format!(
            "\n# {target} (configuration projection)\n{content}"
        ));
        if !content.ends_with('\n') {
            text.push('\n');
        }
    }
    Ok(text)
}

/// `(target file name, source file)` of one projection: every key of the directory, or the
/// listed `items` under their `path`.
pub(crate) fn selected_files(
    dir: &Path,
    items: Option<&[KeyToPath]>,
    optional: bool,
    at: &str,
) -> Result<Vec<(String, PathBuf)>> {
    let Some(items) = items else {
        let entries = std::fs::read_dir(dir).map_err(io("reading", dir))?;
        return Ok(entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect());
    };
    let mut files = Vec::new();
    for (j, item) in items.iter().enumerate() {
        let source = dir.join(&item.key);
        if source.is_file() {
            files.push((item.path.clone(), source));
        } else if !optional {
            return Err(Error::Unsupported {
                field: format!("{at}.items[{j}].key"),
                reason: format!("no file {}", source.display()),
            });
        }
    }
    Ok(files)
}

/// Stores resolved projections (an empty text removes the file).
pub fn write(layout: &Layout, which: Projected, text: &str) -> Result<()> {
    let path = which.file(layout);
    if text.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", &path)(e)),
            _ => Ok(()),
        };
    }
    crate::tls::write_secret(&path, text)
}

/// The stored projections (empty when there are none).
pub fn stored(layout: &Layout, which: Projected) -> Result<String> {
    let path = which.file(layout);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io("reading", &path)(e)),
    }
}

/// Both lists of a manifest, resolved: `spec.backups.pgbackrest.configuration` and
/// `spec.dataSource.pgbackrest.configuration`.
pub fn resolve_all(
    cluster: &tusk_api::ValidatedCluster,
    manifest_dir: &Path,
) -> Result<Vec<(Projected, String)>> {
    let backups = match &cluster.backups {
        Some(b) => resolve(
            &b.configuration,
            manifest_dir,
            "spec.backups.pgbackrest.configuration",
        )?,
        None => String::new(),
    };
    let data_source = match &cluster.data_source {
        Some(tusk_api::model::DataSourceSettings::PgBackRest { configuration, .. }) => resolve(
            configuration,
            manifest_dir,
            "spec.dataSource.pgbackrest.configuration",
        )?,
        _ => String::new(),
    };
    Ok(vec![
        (Projected::Backups, backups),
        (Projected::DataSource, data_source),
    ])
}

/// Stores what [`resolve_all`] returned.
pub fn write_all(layout: &Layout, resolved: &[(Projected, String)]) -> Result<()> {
    for (which, text) in resolved {
        write(layout, *which, text)?;
    }
    Ok(())
}
