//! Opening the cache that `--cache` names, as each command needs it, and the
//! context every command gets ([`Ctx`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use etl_cache::Cache;

use crate::outcome::Failure;

/// How a command uses the cache, which decides how it is opened.
#[derive(Debug, Clone, Copy)]
pub enum Access<'a> {
    /// Creates entries (`set`): the only use that may create the cache.
    Write,
    /// Reads or removes one key (`get`, `rm`): no cache is a miss of that key.
    Key(&'a str),
    /// Lists, counts or removes entries (`ls`, `stat`, `purge`, `clear`).
    Scan,
    /// Reads every entry (`verify`), without refreshing its recency.
    Verify,
}

/// What every command gets besides its own arguments.
pub struct Ctx {
    /// The cache.
    pub cache: Arc<dyn Cache>,
    /// The location given, for messages.
    pub url: String,
    /// `--quiet`.
    pub quiet: bool,
}

impl Ctx {
    /// Opens the cache at `url` for `access`. `None` when `access` is about
    /// one key and a local cache does not exist: a miss, already reported on
    /// stderr. Commands that only read or remove never create a cache (a
    /// mistyped path would look like an empty one).
    pub async fn open(
        url: String,
        quiet: bool,
        access: Access<'_>,
    ) -> Result<Option<Ctx>, Failure> {
        let root = local_root(&url);
        if let Some(root) = &root
            && !matches!(access, Access::Write)
            && let Some(why) = missing_cache(root)
        {
            if let Access::Key(key) = access {
                eprintln!(
                    "etl-cache: no entry for key {:?}: no cache at {} ({why})",
                    key,
                    root.display()
                );
                return Ok(None);
            }
            return Err(Failure::new(
                format!("no cache at {} ({why})", root.display()),
                "pass the cache with --cache URL or ETL_CACHE_URL; `etl-cache set` creates one",
            ));
        }
        let cache: Arc<dyn Cache> = match (access, root) {
            // `verify` reads every entry: through a handle that leaves recency
            // alone, so that checking a cache does not erase its LRU order.
            (Access::Verify, Some(root)) => Arc::new(
                etl_cache::DiskCacheBuilder::from_env()?
                    .root(root)
                    .touch_interval(Duration::MAX)
                    .build()
                    .await?,
            ),
            _ => etl_cache::open(&url).await?,
        };
        Ok(Some(Ctx { cache, url, quiet }))
    }

    /// Prints a confirmation on stdout, unless `--quiet`.
    pub fn say(&self, line: &str) -> Result<(), Failure> {
        if self.quiet {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").map_err(Failure::stdout)
    }
}

/// The directory a local URL names (as `etl_cache::open` reads it), if it is one.
fn local_root(url: &str) -> Option<PathBuf> {
    etl_cache::Location::parse(url)
        .ok()?
        .dir()
        .map(Path::to_path_buf)
}

/// Why `root` holds no cache, if it does not.
fn missing_cache(root: &Path) -> Option<String> {
    if !root.exists() {
        return Some("the directory does not exist".into());
    }
    let layout = root.join(format!("etl-cache-v{}", etl_cache::fs::LAYOUT_VERSION));
    if root.is_dir() && !layout.is_dir() {
        return Some(format!(
            "it has no {} directory, so it is not an etl-cache root",
            layout.file_name().unwrap_or_default().to_string_lossy()
        ));
    }
    None
}
