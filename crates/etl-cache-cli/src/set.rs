//! `etl-cache set KEY [FILE|-]`: stores a file or stdin, streamed.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use etl_cache::{Compression, EntryMeta, SetOptions, Value};

use crate::context::Ctx;
use crate::format::{display_key, human_bytes, human_duration};
use crate::outcome::{CmdResult, Failure, Status};
use crate::transfer::{Progress, reader_stream};
use crate::ttl::parse_ttl;

/// Arguments of `set`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The key
    pub key: String,

    /// The file to store; `-` or nothing reads stdin
    #[arg(value_name = "FILE|-")]
    pub input: Option<PathBuf>,

    /// Expire the entry after this long: 30s, 15m, 1h, 2d, 1h30m
    #[arg(long, value_parser = parse_ttl, value_name = "DURATION")]
    pub ttl: Option<Duration>,

    /// Compress on disk: gzip, zstd, gzip:LEVEL, zstd:LEVEL or none
    #[arg(long, value_parser = parse_compression, value_name = "CODEC")]
    pub compress: Option<Compression>,

    /// Store as JSON (the input must parse); read whole into memory
    #[arg(long, conflicts_with = "text")]
    pub json: bool,

    /// Store as text (the input must be UTF-8); read whole into memory
    #[arg(long)]
    pub text: bool,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse().map_err(|e: etl_cache::Error| e.to_string())
}

/// Stores the input as bytes, streamed (memory stays bounded), or as text or
/// JSON when asked.
pub async fn run(ctx: &Ctx, args: &Args) -> CmdResult {
    let mut opts = SetOptions::new();
    if let Some(ttl) = args.ttl {
        opts = opts.ttl(ttl);
    }
    if let Some(c) = args.compress {
        opts = opts.compression(c);
    }
    let file = args.input.as_deref().filter(|p| *p != Path::new("-"));
    if args.input.is_none() && std::io::stdin().is_terminal() {
        return Err(Failure::new(
            "no input: stdin is a terminal",
            "give a FILE, or pipe the value in: `cat data.xml | etl-cache set KEY`",
        ));
    }
    let (reader, size, name): (Box<dyn Read + Send>, Option<u64>, String) = match file {
        Some(path) => {
            let f = std::fs::File::open(path).map_err(|e| cannot_read(path, &e))?;
            let len = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
            (Box::new(f), len, path.display().to_string())
        }
        None => (Box::new(std::io::stdin()), None, "stdin".to_owned()),
    };
    let meta = if args.json || args.text {
        let value = read_value(reader, &name, args.json).await?;
        ctx.cache.set(&args.key, value, opts).await?
    } else {
        let progress = Progress::new(size, &args.key, ctx.quiet);
        ctx.cache
            .set_stream(&args.key, reader_stream(reader, progress), opts)
            .await
            .map_err(|e| match e {
                etl_cache::Error::Stream { source, .. } => Failure::new(
                    format!("reading {name} failed: {source}; nothing was stored"),
                    "the previous value of the key, if any, is intact",
                ),
                e => e.into(),
            })?
    };
    ctx.say(&summary(&meta, args.ttl))?;
    Ok(Status::Ok)
}

/// Reads the whole input (on a thread: stdin may block) and checks it.
async fn read_value(
    mut reader: Box<dyn Read + Send>,
    name: &str,
    json: bool,
) -> Result<Value, Failure> {
    let read = tokio::task::spawn_blocking(move || {
        let mut buf = Vec::new();
        reader.read_to_end(&mut buf).map(|_| buf)
    })
    .await
    .map_err(|e| Failure::Error {
        message: format!("reading {name} stopped: {e}"),
        hint: None,
    })?;
    let bytes = read.map_err(|e| cannot_read(Path::new(name), &e))?;
    if json {
        let doc = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::new(
                format!("{name} is not valid JSON: {e}"),
                "fix the document, or drop --json to store it as bytes",
            )
        })?;
        return Ok(Value::Json(doc));
    }
    String::from_utf8(bytes).map(Value::Text).map_err(|e| {
        Failure::new(
            format!(
                "{name} is not valid UTF-8 (first bad byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
            "drop --text to store it as bytes",
        )
    })
}

fn cannot_read(path: &Path, e: &std::io::Error) -> Failure {
    Failure::new(
        format!("cannot read {}: {e}", path.display()),
        "check the path and its permissions; use `-` to read stdin",
    )
}

fn summary(m: &EntryMeta, ttl: Option<Duration>) -> String {
    let mut s = format!(
        "stored {}: {} of {}",
        display_key(&m.key),
        human_bytes(m.logical_len),
        m.kind
    );
    s.push_str(&format!(", {} on disk", human_bytes(m.size)));
    if m.codec != etl_cache::Codec::None {
        s.push_str(&format!(" ({})", m.codec));
    }
    if let Some(ttl) = ttl {
        s.push_str(&format!(", expires in {}", human_duration(ttl)));
    }
    s
}
