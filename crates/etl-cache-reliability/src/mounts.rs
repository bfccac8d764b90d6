//! Mounts for fault tests and benchmarks: a small tmpfs (a disk that fills
//! up), a read-only bind mount (a root that turns read-only) and a
//! loop-mounted ext4 image with a journal (the file system most machines
//! have). They need root; they are undone on drop.

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

    /// Makes an ext4 image of `size` bytes with a journal at `image` (a file
    /// it creates) and loop-mounts it on `dir`, which must exist. Inode tables
    /// and the journal are written in full by `mkfs`, so no background
    /// initialisation runs while it is measured. The loop device is released
    /// when it is unmounted; the image file is the caller's to remove.
    ///
    /// # Errors
    ///
    /// The complaint of `mkfs.ext4` or `mount` (not root, no loop devices).
    pub fn ext4(dir: &Path, image: &Path, size: u64) -> Result<Mount, String> {
        let f = std::fs::File::create(image)
            .map_err(|e| format!("cannot create {}: {e}", image.display()))?;
        f.set_len(size)
            .map_err(|e| format!("cannot size {}: {e}", image.display()))?;
        drop(f);
        run(Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-O",
                "has_journal",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
            ])
            .arg(image))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
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
