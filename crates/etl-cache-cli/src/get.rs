//! `etl-cache get KEY [-o FILE]`: an entry's logical bytes, streamed.

use std::path::{Path, PathBuf};

use etl_cache::{Error, stream_read_error};
use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::context::Ctx;
use crate::outcome::{CmdResult, Failure, Status};
use crate::transfer::{CHUNK, Progress};

/// Arguments of `get`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The key
    pub key: String,

    /// Write to FILE instead of stdout (replaced only once the whole value is
    /// read and checked)
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Writes the entry's value (text as UTF-8, JSON as stored: compact for a
/// document, as given for bytes stored as JSON; bytes as they are) without
/// ever holding it whole in memory.
pub async fn run(ctx: &Ctx, args: &Args) -> CmdResult {
    let key = &args.key;
    let Some(found) = ctx.cache.get_stream(key, CHUNK).await? else {
        eprintln!("etl-cache: no entry for key {key:?}");
        return Ok(Status::Miss);
    };
    let total = found.meta().logical_len;
    let progress = Progress::new(Some(total), key, ctx.quiet);
    match args.output.as_deref() {
        None => {
            let mut out = tokio::io::stdout();
            copy(key, found, &mut out, progress, Failure::stdout).await?;
        }
        Some(path) if path == Path::new("-") => {
            let mut out = tokio::io::stdout();
            copy(key, found, &mut out, progress, Failure::stdout).await?;
        }
        Some(path) => to_file(key, found, path, progress).await?,
    }
    Ok(Status::Ok)
}

/// Writes to a temp file beside `path`, renamed over it once complete, so a
/// corrupt entry or a failure never leaves a partial file under that name.
async fn to_file(
    key: &str,
    found: etl_cache::GetStream,
    path: &Path,
    progress: Progress,
) -> Result<(), Failure> {
    let name = path.file_name().ok_or_else(|| {
        Failure::new(
            format!("-o {}: not a file name", path.display()),
            "give a file path, or `-o -` for stdout",
        )
    })?;
    let write_failure = |e: std::io::Error| {
        Failure::new(
            format!("cannot write {}: {e}", path.display()),
            "check that the directory exists, is writable and its disk is not full",
        )
    };
    // A fresh file of a random name (created exclusively, so a link or a
    // file planted under a guessable name is never followed or reused), with
    // the permissions a plain create gives (0666 less the umask).
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".etl-cache.tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let (file, tmp) = builder
        .tempfile_in(dir)
        .map_err(write_failure)?
        .into_parts();
    // `tmp` removes the file when dropped, unless it was moved into place.
    let mut file = tokio::fs::File::from_std(file);
    let copied = copy(key, found, &mut file, progress, write_failure).await;
    let done = match copied {
        Ok(()) => file.sync_all().await.map_err(write_failure),
        Err(f) => Err(f),
    };
    drop(file);
    done?;
    let shown = tmp.to_path_buf();
    tmp.persist(path).map_err(|e| {
        Failure::new(
            format!(
                "cannot move {} to {}: {}",
                shown.display(),
                path.display(),
                e.error
            ),
            "check that the destination is writable",
        )
    })?;
    Ok(())
}

async fn copy<W: AsyncWrite + Unpin>(
    key: &str,
    found: etl_cache::GetStream,
    out: &mut W,
    mut progress: Progress,
    write_failure: impl Fn(std::io::Error) -> Failure,
) -> Result<(), Failure> {
    let (_, mut stream) = found.into_parts();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| read_failure(key, e))?;
        out.write_all(&chunk).await.map_err(&write_failure)?;
        progress.inc(chunk.len() as u64);
    }
    out.flush().await.map_err(&write_failure)?;
    progress.finish();
    Ok(())
}

/// A failure reading the entry part way: what was written to stdout is
/// incomplete (a file given with -o is left untouched).
fn read_failure(key: &str, e: std::io::Error) -> Failure {
    match stream_read_error(key, e) {
        e @ Error::Corrupt { .. } => Failure::new(
            e.to_string(),
            "any output written so far is incomplete: discard it, and store the value \
             again with `etl-cache set`",
        ),
        e => e.into(),
    }
}
