//! The few OS-specific bits.

use std::fs::{File, Metadata, OpenOptions};
use std::io;

#[cfg(unix)]
use rustix::fs::OFlags;
#[cfg(unix)]
use rustix::io::Errno;

/// Open flags as `OpenOptionsExt::custom_flags` takes them.
#[cfg(unix)]
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn oflags(flags: OFlags) -> i32 {
    flags.bits() as i32
}

/// Whether `e` is one of `codes`.
#[cfg(unix)]
pub(crate) fn is_errno(e: &io::Error, codes: &[Errno]) -> bool {
    e.raw_os_error()
        .is_some_and(|code| codes.iter().any(|c| c.raw_os_error() == code))
}

#[cfg(unix)]
#[cfg_attr(target_os = "linux", allow(dead_code))] // `dirs` opens by descriptor there
pub(crate) fn private_nofollow(opts: &mut OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    opts.mode(0o600)
        .custom_flags(oflags(OFlags::NOFOLLOW | OFlags::CLOEXEC));
}

#[cfg(not(unix))]
pub(crate) fn private_nofollow(_opts: &mut OpenOptions) {}

/// Read-only, not following symlinks, and not blocking on a FIFO planted in
/// place of an entry.
#[cfg(unix)]
#[cfg_attr(target_os = "linux", allow(dead_code))] // `dirs` opens by descriptor there
pub(crate) fn read_nofollow(opts: &mut OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    opts.custom_flags(oflags(
        OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
    ));
}

#[cfg(not(unix))]
pub(crate) fn read_nofollow(_opts: &mut OpenOptions) {}

/// Identity of a file, to check later that a path still names it.
#[cfg(unix)]
pub(crate) fn file_id(m: &Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
pub(crate) fn file_id(m: &Metadata) -> (u64, u64) {
    (
        m.len(),
        m.modified()
            .map(|t| t.elapsed().map(|d| d.as_nanos() as u64).unwrap_or(0))
            .unwrap_or(0),
    )
}

#[cfg(unix)]
pub(crate) fn set_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
pub(crate) fn set_private_dir(_path: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

/// Reads exactly `buf.len()` bytes at `offset`.
#[cfg(unix)]
pub(crate) fn read_exact_at(f: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.read_exact_at(buf, offset)
}

#[cfg(windows)]
pub(crate) fn read_exact_at(
    f: &std::fs::File,
    mut buf: &mut [u8],
    mut offset: u64,
) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Writes all of `buf` at `offset`.
#[cfg(unix)]
pub(crate) fn write_all_at(f: &std::fs::File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(buf, offset)
}

#[cfg(windows)]
pub(crate) fn write_all_at(
    f: &std::fs::File,
    mut buf: &[u8],
    mut offset: u64,
) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        let n = f.seek_write(buf, offset)?;
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Flushes a directory entry (a rename) to stable storage.
#[cfg(unix)]
#[cfg_attr(target_os = "linux", allow(dead_code))] // `dirs` syncs by descriptor there
pub(crate) fn sync_dir(path: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

#[cfg(not(unix))]
pub(crate) fn sync_dir(_path: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

/// Whether a failed exchange (`dirs::exchange`) means the file system (or kernel) cannot
/// swap files at all.
pub(crate) fn is_unsupported(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error().is_some() {
        return is_errno(
            e,
            &[Errno::INVAL, Errno::NOSYS, Errno::OPNOTSUPP, Errno::NOTSUP],
        );
    }
    e.kind() == std::io::ErrorKind::Unsupported
}

/// Whether [`read_at`] works here, so that two threads can read one file.
pub(crate) const POSITIONAL_READS: bool = cfg!(any(unix, windows));

/// Reads from `offset` without using (or, on Unix, moving) the file's
/// position, so that threads sharing `f` do not race on it.
#[cfg(unix)]
pub(crate) fn read_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(f, buf, offset)
}

#[cfg(windows)]
pub(crate) fn read_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(f, buf, offset)
}

#[cfg(not(any(unix, windows)))]
pub(crate) fn read_at(_f: &File, _buf: &mut [u8], _offset: u64) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "positional reads are not available on this platform",
    ))
}

/// Reads into `buf` from `offset` of `f` until it is full or the file ends;
/// the bytes read.
pub(crate) fn fill_at(f: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match read_at(f, &mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
