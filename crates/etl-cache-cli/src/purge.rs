//! `etl-cache purge --expired`: removes expired entries.

use crate::context::Ctx;
use crate::format::entries;
use crate::outcome::{CmdResult, Status};

/// Arguments of `purge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remove the entries whose TTL has passed (required: to remove every
    /// entry, use `clear --yes`)
    #[arg(long, required = true)]
    pub expired: bool,
}

/// Sweeps the expired entries.
pub async fn run(ctx: &Ctx, args: &Args) -> CmdResult {
    debug_assert!(args.expired, "clap requires --expired");
    let n = ctx.cache.purge_expired().await?;
    ctx.say(&format!("removed {n} expired {}", entries(n)))?;
    Ok(Status::Ok)
}
