//! `apiproxy stop | status | reload`: a running gateway found through the
//! pid file of its config (`server.pid_file`), as ai-proxy's command line
//! and `systemctl` do it. `status` exits 0 when the gateway runs and 3 when
//! it does not (the LSB code `systemctl status` uses).
//!
//! A pid file can outlive its process, and the pid can be taken by another
//! program since: a pid counts as the gateway only while its process runs
//! a program named `apiproxy` (`/proc/<pid>/exe`, or its command line when
//! that link cannot be read).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::ServerSettings;

/// The exit code of `status` (and of `reload`) when no gateway runs.
pub const NOT_RUNNING: i32 = 3;

/// A gateway process found through its pid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub pid: i32,
    /// Seconds since the process started.
    pub uptime: Option<u64>,
}

/// Why no running gateway was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRunning {
    /// No pid file (never started, or stopped cleanly).
    NoPidFile,
    /// The pid file does not hold a pid.
    Unreadable(String),
    /// The pid file names a process that is gone or is not apiproxy.
    Stale(i32),
}

impl std::fmt::Display for NotRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRunning::NoPidFile => write!(f, "no pid file"),
            NotRunning::Unreadable(e) => write!(f, "the pid file cannot be read: {e}"),
            NotRunning::Stale(pid) => write!(
                f,
                "the pid file names {pid}, which is not a running apiproxy"
            ),
        }
    }
}

/// The gateway whose pid file is `pid_file`, if it runs.
pub fn find(pid_file: &Path) -> Result<Running, NotRunning> {
    let text = match std::fs::read_to_string(pid_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(NotRunning::NoPidFile),
        Err(e) => return Err(NotRunning::Unreadable(e.to_string())),
    };
    let pid: i32 = match text.trim().parse() {
        Ok(p) if p > 1 => p,
        _ => return Err(NotRunning::Unreadable("not a pid".into())),
    };
    if !is_apiproxy(pid) {
        return Err(NotRunning::Stale(pid));
    }
    Ok(Running {
        pid,
        uptime: uptime_of(pid),
    })
}

/// Whether `pid` is a live process running a program named `apiproxy`.
fn is_apiproxy(pid: i32) -> bool {
    let named = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("apiproxy"))
    };
    if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        // A binary replaced on disk by an upgrade reads as "apiproxy (deleted)".
        return named(&exe);
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmd) => {
            let argv0 = cmd.split(|b| *b == 0).next().unwrap_or_default();
            named(Path::new(&*String::from_utf8_lossy(argv0)))
        }
        Err(_) => false,
    }
}

/// Seconds since `pid` started, from `/proc` (its start time in clock
/// ticks after boot, against the machine's uptime).
fn uptime_of(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (1-based) of the line; the command name (field 2) may hold
    // spaces and parentheses, so count from its closing parenthesis.
    let after = stat.rsplit_once(')')?.1;
    let start_ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    let boot: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((boot as u64).saturating_sub(start_ticks / hz))
}

/// Sends `signal` to a running gateway.
pub fn signal(r: &Running, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill has no memory preconditions; the pid was checked to be
    // an apiproxy process just before.
    if unsafe { libc::kill(r.pid, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits until the process is gone, up to `limit`.
pub fn wait_gone(r: &Running, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if !is_apiproxy(r.pid) || is_zombie(r.pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// How long `stop` waits for a gateway to finish: its grace period and
/// shutdown timeout, plus room to flush the store.
pub fn stop_wait(s: &ServerSettings) -> Duration {
    Duration::from_secs(s.grace_period_seconds + s.graceful_shutdown_timeout_seconds + 10)
}

/// Writes this process's pid to `path` (a foreground gateway: Pingora writes
/// the pid file only when it daemonizes). Written to a temporary name and
/// renamed, so a reader never sees half a pid; a gateway taking over by
/// upgrade overwrites its predecessor's.
pub fn write_pid_file(path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    std::fs::rename(&tmp, path)
}

/// Removes the pid file at exit, unless another process (the gateway that
/// took over by upgrade) has written its own pid there since.
pub fn remove_pid_file_if_ours(path: &Path) {
    let ours = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

/// `1h 2m 3s`.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_systemctl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(65), "1m 5s");
        assert_eq!(human_duration(3_725), "1h 2m 5s");
        assert_eq!(human_duration(90_061), "1d 1h 1m");
    }

    #[test]
    fn a_pid_file_is_believed_only_for_a_running_apiproxy() {
        let dir = std::env::temp_dir().join(format!("apiproxy-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.pid");
        assert_eq!(find(&f), Err(NotRunning::NoPidFile));
        std::fs::write(&f, "garbage").unwrap();
        assert!(matches!(find(&f), Err(NotRunning::Unreadable(_))));
        // This test process is not named apiproxy (the test binary is `apiproxy-<hash>`
        // only for the lib's unit tests: take pid 1, which never is).
        std::fs::write(&f, "1\n").unwrap();
        assert!(matches!(
            find(&f),
            Err(NotRunning::Unreadable(_)) | Err(NotRunning::Stale(_))
        ));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&f, child.id().to_string()).unwrap();
        assert_eq!(find(&f), Err(NotRunning::Stale(child.id() as i32)));
        child.kill().unwrap();
        let _ = child.wait();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
