//! `spec.dataSource.pgbackrest` in local mode: a new cluster's first member restores from an
//! object-store repo that no running cluster needs to own (the source cluster may be long
//! gone). The source is described entirely by the data source: its `repo` (s3 or azure), its
//! `global` options and `configuration` projections (credentials; see `projections`) and its
//! `stanza`. They go into a file of their own, `<member>/data-source-pgbackrest.conf` (0600),
//! which the restore command names with `--config`, so the new cluster's own repos and the
//! source never mix; pgBackRest writes that `--config` into the `restore_command` recovery
//! uses too. Touches that file and the member's (empty) data directory.

use std::path::Path;

use tusk_api::model::DataSourceSettings;
use tusk_api::ValidatedCluster;
use tusk_config::patroni::Bootstrap;
use tusk_config::pgbackrest::{data_source_conf, PosixInstance};

use super::projections::{self, Projected};
use crate::error::Result;
use crate::state::Layout;

/// Name of the source's configuration file in the member directory.
pub const DATA_SOURCE_CONF: &str = "data-source-pgbackrest.conf";

/// The restore bootstrap for a `spec.dataSource.pgbackrest`; `None` for any other source.
pub(crate) fn bootstrap(
    cluster: &ValidatedCluster,
    layout: &Layout,
    data_dir: &Path,
) -> Result<Option<Bootstrap>> {
    let Some(DataSourceSettings::PgBackRest {
        stanza,
        global,
        repo,
        options,
        ..
    }) = &cluster.data_source
    else {
        return Ok(None);
    };
    let member_dir = data_dir.parent().unwrap_or(Path::new("/"));
    let lossy = |p: &Path| p.to_string_lossy().into_owned();
    let instance = PosixInstance {
        data_dir: &lossy(data_dir),
        socket_dir: &lossy(&member_dir.join("run")),
        port: cluster.port,
        repo_root: "/",
        log_dir: &lossy(&member_dir.join("log")),
        lock_dir: &lossy(&member_dir.join("lock")),
    };
    let conf = data_source_conf(
        stanza,
        repo,
        global,
        &instance,
        "spec.dataSource.pgbackrest.repo",
    )
    .map_err(super::not_local)?;
    let file = member_dir.join(DATA_SOURCE_CONF);
    let projected = projections::stored(layout, Projected::DataSource)?;
    crate::tls::write_secret(&file, &(conf + &projected))?;
    crate::restore::restore_bootstrap(
        data_dir,
        stanza,
        repo.index,
        vec![format!("--config={}", lossy(&file))],
        options,
    )
    .map(Some)
}
