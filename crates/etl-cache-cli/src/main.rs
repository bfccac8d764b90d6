//! `etl-cache`: inspect, fetch, seed and clean any etl-cache from a terminal.
//!
//! Each subcommand lives in a file of its own; this one parses the arguments,
//! dispatches, and turns the outcome into an exit code. What the subcommands
//! share: `context` opens the cache, `outcome` says how a command ended,
//! `format` writes text, `transfer` moves payloads, `ttl` parses `--ttl`.
#![forbid(unsafe_code)]

mod clear;
mod context;
mod explain;
mod format;
mod get;
mod ls;
mod outcome;
mod purge;
mod rm;
mod set;
mod stat;
mod transfer;
mod ttl;
mod verify;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::context::{Access, Ctx};
use crate::outcome::{CmdResult, Failure, Status};

const AFTER_HELP: &str = "\
Exit status:
  0  found / done
  1  miss: no entry for the key (get, rm)
  2  error: bad arguments, a cache that cannot be opened, an I/O error,
     corrupt entries found by verify, clear without --yes

Environment:
  ETL_CACHE_URL  the cache when --cache is not given (default: .cache)

Examples:
  etl-cache ls reports/
  etl-cache get payload_123 -o payload.xml
  curl -s https://example.com/big.xml | etl-cache set big.xml --ttl 1d --compress zstd
  etl-cache --cache /var/cache/etl stat --json
  etl-cache explain transform
  etl-cache stat --by-step --json";

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
    /// The last runs of a step: what changed between them, what became of each result
    Explain(explain::Args),
}

impl Command {
    /// How the command uses the cache, which decides how it is opened.
    fn access(&self) -> Access<'_> {
        match self {
            Command::Set(_) => Access::Write,
            Command::Get(a) => Access::Key(&a.key),
            Command::Rm(a) => Access::Key(&a.key),
            Command::Verify(_) => Access::Verify,
            Command::Ls(_)
            | Command::Stat(_)
            | Command::Purge(_)
            | Command::Clear(_)
            | Command::Explain(_) => Access::Scan,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(outcome::report(run(cli)))
}

fn run(cli: Cli) -> CmdResult {
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

async fn dispatch(cli: Cli) -> CmdResult {
    let Some(ctx) = Ctx::open(cli.cache, cli.quiet, cli.command.access()).await? else {
        return Ok(Status::Miss);
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
        Command::Explain(a) => explain::run(&ctx, a).await,
    }
}
