//! `cirrus compact`: rewrite a stopped node's database to its live size. Large
//! commits (a new node's stream, bursts of gossip) leave free pages behind that redb
//! reuses but never returns to the file system; this returns them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use cirrus_node::config::default_data_dir;
use cirrus_node::node::DB_FILE;
use cirrus_node::store::{Store, StoreError};

#[derive(clap::Args)]
pub struct CompactArgs {
    /// The node's data directory (default ~/.cirrus/node). The node must be stopped.
    #[arg(long, env = "CIRRUS_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

pub fn compact(a: CompactArgs) -> anyhow::Result<ExitCode> {
    let dir = match a.data_dir {
        Some(d) => d,
        None => default_data_dir().context("no home directory; give --data-dir")?,
    };
    let path = dir.join(DB_FILE);
    let size = |what| {
        std::fs::metadata(&path)
            .map(|m| m.len())
            .with_context(|| format!("no database at {} ({what})", path.display()))
    };
    let before = size("before")?;
    let store = match Store::open(&path) {
        Ok(s) => s,
        Err(StoreError::Db(redb::Error::DatabaseAlreadyOpen)) => {
            anyhow::bail!(
                "the database at {} is in use: stop the node first",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let records = store.db_hash()?.records;
    let changed = store.compact().context("compaction failed")?;
    drop(store);
    let after = size("after")?;
    println!(
        "{}: {records} records; {:.1} MB before, {:.1} MB after{}",
        path.display(),
        before as f64 / 1e6,
        after as f64 / 1e6,
        if changed { "" } else { " (nothing to gain)" }
    );
    Ok(ExitCode::SUCCESS)
}
