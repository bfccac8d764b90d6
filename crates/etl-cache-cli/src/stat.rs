//! `etl-cache stat`: entries, bytes, the expired, the oldest and the newest.

use std::time::SystemTime;

use etl_cache::EntryMeta;
use futures::TryStreamExt;
use serde_json::json;

use crate::context::Ctx;
use crate::format::{age, display_key, entries, human_bytes, rfc3339, seconds_between, table};
use crate::outcome::{CmdResult, Status};

/// Arguments of `stat`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object, for scripts
    #[arg(long)]
    pub json: bool,
    /// Per step name: hits, misses, bytes served, compute time and time saved
    #[arg(long)]
    pub by_step: bool,
}

/// What a scan of the entries finds.
#[derive(Default)]
struct Summary {
    entries: u64,
    expired: u64,
    bytes: u64,
    logical_bytes: u64,
    oldest: Option<EntryMeta>,
    newest: Option<EntryMeta>,
}

impl Summary {
    fn add(mut self, m: EntryMeta, now: SystemTime) -> Summary {
        self.entries += 1;
        self.expired += u64::from(m.is_expired(now));
        self.bytes += m.size;
        self.logical_bytes += m.logical_len;
        // Ties go to the smaller key, so the answer does not depend on list order.
        let older = |a: &EntryMeta, b: &EntryMeta| (a.created, &a.key) < (b.created, &b.key);
        let newer = |a: &EntryMeta, b: &EntryMeta| {
            a.created > b.created || (a.created == b.created && a.key < b.key)
        };
        if self.oldest.as_ref().is_none_or(|o| older(&m, o)) {
            self.oldest = Some(m.clone());
        }
        if self.newest.as_ref().is_none_or(|n| newer(&m, n)) {
            self.newest = Some(m);
        }
        self
    }
}

/// Counts entries (expired ones not yet purged included) from a listing, and
/// adds the backend's own running counters.
pub async fn run(ctx: &Ctx, args: &Args) -> CmdResult {
    if args.by_step {
        return crate::explain::by_step(ctx, args.json).await;
    }
    let now = SystemTime::now();
    let s = ctx
        .cache
        .list_all(None)
        .try_fold(Summary::default(), |s, m| async move { Ok(s.add(m, now)) })
        .await?;
    let counters = ctx.cache.stats().await?;
    let text = if args.json {
        let point = |m: &Option<EntryMeta>| {
            m.as_ref().map(|m| {
                json!({
                    "key": m.key,
                    "created": rfc3339(m.created),
                    "age_seconds": seconds_between(m.created, now).max(0.0),
                })
            })
        };
        let doc = json!({
            "cache": ctx.url,
            "entries": s.entries,
            "expired": s.expired,
            "bytes": s.bytes,
            "logical_bytes": s.logical_bytes,
            "oldest": point(&s.oldest),
            "newest": point(&s.newest),
            "counters": { "entries": counters.entries, "bytes": counters.bytes },
        });
        let mut t = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
        t.push('\n');
        t
    } else {
        let mut entries_line = s.entries.to_string();
        if s.expired > 0 {
            entries_line.push_str(&format!(
                " ({} expired: `etl-cache purge --expired` removes them)",
                s.expired
            ));
        }
        let point = |m: &Option<EntryMeta>| match m {
            Some(m) => format!(
                "{}  created {} ({} ago)",
                display_key(&m.key),
                rfc3339(m.created),
                age(m.created, now)
            ),
            None => "-".to_owned(),
        };
        let mut rows = vec![
            vec!["cache".to_owned(), ctx.url.clone()],
            vec!["entries".to_owned(), entries_line],
            vec![
                "size".to_owned(),
                format!(
                    "{} on disk, {} logical",
                    human_bytes(s.bytes),
                    human_bytes(s.logical_bytes)
                ),
            ],
            vec!["oldest".to_owned(), point(&s.oldest)],
            vec!["newest".to_owned(), point(&s.newest)],
        ];
        if (counters.entries, counters.bytes) != (s.entries, s.bytes) {
            rows.push(vec![
                "counters".to_owned(),
                format!(
                    "{} {}, {} (the backend's running tally; writes in progress \
                     elsewhere make it differ)",
                    counters.entries,
                    entries(counters.entries),
                    human_bytes(counters.bytes)
                ),
            ]);
        }
        table(&rows)
    };
    crate::outcome::print(&text)?;
    Ok(Status::Ok)
}
