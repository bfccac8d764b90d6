//! `etl-cache`: inspect, fetch, seed and clean any etl-cache from a terminal.
//!
//! Each subcommand lives in a file of its own; this one parses the arguments,
//! opens the cache, dispatches, and turns the outcome into an exit code.
#![forbid(unsafe_code)]

mod clear;
mod get;
mod ls;
mod purge;
mod rm;
mod set;
mod stat;
mod util;
mod verify;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use etl_cache::Cache;

use crate::util::{Failure, Status};

const AFTER_HELP: &str = "\
Exit status:
  0  found / done
  1  miss: no entry for the key (get, rm)
  2  error: bad arguments, a cache that cannot be opened, an I/O error,
     corrupt entries found by verify, clear without --yes

Environment:
  ETL_CACHE_URL              the cache when --cache is not given (default: .cache)
  ETL_CACHE_REPORT_PEAK_RSS  diagnostics: with 1, print peak_rss_bytes=N (the
                             process's peak resident memory) on stderr at exit

Examples:
  etl-cache ls reports/
  etl-cache get payload_123 -o payload.xml
  curl -s https://example.com/big.xml | etl-cache set big.xml --ttl 1d --compress zstd
  etl-cache --cache /var/cache/etl stat --json";

/// Inspect, fetch, seed and clean an etl-cache: a local directory, memory://,
/// or an object store.
#[derive(Debug, Parser)]
#[command(name = "etl-cache", version, after_help = AFTER_HELP)]
struct Cli {
    /// The cache: a directory, file:///abs/path, memory://, s3://BUCKET/PREFIX,
    /// gs://BUCKET/PREFIX or az://CONTAINER/PREFIX
    #[arg(
        long,
        global = true,
        env = "ETL_CACHE_URL",
        default_value = ".cache",
        value_name = "URL"
    )]
    cache: String,

    /// No progress bars, no confirmations (errors are still printed)
    #[arg(short, long, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List entries: key, kind, size on disk, logical size, codec, age, time to expiry
    Ls(ls::Args),
    /// Write an entry's value to stdout or a file, streamed
    Get(get::Args),
    /// Store a file or stdin under a key, streamed
    Set(set::Args),
    /// Remove an entry
    Rm(rm::Args),
    /// Count entries and bytes; show the expired, the oldest and the newest
    Stat(stat::Args),
    /// Remove expired entries
    Purge(purge::Args),
    /// Remove every entry (asks for --yes)
    Clear(clear::Args),
    /// Read every entry, check its checksums, report and remove corrupt ones
    Verify(verify::Args),
}

impl Command {
    /// Whether the command creates entries, and so may create the cache.
    fn writes(&self) -> bool {
        matches!(self, Command::Set(_))
    }

    /// The key a command is about, if it reads or removes one.
    fn key(&self) -> Option<&str> {
        match self {
            Command::Get(a) => Some(&a.key),
            Command::Rm(a) => Some(&a.key),
            _ => None,
        }
    }
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
    /// Prints a confirmation on stdout, unless `--quiet`.
    pub fn say(&self, line: &str) -> Result<(), Failure> {
        if self.quiet {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").map_err(Failure::stdout)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(Status::Ok) => 0,
        Ok(Status::Miss) => 1,
        Ok(Status::Problems) => 2,
        Err(Failure::BrokenPipe) => 0,
        Err(f) => {
            eprintln!("etl-cache: {f}");
            2
        }
    };
    report_peak_rss();
    ExitCode::from(code)
}

fn run(cli: Cli) -> Result<Status, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Error {
            message: format!("cannot start the async runtime: {e}"),
            hint: None,
        })?;
    let result = rt.block_on(dispatch(cli));
    // Threads blocked on a pipe must not hold up the exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn dispatch(cli: Cli) -> Result<Status, Failure> {
    if let Some(root) = local_root(&cli.cache)
        && !cli.command.writes()
        && let Some(why) = missing_cache(&root)
    {
        if let Some(key) = cli.command.key() {
            eprintln!(
                "etl-cache: no entry for key {:?}: no cache at {} ({why})",
                key,
                root.display()
            );
            return Ok(Status::Miss);
        }
        return Err(Failure::new(
            format!("no cache at {} ({why})", root.display()),
            "pass the cache with --cache URL or ETL_CACHE_URL; `etl-cache set` creates one",
        ));
    }
    let cache: Arc<dyn Cache> = match (&cli.command, local_root(&cli.cache)) {
        // `verify` reads every entry: through a handle that leaves recency
        // alone, so that checking a cache does not erase its LRU order.
        (Command::Verify(_), Some(root)) => Arc::new(
            etl_cache::DiskCacheBuilder::from_env()?
                .root(root)
                .touch_interval(Duration::MAX)
                .build()
                .await?,
        ),
        _ => etl_cache::open(&cli.cache).await?,
    };
    let ctx = Ctx {
        cache,
        url: cli.cache,
        quiet: cli.quiet,
    };
    match &cli.command {
        Command::Ls(a) => ls::run(&ctx, a).await,
        Command::Get(a) => get::run(&ctx, a).await,
        Command::Set(a) => set::run(&ctx, a).await,
        Command::Rm(a) => rm::run(&ctx, a).await,
        Command::Stat(a) => stat::run(&ctx, a).await,
        Command::Purge(a) => purge::run(&ctx, a).await,
        Command::Clear(a) => clear::run(&ctx, a).await,
        Command::Verify(a) => verify::run(&ctx, a).await,
    }
}

/// The directory a local URL names (as `etl_cache::open` reads it), if it is one.
fn local_root(url: &str) -> Option<PathBuf> {
    match url.split_once("://") {
        None if !url.is_empty() => Some(PathBuf::from(url)),
        Some((scheme, path)) if scheme.eq_ignore_ascii_case("file") && path.starts_with('/') => {
            Some(PathBuf::from(path))
        }
        _ => None,
    }
}

/// Why `root` holds no cache, if it does not: commands that only read or
/// remove never create a cache (a mistyped path would look like an empty one).
fn missing_cache(root: &std::path::Path) -> Option<String> {
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

/// With `ETL_CACHE_REPORT_PEAK_RSS=1`, prints the peak resident set size
/// (VmHWM) on stderr: a diagnostics knob, used by the tests that prove memory
/// stays bounded whatever the payload size.
fn report_peak_rss() {
    if std::env::var_os("ETL_CACHE_REPORT_PEAK_RSS").is_none_or(|v| v != "1") {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status.lines().find_map(|l| {
        l.strip_prefix("VmHWM:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()
    });
    match kib {
        Some(kib) => eprintln!("peak_rss_bytes={}", kib * 1024),
        None => eprintln!("peak_rss_bytes=unknown"),
    }
}
