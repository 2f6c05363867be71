//! The end-of-transfer summary: human text on stdout, or one JSON object with `--json`
//! (schema in docs/CLI.md, "JSON summary"), and the progress bar on stderr.
//!
//! Invariant: the summary names an aborted transfer's reason, the disk error and the file, so
//! the operator knows what to fix; keys and tokens never appear here.

use anyhow::{Result, bail};
use haul_io::transfer::{Progress, TransferReport};
use haul_proto::session::{FileEntry, Outcome, RejectCounts};
use std::io::IsTerminal;

/// The wire code of an outcome (`Summary::outcome`): 0 complete, else the abort reason.
pub fn abort_code(outcome: &Outcome) -> u16 {
    match outcome {
        Outcome::Complete => haul_proto::setup::OUTCOME_COMPLETE,
        Outcome::Aborted { reason, .. } => *reason as u16,
    }
}

/// Ok for a complete transfer; otherwise an error naming the reason, disk error and file, and
/// the runtime's detail when it has one (such as the space a full disk lacks).
pub fn check_outcome(outcome: &Outcome, files: &[FileEntry], detail: Option<&str>) -> Result<()> {
    match outcome {
        Outcome::Complete => Ok(()),
        Outcome::Aborted { reason, by_peer, disk, file } => {
            let who = if *by_peer { "by the peer" } else { "here" };
            let file = file
                .and_then(|i| files.get(i as usize))
                .map_or(String::new(), |f| format!(", file {}", f.name));
            let disk = disk.map_or(String::new(), |d| format!(", disk error: {d}"));
            let detail = detail.map_or(String::new(), |d| format!(" ({d})"));
            bail!("transfer aborted {who}: {reason:?}{disk}{file}{detail}")
        }
    }
}

fn outcome_name(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Complete => "complete".into(),
        Outcome::Aborted { reason, .. } => format!("aborted: {reason:?}"),
    }
}

/// Microseconds since the Unix epoch (0 for a clock set before it).
fn unix_us(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn mbit_per_s(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 { bytes as f64 * 8.0 / secs / 1e6 } else { 0.0 }
}

fn rejects_json(r: &RejectCounts) -> serde_json::Value {
    serde_json::json!({
        "malformed": r.malformed, "wrong_session": r.wrong_session, "wrong_shard": r.wrong_shard,
        "reflected": r.reflected, "replayed": r.replayed, "stale": r.stale, "bad_tag": r.bad_tag,
        "bad_body": r.bad_body, "busy": r.busy, "duplicate": r.duplicate,
    })
}

/// The JSON summary (docs/CLI.md), serialized field by field: [`print`] streams it to stdout
/// without building a `serde_json::Value` of every file first. Fields are in name order, the
/// order `serde_json::Value`'s map gives them, so both paths print the same bytes.
///
/// Why not a `Value`: for the 10,000-file tree of `benches/smallfiles`, building it (a
/// `BTreeMap` and three `String`s per file), writing it through stdout's line buffer (about
/// 1,180 `write`s) and freeing it took 20-36 ms of CPU at each end after the transfer
/// (`perf record`, docs/FILES.md).
#[derive(serde::Serialize)]
struct JsonSummary<'a> {
    backend: &'a str,
    bytes: u64,
    cpu_seconds: f64,
    datagram_size: Option<u16>,
    files: JsonFiles<'a>,
    first_data_unix_us: Option<u64>,
    io: serde_json::Value,
    mbit_per_s: f64,
    outcome: String,
    pmtu: serde_json::Value,
    rejects: serde_json::Value,
    resent_bytes: u64,
    role: &'a str,
    seconds: f64,
    verified_unix_us: Option<u64>,
}

/// The per-file entries, serialized one by one.
struct JsonFiles<'a>(&'a [haul_io::transfer::FileSummary]);

impl serde::Serialize for JsonFiles<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|f| JsonFile {
            blake3: Hex32(f.blake3),
            name: &f.name,
            size: f.size,
        }))
    }
}

/// One file's entry, fields in name order.
#[derive(serde::Serialize)]
struct JsonFile<'a> {
    blake3: Hex32,
    name: &'a str,
    size: u64,
}

/// A 32-byte digest as 64 lowercase hex digits, encoded on the stack.
struct Hex32([u8; 32]);

impl Hex32 {
    fn encode<'b>(&self, out: &'b mut [u8; 64]) -> &'b str {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (pair, b) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
        // Only ASCII digits were written.
        std::str::from_utf8(out).unwrap_or_default()
    }
}

impl serde::Serialize for Hex32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.encode(&mut [0u8; 64]))
    }
}

impl<'a> JsonSummary<'a> {
    fn new(r: &'a TransferReport, role: &'a str) -> Self {
        let secs = r.elapsed.as_secs_f64();
        JsonSummary {
            backend: r.backend.name(),
            bytes: r.bytes,
            cpu_seconds: r.cpu_seconds,
            datagram_size: r.datagram_size,
            files: JsonFiles(&r.files),
            first_data_unix_us: r.first_data_at.map(unix_us),
            io: io_json(&r.io),
            mbit_per_s: mbit_per_s(r.bytes, secs),
            outcome: outcome_name(&r.outcome),
            pmtu: serde_json::json!({
                "probes_sent": r.pmtu.probes_sent, "probes_acked": r.pmtu.probes_acked,
                "probes_lost": r.pmtu.probes_lost, "black_holes": r.pmtu.black_holes,
                "too_large": r.pmtu.too_large,
            }),
            rejects: rejects_json(&r.rejects),
            resent_bytes: r.resent_bytes,
            role,
            seconds: secs,
            verified_unix_us: r.last_verified_at.map(unix_us),
        }
    }
}

