//! `etl-cache verify`: reads every entry and checks its checksums.

use etl_cache::{EntryMeta, Error, stream_read_error};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use crate::context::Ctx;
use crate::format::{display_key, entries, human_bytes};
use crate::outcome::{CmdResult, Status};
use crate::transfer::{CHUNK, Progress};

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object, for scripts
    #[arg(long)]
    pub json: bool,
}

/// What happened to one entry.
enum Outcome {
    /// Read to the end; every checksum matched.
    Ok(u64),
    /// Failed a check; the backend removed it.
    Corrupt(String),
    /// Gone (or expired) between the listing and the read.
    Gone,
    /// Could not be read for another reason (I/O, lock, backend).
    Failed(String),
}

/// Drains every entry through `get_stream`, so each payload is read and its
/// checksums checked; corrupt entries are removed by the backend as it finds
/// them. Exit 2 when any entry was corrupt or unreadable.
pub async fn run(ctx: &Ctx, args: &Args) -> CmdResult {
    let mut listed: Vec<EntryMeta> = ctx.cache.list_all(None).try_collect().await?;
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    let total: u64 = listed.iter().map(|m| m.logical_len).sum();
    let mut progress = Progress::new(Some(total), "verify", ctx.quiet);
    let (mut ok, mut bytes, mut gone) = (0u64, 0u64, 0u64);
    let mut corrupt = Vec::new();
    let mut failed = Vec::new();
    for m in &listed {
        match check(ctx, &m.key, &mut progress).await {
            Outcome::Ok(n) => {
                ok += 1;
                bytes += n;
            }
            Outcome::Corrupt(reason) => {
                // DiskCache removes a corrupt entry as it finds it; an object
                // store without conditional deletes keeps it (a removal could
                // take a newer value with it) until it is written or removed.
                let removed = !ctx.cache.contains(&m.key).await.unwrap_or(true);
                corrupt.push((m.key.clone(), reason, removed));
            }
            Outcome::Gone => gone += 1,
            Outcome::Failed(reason) => failed.push((m.key.clone(), reason)),
        }
    }
    progress.finish();
    let text = if args.json {
        let list = |v: &[(String, String)]| -> Vec<_> {
            v.iter()
                .map(|(key, reason)| json!({ "key": key, "reason": reason }))
                .collect()
        };
        let corrupt: Vec<_> = corrupt
            .iter()
            .map(|(key, reason, removed)| json!({ "key": key, "reason": reason, "removed": removed }))
            .collect();
        let doc = json!({
            "cache": ctx.url,
            "checked": listed.len(),
            "ok": ok,
            "bytes": bytes,
            "corrupt": corrupt,
            "failed": list(&failed),
            "gone": gone,
        });
        let mut t = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
        t.push('\n');
        t
    } else {
        let mut t = String::new();
        for (key, reason, removed) in &corrupt {
            let what = if *removed {
                "removed".to_owned()
            } else {
                format!(
                    "still stored: `etl-cache rm {}` removes it",
                    display_key(key)
                )
            };
            t.push_str(&format!(
                "corrupt  {}: {reason} ({what})\n",
                display_key(key)
            ));
        }
        for (key, reason) in &failed {
            t.push_str(&format!("failed   {}: {reason}\n", display_key(key)));
        }
        let kept = corrupt.iter().filter(|c| !c.2).count();
        t.push_str(&format!(
            "verified {} {} ({}): {ok} ok, {} corrupt",
            listed.len(),
            entries(listed.len() as u64),
            human_bytes(bytes),
            corrupt.len()
        ));
        match kept {
            0 => t.push_str(" and removed"),
            k => t.push_str(&format!(" ({k} still stored)")),
        }
        if !failed.is_empty() {
            t.push_str(&format!(", {} unreadable", failed.len()));
        }
        if gone > 0 {
            t.push_str(&format!(", {gone} gone or expired while checking"));
        }
        t.push('\n');
        t
    };
    crate::outcome::print(&text)?;
    if !failed.is_empty() {
        eprintln!("etl-cache: some entries could not be read; run verify again to retry them");
    }
    Ok(if corrupt.is_empty() && failed.is_empty() {
        Status::Ok
    } else {
        Status::Problems
    })
}

async fn check(ctx: &Ctx, key: &str, progress: &mut Progress) -> Outcome {
    let classify = |e: Error| match e {
        Error::Corrupt { reason, .. } => Outcome::Corrupt(reason),
        e => Outcome::Failed(e.to_string()),
    };
    let mut stream = match ctx.cache.get_stream(key, CHUNK).await {
        Ok(Some(s)) => s,
        Ok(None) => return Outcome::Gone,
        Err(e) => return classify(e),
    };
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                n += c.len() as u64;
                progress.inc(c.len() as u64);
            }
            Err(e) => return classify(stream_read_error(key, e)),
        }
    }
    Outcome::Ok(n)
}
