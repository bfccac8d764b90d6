//! `etl-cache clear --yes`: removes every entry.

use futures::TryStreamExt;

use crate::context::Ctx;
use crate::format::{entries, human_bytes};
use crate::outcome::{CmdResult, Failure, Status};

/// Arguments of `clear`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Confirm: without it, clear refuses and says what it would remove
    #[arg(long)]
    pub yes: bool,
}

/// Removes every entry once confirmed.
pub async fn run(ctx: &Ctx, args: &Args) -> CmdResult {
    if !args.yes {
        let (n, bytes) = ctx
            .cache
            .list_all(None)
            .try_fold(
                (0u64, 0u64),
                |(n, b), m| async move { Ok((n + 1, b + m.size)) },
            )
            .await?;
        return Err(Failure::new(
            format!(
                "clear would remove every entry of {} ({n} {}, {} on disk); refusing without --yes",
                ctx.url,
                entries(n),
                human_bytes(bytes)
            ),
            "run `etl-cache clear --yes` to remove them all",
        ));
    }
    let n = ctx.cache.clear().await?;
    ctx.say(&format!("removed {n} {}", entries(n)))?;
    Ok(Status::Ok)
}
