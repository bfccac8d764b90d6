//! Mounts for fault tests: a small tmpfs (a disk that fills up) and a
//! read-only bind mount (a root that turns read-only). Both need root; they
//! are undone on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mount, unmounted on drop.
#[derive(Debug)]
pub struct Mount {
    path: PathBuf,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Mount {
    /// Mounts a tmpfs of `size` bytes (and at most `inodes` inodes, when
    /// given) on `dir`, which must exist.
    ///
    /// # Errors
    ///
    /// The `mount` command's complaint (not root, no `mount`, no tmpfs).
    pub fn tmpfs(dir: &Path, size: u64, inodes: Option<u64>) -> Result<Mount, String> {
        let mut opts = format!("size={size},mode=0700");
        if let Some(n) = inodes {
            opts.push_str(&format!(",nr_inodes={n}"));
        }
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(dir))?;
        Ok(Mount {
            path: dir.to_path_buf(),
        })
    }

    /// Makes `dir` read-only in place: binds it onto itself, then remounts
    /// the bind read-only. Root ignores file permissions, so this is what
    /// makes writes fail with `EROFS` for a test running as root. Files
    /// opened before keep their access.
    ///
    /// # Errors
    ///
    /// The `mount` command's complaint.
    pub fn read_only(dir: &Path) -> Result<Mount, String> {
        run(Command::new("mount").arg("--bind").arg(dir).arg(dir))?;
        let m = Mount {
            path: dir.to_path_buf(),
        };
        run(Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(dir))?;
        Ok(m)
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts now.
    ///
    /// # Errors
    ///
    /// The `umount` command's complaint.
    pub fn unmount(mut self) -> Result<(), String> {
        let r = run(Command::new("umount").arg(&self.path));
        if r.is_ok() {
            self.path = PathBuf::new();
        }
        r
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() && run(Command::new("umount").arg(&self.path)).is_err()
        {
            // Busy (a file still open): detach it lazily rather than leak it.
            let _ = run(Command::new("umount").arg("-l").arg(&self.path));
        }
    }
}