/// The JSON summary object (docs/CLI.md), for callers that add fields to it.
pub fn to_json(r: &TransferReport, role: &str) -> serde_json::Value {
    // Cannot fail: every map key is a string and every value serializes.
    serde_json::to_value(JsonSummary::new(r, role)).unwrap_or(serde_json::Value::Null)
}

/// Write the JSON summary and a newline to `out`.
fn write_json(
    out: &mut impl std::io::Write,
    r: &TransferReport,
    role: &str,
) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, &JsonSummary::new(r, role))?;
    out.write_all(b"\n")
}

/// Buffer of the summary on stdout (JSON or text): about 130 (JSON) or 90 (text) bytes per
/// file go out in 64 KiB writes, not one `write` per line through stdout's line buffer.
const SUMMARY_BUFFER_BYTES: usize = 64 << 10;

/// How an end did its disk I/O: "io_uring, O_DIRECT", "io_uring, buffered" or
/// "pread/pwrite, buffered".
fn disk_name(io: &haul_io::backend::IoStats) -> String {
    let path = if io.disk_ring_ops > 0 { "io_uring" } else { "pread/pwrite" };
    let mode = if io.disk_direct_ops > 0 { "O_DIRECT" } else { "buffered" };
    format!("{path}, {mode}")
}

/// Whether the disk I/O used buffers registered with the ring: "registered", "refused
/// (errno N)" (the kernel refused, e.g. RLIMIT_MEMLOCK; plain Read/Write ran) or
/// "unregistered" (no ring disk I/O).
fn disk_buffers_name(io: &haul_io::backend::IoStats) -> String {
    match (io.disk_fixed_refused, io.disk_fixed_ops) {
        (0, 0) => "unregistered".into(),
        (0, _) => "registered".into(),
        _ => format!("refused (errno {})", io.disk_fixed_errno),
    }
}

/// The data plane's syscall counters (docs/CLI.md, "JSON summary").
fn io_json(io: &haul_io::backend::IoStats) -> serde_json::Value {
    serde_json::json!({
        "net_syscalls": io.syscalls, "disk_syscalls": io.disk_syscalls,
        "disk_ring_ops": io.disk_ring_ops,
        "disk_io": if io.disk_ring_ops > 0 { "io_uring" } else { "pread/pwrite" },
        "disk_direct_ops": io.disk_direct_ops,
        "disk_direct_refused_files": io.disk_direct_refused_files,
        "disk_direct_cached_files": io.disk_direct_cached_files,
        "disk_mode": if io.disk_direct_ops > 0 { "O_DIRECT" } else { "buffered" },
        "disk_buffers": disk_buffers_name(io),
        "disk_buffers_backing": io.disk_buffers_backing.map(|b| b.name()),
        "net_buffers_backing": io.net_buffers_backing.map(|b| b.name()),
        "disk_buffered_reads": io.disk_buffered_reads,
        "disk_direct_fallbacks": io.disk_direct_fallbacks,
        "disk_fixed_ops": io.disk_fixed_ops,
        "disk_fixed_bytes": io.disk_fixed_bytes,
        "datagrams_sent": io.datagrams_sent, "datagrams_received": io.datagrams_received,
        "recv_buffers": io.recv_buffers, "recv_rearms": io.recv_rearms,
        "syscalls_per_1000_datagrams": io.syscalls_per_1000_datagrams(),
    })
}

/// Print the summary on stdout, as text or JSON, in one buffered pass. If stdout is closed or
/// its file full, says so on stderr; the transfer's exit code stands (its files are in place).
pub fn print(r: &TransferReport, role: &str, json: bool) {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(SUMMARY_BUFFER_BYTES, std::io::stdout().lock());
    let written = if json { write_json(&mut out, r, role) } else { write_text(&mut out, r) };
    if let Err(e) = written.and_then(|()| out.flush()) {
        eprintln!("haul: the {role}'s summary could not be written to stdout: {e}");
    }
}

/// The human summary: one line of totals, the rejects if any, then `BLAKE3-hex  name` per file.
fn write_text(out: &mut impl std::io::Write, r: &TransferReport) -> std::io::Result<()> {
    let secs = r.elapsed.as_secs_f64();
    writeln!(
        out,
        "{}: {} file(s), {} bytes in {:.2} s ({:.1} Mbit/s), resent {} bytes, backend {}, disk {}, CPU {:.2} s",
        outcome_name(&r.outcome),
        r.files.len(),
        r.bytes,
        secs,
        mbit_per_s(r.bytes, secs),
        r.resent_bytes,
        r.backend.name(),
        disk_name(&r.io),
        r.cpu_seconds
    )?;
    let rejects = rejects_json(&r.rejects);
    if let Some(m) = rejects.as_object().filter(|m| m.values().any(|v| v.as_u64() != Some(0))) {
        let parts: Vec<String> = m
            .iter()
            .filter(|(_, v)| v.as_u64() != Some(0))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(out, "rejected datagrams: {}", parts.join(" "))?;
    }
    let mut hex = [0u8; 64];
    for f in &r.files {
        writeln!(out, "{}  {}", Hex32(f.blake3).encode(&mut hex), f.name)?;
    }
    Ok(())
}

/// A progress bar on stderr when it is a terminal: bytes, rate, ETA and resent bytes.
pub fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    let style =
        indicatif::ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg} ETA {eta}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// Update `bar` from a runtime snapshot.
pub fn show(bar: &indicatif::ProgressBar, p: &Progress) {
    bar.set_length(p.bytes_total);
    bar.set_position(p.bytes_done);
    bar.set_message(format!(
        "{:.1} Mbit/s, resent {}",
        p.rate_bps as f64 / 1e6,
        indicatif::HumanBytes(p.resent_bytes)
    ));
}
