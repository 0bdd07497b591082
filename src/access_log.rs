//! The access log: one line per request, buffered.
//!
//! Writing each line straight to stderr (as the `log` crate's logger does)
//! costs a system call per request, about a tenth of the gateway's
//! throughput at saturation (benches/README.md). Lines are collected in a
//! buffer instead and written by a background thread every 200 ms, or at once
//! when 64 KiB have gathered; like nginx's `access_log ... buffer= flush=`,
//! at most the last 200 ms of lines are lost if the process dies.
//! The line goes out when the `access` log target is enabled at info
//! (`log.level` / `RUST_LOG`).

use std::io::Write;
use std::time::Duration;

use once_cell::sync::Lazy;
use parking_lot::Mutex;

const FLUSH_BYTES: usize = 64 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(200);

static BUFFER: Lazy<Mutex<Vec<u8>>> = Lazy::new(|| {
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(|| loop {
            std::thread::sleep(FLUSH_EVERY);
            flush();
        })
        .ok();
    Mutex::new(Vec::with_capacity(FLUSH_BYTES))
});

/// Whether access lines are wanted at all.
pub fn enabled() -> bool {
    log::log_enabled!(target: "access", log::Level::Info)
}

/// Appends one line (`line` without its newline), with a timestamp.
pub fn write(line: std::fmt::Arguments<'_>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let full = {
        let mut b = BUFFER.lock();
        let _ = writeln!(
            b,
            "[{}.{:03} access] {line}",
            now.as_secs(),
            now.subsec_millis()
        );
        b.len() >= FLUSH_BYTES
    };
    if full {
        flush();
    }
}

/// Writes out what is buffered.
pub fn flush() {
    let pending = {
        let mut b = BUFFER.lock();
        if b.is_empty() {
            return;
        }
        std::mem::replace(&mut *b, Vec::with_capacity(FLUSH_BYTES))
    };
    let _ = std::io::stderr().lock().write_all(&pending);
}
