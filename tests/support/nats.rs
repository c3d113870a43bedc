//! Real parts for end-to-end tests: a `nats-server` with JetStream on a free loopback port and its
//! own store directory, and `vigil serve` as a child process. Both are killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The nats-server binary: `$VIGIL_NATS_SERVER`, the one `make nats-server` fetched, or `$PATH`'s.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("VIGIL_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let fetched = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/nats/bin/nats-server");
    if fetched.exists() {
        return fetched;
    }
    PathBuf::from("nats-server")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, limit: Duration) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < limit, "nothing listens on port {port} after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running nats-server.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    /// Starts one with extra arguments (e.g. `--user`, `--pass`).
    pub fn start_with(extra: &[&str]) -> NatsServer {
        NatsServer::start_with_env(extra, &[])
    }

    /// Starts one with extra arguments and environment variables (a configuration file's `$VAR`s).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            store: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let bin = nats_server_bin();
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store.path())
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} ({e}); `make nats-server` fetches one", bin.display()));
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL and starts it again on the same port and store.
    pub fn restart(&mut self, down_for: Duration) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        std::thread::sleep(down_for);
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `vigil serve` as a child process, its stderr collected.
pub struct Vigil {
    child: Child,
    log: Arc<Mutex<String>>,
    /// The thread collecting stderr: joined once the process has exited, so that the log then
    /// holds everything it wrote, its last words included.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Vigil {
    /// Starts `vigil serve` and waits until it says it is serving.
    pub fn start(nats_url: &str, data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Vigil {
        let vigil = Vigil::spawn(nats_url, data_dir, extra, env);
        vigil.wait_for("serving", Duration::from_secs(30));
        vigil
    }

    /// Starts `vigil serve` without waiting for anything. One partition unless `extra` says how
    /// many (`--partitions`): most stories are about one log; a new deployment's default (16) has
    /// stories of its own ([`Vigil::spawn_unpartitioned`]).
    pub fn spawn(nats_url: &str, data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Vigil {
        let one: &[&str] = if extra.contains(&"--partitions") { &[] } else { &["--partitions", "1"] };
        let extra: Vec<&str> = one.iter().chain(extra).copied().collect();
        Vigil::spawn_unpartitioned(nats_url, data_dir, &extra, env)
    }

    /// Starts `vigil serve` with exactly `extra`: no partition count unless it gives one.
    pub fn spawn_unpartitioned(nats_url: &str, data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Vigil {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["serve", "--nats-url", nats_url, "--metrics-addr", "off", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env_remove("VIGIL_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vigil");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Vigil { child, log, reader: Some(reader) }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_for(&self, text: &str, limit: Duration) {
        let started = Instant::now();
        while !self.log().contains(text) {
            assert!(started.elapsed() < limit, "vigil never logged {text:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit on its own; returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The pipe is closed with the process: the reader reaches its end.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            assert!(started.elapsed() < limit, "vigil did not exit within {limit:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Still running (it has not exited, by a crash or otherwise)?
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let exit = self.wait_exit(Duration::from_secs(30));
        assert!(exit.success(), "vigil exited with {exit:?}; log:\n{}", self.log());
        self.log()
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
