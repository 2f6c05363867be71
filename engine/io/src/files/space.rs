//! Free space of the destination filesystem, and the "need N bytes" check.
//!
//! [`free_space`] reads `fstatvfs` on any open fd of the filesystem; [`check_space`] turns a
//! shortfall into [`FileError::DiskFull`], whose message reads like
//! "not enough space for big.bin: need 1.0 GiB, 512 MiB available on /mnt/x".
//!
//! Invariant: available space is what an unprivileged writer may use (`f_bavail`), the figure
//! `df` shows; root may have a little more (reserved blocks), never less.

use super::dest::DestRoot;
use super::error::{FileError, Op};
use std::os::fd::AsFd;

/// Space on one filesystem, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsSpace {
    /// Bytes an unprivileged writer may still allocate.
    pub available_bytes: u64,
    /// Size of the filesystem.
    pub total_bytes: u64,
}

/// Free space of the filesystem holding `fd`. `file` names the file for the error message.
pub fn free_space(fd: impl AsFd, file: &str) -> Result<FsSpace, FileError> {
    let st = rustix::fs::fstatvfs(fd).map_err(|e| FileError::io(file, Op::Statvfs, e))?;
    let unit = if st.f_frsize > 0 { st.f_frsize } else { st.f_bsize };
    Ok(FsSpace {
        available_bytes: st.f_bavail.saturating_mul(unit),
        total_bytes: st.f_blocks.saturating_mul(unit),
    })
}

/// Checks that the destination has room for `needed` more bytes of `file`.
pub fn check_space(dest: &DestRoot, file: &str, needed: u64) -> Result<(), FileError> {
    let space = free_space(dest.as_fd(), file)?;
    if space.available_bytes >= needed {
        return Ok(());
    }
    Err(FileError::DiskFull {
        file: file.to_owned(),
        needed,
        available: space.available_bytes,
        fs: dest.path().to_owned(),
    })
}

/// A byte count for people: "512 MiB", "1.0 GiB", "3 B". Below 10 units, one decimal.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(512 << 20), "512 MiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(u64::MAX), "16 EiB");
    }

    #[test]
    fn disk_full_message_names_file_and_sizes() {
        let e = FileError::DiskFull {
            file: "big.bin".into(),
            needed: 1 << 30,
            available: 512 << 20,
            fs: "/mnt/x".into(),
        };
        assert_eq!(
            e.to_string(),
            "not enough space for big.bin: need 1.0 GiB, 512 MiB available on /mnt/x"
        );
    }
}
