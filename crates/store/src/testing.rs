//! Throwaway Redis deployments for tests (feature `testing`), here so the gateway's integration tests can use them
//! too: one `redis-server` ([`RedisServer`]), a three-master Redis Cluster ([`RedisCluster`]) and a master with a
//! replica watched by one Sentinel ([`RedisSentinel`]). Everything listens on free loopback ports, keeps its files
//! in a temporary directory and is killed when the guard is dropped. [`query`] sends one command to a port.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped, restartable) `redis-server` child process.
pub struct RedisServer {
    /// The loopback port it listens on (kept across [`RedisServer::restart`]).
    pub port: u16,
    /// `redis://127.0.0.1:{port}/0`.
    pub url: String,
    child: Option<Child>,
    /// Extra `redis-server` arguments (cluster, replica settings).
    args: Vec<String>,
    /// A Sentinel runs from this config file (`redis-server FILE --sentinel`).
    sentinel_conf: Option<PathBuf>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// The binary is `$REDIS_SERVER` or `redis-server` from `PATH` (`apt-get install -y redis-server`).
    /// Panics when it cannot be started: tests must not pass silently without Redis.
    pub fn start() -> RedisServer {
        let mut server = RedisServer::with_args(Vec::new());
        server.start_on_a_free_port();
        server
    }

    /// A server (not started) that will run with `args` added.
    fn with_args(args: Vec<String>) -> RedisServer {
        RedisServer {
            port: 0,
            url: String::new(),
            child: None,
            args,
            sentinel_conf: None,
        }
    }

    fn start_on_a_free_port(&mut self) {
        let mut last_error = String::new();
        // A port found free may be taken before the server binds it: try a few.
        for _ in 0..5 {
            self.port = free_port();
            self.url = format!("redis://127.0.0.1:{}/0", self.port);
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last_error = e,
            }
        }
        panic!("cannot start redis-server: {last_error}");
    }

    /// Kills the server (as a crash would: nothing is saved).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty. Panics when it cannot.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("cannot restart redis-server: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Whether the child process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let dir: PathBuf = std::env::temp_dir();
        let mut command = Command::new(&binary);
        match &self.sentinel_conf {
            Some(conf) => {
                command.arg(conf).arg("--sentinel");
            }
            None => {
                command
                    .arg("--port")
                    .arg(self.port.to_string())
                    .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&dir)
                    .args(&self.args);
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("{binary}: {e} (apt-get install -y redis-server, or set REDIS_SERVER)")
            })?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server on port {} exited: {status}",
                    self.port
                ));
            }
            if answers_ping(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("redis-server on port {} did not answer", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of three masters (no replicas) on loopback, created with `redis-cli --cluster create`.
pub struct RedisCluster {
    /// The masters, in the order given to `redis-cli`.
    pub nodes: Vec<RedisServer>,
    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub url: String,
    dir: TempDir,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them into a cluster covering every slot and waits until each
    /// says `cluster_state:ok`. Needs `redis-cli` (`$REDIS_CLI`; Debian's `redis-tools`). Panics when it cannot.
    pub fn start() -> RedisCluster {
        let dir = TempDir::new("cluster");
        let mut nodes = Vec::new();
        for i in 0..3 {
            let mut node = RedisServer::with_args(Vec::new());
            // The cluster bus gets its own free port (port + 10000 may be out of range or taken).
            node.args = vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                dir.path
                    .join(format!("nodes-{i}.conf"))
                    .display()
                    .to_string(),
                "--cluster-port".into(),
                free_port().to_string(),
                "--cluster-node-timeout".into(),
                "2000".into(),
            ];
            node.start_on_a_free_port();
            nodes.push(node);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let cli = std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".into());
        let created = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("{cli}: {e} (apt-get install -y redis-tools, or set REDIS_CLI)")
            });
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nodes.iter().all(|n| {
            query(n.port, &["CLUSTER", "INFO"])
                .ok()
                .and_then(|r| r.text())
                .is_some_and(|info| info.contains("cluster_state:ok"))
        }) {
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        RedisCluster {
            url: format!("redis+cluster://{}", addresses.join(",")),
            nodes,
            dir,
        }
    }

    /// Every key on every master (for checking where things landed).
    pub fn keys(&self) -> Vec<String> {
        let _ = &self.dir;
        let mut keys = Vec::new();
        for n in &self.nodes {
            if let Ok(Reply::Array(items)) = query(n.port, &["KEYS", "*"]) {
                keys.extend(items.into_iter().filter_map(|r| r.text()));
            }
        }
        keys.sort();
        keys
    }
}

/// A master, its replica and one Sentinel watching them (quorum 1, a master is down after 1 s of silence).
pub struct RedisSentinel {
    /// The master at start.
    pub master: RedisServer,
    /// Its replica (promoted when the master dies).
    pub replica: RedisServer,
    /// The Sentinel process.
    pub sentinel: RedisServer,
    /// `redis+sentinel://127.0.0.1:{sentinel}/apiproxy`.
    pub url: String,
    dir: TempDir,
}

/// The name the Sentinel monitors the master under.
pub const SENTINEL_MASTER_NAME: &str = "apiproxy";

impl RedisSentinel {
    /// Starts all three and waits until the Sentinel knows the replica. Panics when it cannot.
    pub fn start() -> RedisSentinel {
        let dir = TempDir::new("sentinel");
        let master = RedisServer::start();
        let mut replica = RedisServer::with_args(vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port.to_string(),
        ]);
        replica.start_on_a_free_port();
        let port = free_port();
        let conf = dir.path.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nsentinel monitor {name} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir = dir.path.display(),
                name = SENTINEL_MASTER_NAME,
                master = master.port
            ),
        )
        .expect("write sentinel.conf");
        let mut sentinel = RedisServer {
            port,
            url: format!("redis://127.0.0.1:{port}"),
            child: None,
            args: Vec::new(),
            sentinel_conf: Some(conf),
        };
        sentinel.restart();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let known = query(port, &["SENTINEL", "REPLICAS", SENTINEL_MASTER_NAME])
                .is_ok_and(|r| matches!(r, Reply::Array(ref a) if !a.is_empty()));
            let synced = query(replica.port, &["INFO", "replication"])
                .ok()
                .and_then(|r| r.text())
                .is_some_and(|i| i.contains("master_link_status:up"));
            if known && synced {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the Sentinel did not see the replica"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        RedisSentinel {
            url: format!("redis+sentinel://127.0.0.1:{port}/{SENTINEL_MASTER_NAME}"),
            master,
            replica,
            sentinel,
            dir,
        }
    }

    /// The port of the master the Sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        let _ = &self.dir;
        match query(
            self.sentinel.port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME],
        ) {
            Ok(Reply::Array(a)) => a
                .into_iter()
                .nth(1)
                .and_then(Reply::text)
                .and_then(|p| p.parse().ok()),
            _ => None,
        }
    }
}

