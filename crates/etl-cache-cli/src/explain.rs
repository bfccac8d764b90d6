//! `etl-cache explain STEP`: the last runs of a step name, what changed from
//! one run to the next, and what became of each result.

use std::time::{Duration, SystemTime};

use etl_cache::steps::{Explanation, RunReport, StepExt};
use serde_json::json;

use crate::context::Ctx;
use crate::format::{human_bytes, rfc3339, table};
use crate::outcome::{CmdResult, Failure, Status};

/// Arguments of `explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The step name, as given to `Step::new`
    pub step: String,
    /// One JSON object, for scripts
    #[arg(long)]
    pub json: bool,
}

fn steps_error(e: etl_cache::steps::Error) -> Failure {
    Failure::Error {
        message: e.to_string(),
        hint: None,
    }
}

/// A manifest's time (data anyone with write access may have changed: out
/// of range, it is shown as such, never a panic).
fn at(secs: f64) -> String {
    Duration::try_from_secs_f64(secs.max(0.0))
        .ok()
        .and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d))
        .map_or_else(|| format!("(out of range: {secs})"), rfc3339)
}

/// What became of a run's result, in a few words.
fn state(e: &Explanation) -> String {
    match e {
        Explanation::Hit { .. } => "cached".to_owned(),
        Explanation::Expired { at: t, .. } => format!("expired {}", at(*t)),
        Explanation::Evicted { at: t, limit, .. } => {
            format!("evicted {} (the cache was over its {limit})", at(*t))
        }
        Explanation::Deleted { at: t, by, .. } => format!("removed by {by} {}", at(*t)),
        Explanation::EvictedOrDeleted { .. } => {
            "gone before expiry: evicted or deleted (no removal remembered)".to_owned()
        }
        Explanation::Corrupt { detail } => format!("corrupt, removed: {detail}"),
        other => other.reason().replace('_', " "),
    }
}

/// Prints the kept runs of the step name, oldest first. Exit 1 when the
/// step name has no run in this cache.
pub async fn run(ctx: &Ctx, args: &Args) -> CmdResult {
    let runs: Vec<RunReport> = ctx
        .cache
        .explain_runs(&args.step)
        .await
        .map_err(steps_error)?;
    let text = if args.json {
        let doc = json!({
            "cache": ctx.url,
            "step": args.step,
            "runs": runs,
        });
        let mut t = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
        t.push('\n');
        t
    } else if runs.is_empty() {
        format!("step {:?}: no run recorded in this cache\n", args.step)
    } else {
        let mut t = format!(
            "step {:?}: the last {} run(s), oldest first\n",
            args.step,
            runs.len()
        );
        for (i, r) in runs.iter().enumerate() {
            let m = &r.manifest;
            let mut rows = vec![
                vec!["run".to_owned(), format!("{} of {}", i + 1, runs.len())],
                vec!["digest".to_owned(), m.digest.chars().take(16).collect()],
                vec![
                    "computed".to_owned(),
                    format!(
                        "{} by {} (pid {}) in {:.3} s",
                        at(m.computed_at),
                        m.host,
                        m.pid,
                        m.compute_seconds
                    ),
                ],
                vec![
                    "result".to_owned(),
                    format!("{}, {}: {}", m.kind, human_bytes(m.bytes), state(&r.state)),
                ],
            ];
            if i > 0 && r.changed.is_empty() {
                rows.push(vec![
                    "changed".to_owned(),
                    "nothing (computed again)".to_owned(),
                ]);
            }
            for c in &r.changed {
                let show = |p: &Option<String>| p.clone().unwrap_or_else(|| "(absent)".to_owned());
                rows.push(vec![
                    "changed".to_owned(),
                    format!("{}: {} -> {}", c.part, show(&c.old), show(&c.new)),
                ]);
            }
            if i == 0 {
                for p in &m.parts {
                    rows.push(vec![
                        "part".to_owned(),
                        format!("{} = {}", p.name, p.preview),
                    ]);
                }
            }
            t.push('\n');
            t.push_str(&table(&rows));
        }
        t
    };
    crate::outcome::print(&text)?;
    Ok(if runs.is_empty() {
        Status::Miss
    } else {
        Status::Ok
    })
}

/// `stat --by-step`: hits, misses, bytes served and time saved per step name.
pub async fn by_step(ctx: &Ctx, json_out: bool) -> CmdResult {
    let report = ctx.cache.step_stats(None).await.map_err(steps_error)?;
    let text = if json_out {
        let mut t = serde_json::to_string_pretty(&json!({
            "cache": ctx.url,
            "steps": report.by_step,
            "total": report.total,
        }))
        .expect("JSON values serialize");
        t.push('\n');
        t
    } else {
        let mut rows = vec![vec![
            "STEP".to_owned(),
            "HITS".to_owned(),
            "MISSES".to_owned(),
            "SERVED".to_owned(),
            "COMPUTE".to_owned(),
            "SAVED".to_owned(),
        ]];
        let line = |name: &str, s: &etl_cache::steps::StepStats| {
            vec![
                name.to_owned(),
                s.hits.to_string(),
                s.misses.to_string(),
                human_bytes(s.bytes_served),
                format!("{:.3} s", s.compute_seconds),
                format!("{:.3} s", s.saved_seconds),
            ]
        };
        for (name, s) in &report.by_step {
            rows.push(line(name, s));
        }
        rows.push(line("(total)", &report.total));
        table(&rows)
    };
    crate::outcome::print(&text)?;
    Ok(Status::Ok)
}
