//! The command line of ai-proxy, kept beside our own flags: `apiproxy run
//! [--daemon] [--config FILE]`, `apiproxy stop | status | reload [--config
//! FILE]` through the pid file of that config, `--config` as the long form
//! of `-c`. Each through the real binary, foreground and daemonized.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, free_port, Gateway, MockProvider, Reply, TempDir, WAIT};

const BODY: &str = "providers:\n  - { id: p, kind: openai, base_url: \"http://127.0.0.1:9\", api_keys: [sk-up], models: [m] }\n";

fn apiproxy(args: &[&str], cwd: Option<&Path>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_apiproxy"));
    c.args(args).stdin(Stdio::null());
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    c.output().expect("run apiproxy")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits until `file` contains `needle`; fails the test with what it holds.
async fn file_until(file: &Path, needle: &str) -> String {
    let end = Instant::now() + WAIT;
    loop {
        let t = std::fs::read_to_string(file).unwrap_or_default();
        if t.contains(needle) {
            return t;
        }
        assert!(
            Instant::now() < end,
            "{needle:?} never appeared in {}:\n{t}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn status_reload_and_stop_find_a_foreground_gateway_through_its_pid_file() {
    let mut gw = Gateway::start(BODY).await;
    let conf = gw.config_path.to_str().unwrap().to_owned();

    let st = apiproxy(&["status", "--config", &conf], None);
    let out = text(&st);
    assert_eq!(st.status.code(), Some(0), "{out}");
    assert!(out.contains(&format!("pid:       {}", gw.pid())), "{out}");
    assert!(out.contains(&format!("127.0.0.1:{}", gw.port)), "{out}");
    assert!(
        out.contains(&format!("127.0.0.1:{} (metrics)", gw.metrics_port)),
        "{out}"
    );
    assert!(out.contains("uptime:"), "{out}");

    // reload: the gateway re-reads the file (SIGHUP), here with a second model.
    let changed = std::fs::read_to_string(&gw.config_path)
        .unwrap()
        .replace("models: [m]", "models: [m, m2]");
    std::fs::write(&gw.config_path, changed).unwrap();
    let r = apiproxy(&["reload", "-c", &conf], None);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    gw.expect_log("config reloaded from").await;

    let s = apiproxy(&["stop", "--config", &conf], None);
    assert_eq!(s.status.code(), Some(0), "{}", text(&s));
    let exit = gw
        .wait_exit(WAIT)
        .await
        .expect("the gateway exited after stop");
    assert!(exit.success(), "{exit:?}");
    assert!(
        !gw.dir().join("apiproxy.pid").exists(),
        "the pid file went with the process"
    );

    let st = apiproxy(&["status", "--config", &conf], None);
    assert_eq!(st.status.code(), Some(3), "{}", text(&st));
    assert!(
        text(&st).contains("is not running: no pid file"),
        "{}",
        text(&st)
    );
    // Reloading what does not run fails like status; stopping it is done.
    assert_eq!(
        apiproxy(&["reload", "--config", &conf], None).status.code(),
        Some(3)
    );
    assert_eq!(
        apiproxy(&["stop", "--config", &conf], None).status.code(),
        Some(0)
    );
}

#[test]
fn a_pid_file_naming_another_program_is_not_the_gateway() {
    let dir = TempDir::new();
    let conf = dir.0.join("apiproxy.yaml");
    let pid_file = dir.0.join("apiproxy.pid");
    std::fs::write(
        &conf,
        format!(
            "server:\n  listen: 127.0.0.1:{}\n  pid_file: {}\n  upgrade_sock: {}/u.sock\n{BODY}",
            free_port(),
            pid_file.display(),
            dir.0.display()
        ),
    )
    .unwrap();
    let mut other = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(&pid_file, other.id().to_string()).unwrap();
    let conf = conf.to_str().unwrap();
    let st = apiproxy(&["status", "--config", conf], None);
    assert_eq!(st.status.code(), Some(3), "{}", text(&st));
    assert!(
        text(&st).contains("not a running apiproxy"),
        "{}",
        text(&st)
    );
    // stop and reload never signal a process that is not ours.
    assert_eq!(
        apiproxy(&["stop", "--config", conf], None).status.code(),
        Some(0)
    );
    assert_eq!(
        apiproxy(&["reload", "--config", conf], None).status.code(),
        Some(3)
    );
    assert_eq!(other.try_wait().unwrap(), None, "sleep is still running");
    other.kill().unwrap();
    let _ = other.wait();
}

/// Kills the daemon named by a pid file when a test ends early.
struct DaemonGuard(PathBuf);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

#[tokio::test]
async fn run_daemon_with_a_relative_config_then_status_reload_and_stop() {
    let provider =
        MockProvider::always(Reply::json(200, common::openai_completion("m", "hi"))).await;
    let dir = TempDir::new();
    let port = free_port();
    let pid_file = dir.0.join("apiproxy.pid");
    let _guard = DaemonGuard(pid_file.clone());
    let conf = format!(
        "server:\n  listen: 127.0.0.1:{port}\n  pid_file: {}\n  upgrade_sock: {}/u.sock\n  grace_period_seconds: 1\n  graceful_shutdown_timeout_seconds: 1\nproviders:\n  - {{ id: p, kind: openai, base_url: \"{}\", api_keys: [sk-up], models: [m] }}\n",
        pid_file.display(),
        dir.0.display(),
        provider.base_url()
    );
    std::fs::write(dir.0.join("apiproxy.yaml"), &conf).unwrap();
    let log = dir.0.join("daemon.log");
    // A relative path, from the config's directory: the daemon runs from `/`
    // and must still re-read the same file on reload.
    let started = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .args(["run", "--daemon", "--config", "apiproxy.yaml"])
        .current_dir(&dir.0)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .expect("run apiproxy");
    assert!(
        started.success(),
        "{started:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // The parent returns at the fork, before the child writes its pid file
    // and binds its listeners: a service manager waits for both, as this does.
    let written = eventually(WAIT, || async { pid_file.exists() }).await;
    assert!(written, "no pid file");
    common::wait_listening(port).await;
    let st = apiproxy(&["status", "--config", "apiproxy.yaml"], Some(&dir.0));
    let out = text(&st);
    assert_eq!(st.status.code(), Some(0), "{out}");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(out.contains(&format!("pid:       {pid}")), "{out}");
    let r = common::client()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the daemon serves");

    let r = apiproxy(&["reload", "--config", "apiproxy.yaml"], Some(&dir.0));
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    let logged = file_until(&log, "config reloaded from").await;
    assert!(!logged.contains("config reload rejected"), "{logged}");

    let s = apiproxy(&["stop", "--config", "apiproxy.yaml"], Some(&dir.0));
    assert_eq!(s.status.code(), Some(0), "{}", text(&s));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || {
            // A zombie until its parent (init) reaps it.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
        }
    );
    let st = apiproxy(&["status", "--config", "apiproxy.yaml"], Some(&dir.0));
    assert_eq!(st.status.code(), Some(3), "{}", text(&st));
}

#[test]
fn config_is_the_long_form_of_c() {
    let dir = TempDir::new();
    let conf = dir.0.join("apiproxy.yaml");
    std::fs::write(&conf, BODY).unwrap();
    let o = apiproxy(&["-t", "--config", conf.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("config ok"));
    let o = apiproxy(&["-t", "--conf", conf.to_str().unwrap()], None);
    assert!(o.status.success(), "the old long form stays: {}", text(&o));
}

/// The allocator's options are compiled into the binary (`src/main.rs`):
/// jemalloc reports the thread cache covering Pingora's 64 KiB body
/// buffers, and the environment can still override it.
#[cfg(not(target_env = "msvc"))]
#[test]
fn the_allocator_caches_body_buffers_per_thread() {
    let run = |conf: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
            .arg("--version")
            .env("_RJEM_MALLOC_CONF", conf)
            .stdin(Stdio::null())
            .output()
            .expect("run apiproxy");
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        text(&o)
    };
    let out = run("stats_print:true");
    assert!(out.contains("opt.tcache_max: 65536"), "{out}");
    let out = run("stats_print:true,tcache_max:32768");
    assert!(out.contains("opt.tcache_max: 32768"), "{out}");
}
