//! `haul bench loopback`: both ends in one process over 127.0.0.1, file to file, for a quick
//! look. Not the headline benchmark (that one runs two processes in a fresh network
//! namespace: benches/). Files live in a temporary directory on /dev/shm when it exists.
//!
//! Invariant: the temporary directory is removed on every exit path (a guard owns it).

use crate::args::TransferFlags;
use crate::transfer::{RecvPlan, SendPlan, send, serve_one};
use anyhow::{Context, Result, bail};
use haul_proto::setup::Psk;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// Bytes written per call while filling the source file.
const FILL_CHUNK: usize = 1 << 20;

/// Removes the bench directory when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> Result<TempDir> {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).context("reading the OS random generator")?;
    let dir = base.join(format!("haul-bench-{}", hex::encode(r)));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(TempDir(dir))
}

/// Fill `path` with `size` incompressible bytes (BLAKE3 in XOF mode: fast and not all zeros).
fn write_source(path: &Path, size: u64) -> Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut xof = blake3::Hasher::new().update(b"haul bench loopback").finalize_xof();
    let mut buf = vec![0u8; FILL_CHUNK];
    let mut left = size;
    while left > 0 {
        let n = left.min(FILL_CHUNK as u64) as usize;
        xof.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    Ok(())
}

fn cpu_seconds() -> f64 {
    // /proc/self/stat fields 14 and 15: utime and stime in clock ticks (100 Hz on Linux).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

pub fn loopback(size: u64, flags: TransferFlags) -> Result<()> {
    let dir = temp_dir()?;
    let src = dir.0.join("source");
    let dest = dir.0.join("dest");
    std::fs::create_dir(&dest).with_context(|| format!("creating {}", dest.display()))?;
    write_source(&src, size)?;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).context("reading the OS random generator")?;
    let psk = Psk::new(key);
    key.fill(0);
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1")?;
    let to = listener.local_addr().context("listener address")?;
    let recv_plan =
        RecvPlan { dest: dest.clone(), flags: TransferFlags { json: false, ..flags.clone() } };
    let (files, sources) = crate::walk::collect(std::slice::from_ref(&src))?;
    let shards = flags.shards.unwrap_or_else(crate::args::default_shards);
    let cipher =
        flags.cipher.map_or(haul_proto::crypto::SuiteId::Aes128CfbCmac, |c| c.to_suite()).name();
    let cpu0 = cpu_seconds();
    let started = std::time::Instant::now();
    let (sent, received) = std::thread::scope(|s| {
        let server_psk = psk.clone();
        let server = s.spawn(move || -> Result<_> {
            let (stream, _) = listener.accept().context("accepting the sender")?;
            serve_one(stream, &server_psk, &recv_plan, None)
        });
        let sent = send(to, psk, SendPlan { files, sources, attrs: Vec::new(), flags }, None);
        let received = server.join().map_err(|_| anyhow::anyhow!("the receiver thread panicked"));
        (sent, received)
    });
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let sent = sent.context("sender")?;
    received?.context("receiver")?;
    if sent.outcome != haul_proto::session::Outcome::Complete {
        bail!("the transfer did not complete");
    }
    println!(
        "haul bench loopback: a quick look, one process, both ends; not the headline benchmark"
    );
    println!(
        "{size} bytes, {shards} shard(s), {cipher}: {:.2} Gbit/s, {secs:.2} s, \
         CPU {cpu:.2} s both ends ({:.2} s/GiB), backend {}",
        size as f64 * 8.0 / secs / 1e9,
        cpu / (size as f64 / f64::from(1u32 << 30)),
        sent.backend.name()
    );
    Ok(())
}