/// A directory removed when dropped.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A fresh directory of its own: named after a counter (a free port
    /// may be handed out twice), the next number when a leftover has it.
    fn new(what: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        loop {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("apiproxy-{what}-{}-{n}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return TempDir { path },
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("a temporary directory {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A Redis reply, as [`query`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Status(String),
    /// `-ERR ...`.
    Error(String),
    /// `:1`.
    Int(i64),
    /// `$...` (`None`: the null bulk string).
    Bulk(Option<String>),
    /// `*...`.
    Array(Vec<Reply>),
}

impl Reply {
    /// The text of a status or bulk reply.
    pub fn text(self) -> Option<String> {
        match self {
            Reply::Status(s) | Reply::Bulk(Some(s)) => Some(s),
            Reply::Int(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// Sends one command to the Redis (or Sentinel) on loopback `port` and reads its reply.
pub fn query(port: u16, args: &[&str]) -> Result<Reply, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reader = std::io::BufReader::new(stream);
    read_reply(&mut reader)
}

fn read_reply(r: &mut impl std::io::BufRead) -> Result<Reply, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(line.len().min(1));
    let number = || rest.parse::<i64>().map_err(|e| format!("{line}: {e}"));
    match kind {
        "+" => Ok(Reply::Status(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => Ok(Reply::Int(number()?)),
        "$" => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Reply::Bulk(None));
            };
            let mut buf = vec![0u8; len + 2];
            r.read_exact(&mut buf).map_err(|e| e.to_string())?;
            buf.truncate(len);
            Ok(Reply::Bulk(Some(
                String::from_utf8_lossy(&buf).into_owned(),
            )))
        }
        "*" => {
            let n = usize::try_from(number()?).unwrap_or(0);
            (0..n)
                .map(|_| read_reply(r))
                .collect::<Result<_, _>>()
                .map(Reply::Array)
        }
        _ => Err(format!("unexpected reply line {line:?}")),
    }
}

/// A free loopback port (bound and released), never one this process has
/// handed out before: two servers of one test process given the same port
/// once met (a gateway's `/health` answered by another's metrics listener).
/// The gateway's tests take their ports here too.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
