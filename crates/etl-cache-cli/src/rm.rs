//! `etl-cache rm KEY`: removes an entry.

use crate::context::Ctx;
use crate::format::display_key;
use crate::outcome::{CmdResult, Status};

/// Arguments of `rm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The key
    pub key: String,
}

/// Removes the entry; a missing key is a miss (exit 1).
pub async fn run(ctx: &Ctx, args: &Args) -> CmdResult {
    if ctx.cache.delete(&args.key).await? {
        ctx.say(&format!("removed {}", display_key(&args.key)))?;
        Ok(Status::Ok)
    } else {
        eprintln!("etl-cache: no entry for key {:?}", args.key);
        Ok(Status::Miss)
    }
}
