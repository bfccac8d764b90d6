//! `etl-cache ls [PREFIX]`: the entries, one a line, or as JSON.

use std::time::SystemTime;

use etl_cache::EntryMeta;
use futures::TryStreamExt;
use serde_json::json;

use crate::context::Ctx;
use crate::format::{age, display_key, expires_in, human_bytes, rfc3339, seconds_between, table};
use crate::outcome::{CmdResult, Status};

/// Arguments of `ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only keys starting with this
    pub prefix: Option<String>,

    /// A JSON array of entries, for scripts
    #[arg(long)]
    pub json: bool,
}

/// Lists entries sorted by key, expired ones not yet purged included.
pub async fn run(ctx: &Ctx, args: &Args) -> CmdResult {
    let mut entries: Vec<EntryMeta> = ctx
        .cache
        .list_all(args.prefix.as_deref())
        .try_collect()
        .await?;
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    let now = SystemTime::now();
    let text = if args.json {
        let docs: Vec<_> = entries.iter().map(|m| entry_json(m, now)).collect();
        let mut s = serde_json::to_string_pretty(&docs).expect("JSON values serialize");
        s.push('\n');
        s
    } else if entries.is_empty() {
        if !ctx.quiet {
            match &args.prefix {
                Some(p) => eprintln!("no entries with prefix {p:?} in {}", ctx.url),
                None => eprintln!("no entries in {}", ctx.url),
            }
        }
        String::new()
    } else {
        let mut rows = vec![
            ["KEY", "KIND", "SIZE", "LOGICAL", "CODEC", "AGE", "EXPIRES"]
                .map(String::from)
                .to_vec(),
        ];
        rows.extend(entries.iter().map(|m| {
            vec![
                display_key(&m.key),
                m.kind.to_string(),
                human_bytes(m.size),
                human_bytes(m.logical_len),
                m.codec.to_string(),
                age(m.created, now),
                expires_in(m.expires, now),
            ]
        }));
        table(&rows)
    };
    crate::outcome::print(&text)?;
    Ok(Status::Ok)
}

/// One entry as JSON.
fn entry_json(m: &EntryMeta, now: SystemTime) -> serde_json::Value {
    json!({
        "key": m.key,
        "kind": m.kind.as_str(),
        "codec": m.codec.as_str(),
        "size": m.size,
        "logical_size": m.logical_len,
        "created": rfc3339(m.created),
        "age_seconds": seconds_between(m.created, now).max(0.0),
        "expires": m.expires.map(rfc3339),
        "expires_in_seconds": m.expires.map(|e| seconds_between(now, e).max(0.0)),
        "expired": m.is_expired(now),
    })
}
