//! Local S3 (moto) and Azure (Azurite) servers for the tests.
//!
//! Each test binary starts at most one server of each kind, on a free port
//! of 127.0.0.1, and shares it between its tests (each test uses its own
//! bucket). A server is stopped when its handle is dropped, and in any case
//! when the test process exits: a small shell watchdog kills it once the
//! test process is gone, so no server outlives its tests.
//!
//! Binaries are found through `ETL_CACHE_MOTO_SERVER` / `ETL_CACHE_AZURITE`
//! (full paths), then in the directory `scripts/install-test-servers.sh`
//! installs into (`$ETL_CACHE_TEST_SERVERS_DIR`, default
//! `~/.cache/etl-cache-test-servers`), then on `PATH` (`moto_server`,
//! `azurite-blob`). When one is missing, a test fails if `CI` is set, and
//! otherwise says why and returns early.

#![allow(dead_code)] // each test binary uses part of this

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The account and key every Azurite accepts (they are public).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn default_dir() -> PathBuf {
    match std::env::var_os("ETL_CACHE_TEST_SERVERS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/etl-cache-test-servers"),
    }
}

fn find(var: &str, installed: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let p = default_dir().join(installed);
    if p.is_file() {
        return Some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Fails under CI, otherwise explains and lets the test return early.
fn missing(what: &str) -> Option<Arc<Server>> {
    let msg = format!(
        "{what} is not installed: run scripts/install-test-servers.sh \
         (or set ETL_CACHE_MOTO_SERVER / ETL_CACHE_AZURITE)"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}; CI must run the object store tests");
    }
    eprintln!("skipping: {msg}");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process on 127.0.0.1.
#[derive(Debug)]
pub struct Server {
    pub kind: &'static str,
    pub port: u16,
    child: Mutex<Child>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(
        kind: &'static str,
        program: &PathBuf,
        envs: &[(&str, &str)],
        args: impl Fn(u16, &str) -> Vec<String>,
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = dir.path().join(format!("{kind}-{port}.log"));
            let args: Vec<String> = args(port, &dir.path().display().to_string());
            // The watchdog: start the server, stop it when the test process
            // (or the server) is gone.
            let script = r#"
                "$@" >"$LOG" 2>&1 &
                srv=$!
                trap 'kill $srv 2>/dev/null' EXIT TERM
                while kill -0 "$PARENT" 2>/dev/null && kill -0 $srv 2>/dev/null; do sleep 0.5; done
                kill $srv 2>/dev/null
                wait $srv 2>/dev/null
            "#;
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg("watchdog")
                .arg(program)
                .args(&args)
                .env("LOG", &log)
                .env("PARENT", std::process::id().to_string())
                .envs(envs.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {kind} ({}): {e}", program.display()));
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if http(port, "GET", "/", &[], b"").is_ok() {
                    return Server {
                        kind,
                        port,
                        child: Mutex::new(child),
                        _dir: dir,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: port taken, or broken install
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            stop(&mut child);
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("{kind} did not start on 127.0.0.1; its log:\n{last_log}");
    }
}

/// Stops a watchdog and its server: SIGTERM runs the watchdog's trap.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
}

impl Drop for Server {
    fn drop(&mut self) {
        stop(&mut self.child.lock().unwrap());
    }
}

/// Starts a moto server with the extra environment `env`, or `None` when
/// moto is not installed.
fn start_moto(env: &[(&str, &str)]) -> Option<Arc<Server>> {
    let program = find(
        "ETL_CACHE_MOTO_SERVER",
        "venv/bin/moto_server",
        "moto_server",
    )?;
    Some(Arc::new(Server::start("moto", &program, env, |port, _| {
        vec![
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ]
    })))
}

/// The shared moto server of this test binary (started on first use).
pub fn moto() -> Option<Arc<Server>> {
    static SERVER: OnceLock<Option<Arc<Server>>> = OnceLock::new();
    SERVER
        .get_or_init(|| start_moto(&[]))
        .clone()
        .or_else(|| missing("moto_server (PyPI moto[server])"))
}

/// A moto server that checks credentials (`INITIAL_NO_AUTH_ACTION_COUNT=0`):
/// only access keys created in its IAM are accepted.
pub fn moto_with_auth() -> Option<Arc<Server>> {
    static SERVER: OnceLock<Option<Arc<Server>>> = OnceLock::new();
    SERVER
        .get_or_init(|| start_moto(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]))
        .clone()
        .or_else(|| missing("moto_server (PyPI moto[server])"))
}

/// The shared Azurite blob server of this test binary (started on first use).
pub fn azurite() -> Option<Arc<Server>> {
    static SERVER: OnceLock<Option<Arc<Server>>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let program = find(
                "ETL_CACHE_AZURITE",
                "node/node_modules/.bin/azurite-blob",
                "azurite-blob",
            )?;
            Some(Arc::new(Server::start(
                "azurite",
                &program,
                &[],
                |port, _| {
                    vec![
                        "--blobHost".into(),
                        "127.0.0.1".into(),
                        "--blobPort".into(),
                        port.to_string(),
                        "--inMemoryPersistence".into(),
                        "--disableTelemetry".into(),
                        "--silent".into(),
                        "--skipApiVersionCheck".into(),
                    ]
                },
            )))
        })
        .clone()
        .or_else(|| missing("azurite-blob (npm azurite)"))
}

/// A bucket or container name unique to this process and call.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
    .trim_matches('-')
    .to_string()
}

/// A plain HTTP/1.1 request; returns the status and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// moto (shared by the binary's tests) with a new bucket named after
/// `tag`; `None` where moto is missing and the test is to return early.
pub fn moto_bucket(tag: &str) -> Option<(Arc<Server>, String)> {
    let moto = moto()?;
    let bucket = unique_name(tag);
    create_bucket(&moto, &bucket);
    Some((moto, bucket))
}

/// Creates a bucket on the moto server.
pub fn create_bucket(server: &Server, bucket: &str) {
    let (status, body) = http(server.port, "PUT", &format!("/{bucket}"), &[], b"").unwrap();
    assert_eq!(status, 200, "create bucket {bucket}: {body}");
}

/// Options for an `s3://` URL on the moto server.
pub fn s3_options(server: &Server) -> Vec<(String, String)> {
    let mut o = s3_options_at(&server.endpoint());
    o.push(("aws_region".into(), "us-east-1".into()));
    o
}

/// Options for an `s3://` URL on an S3 endpoint with moto's credentials
/// (no region).
pub fn s3_options_at(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("aws_endpoint".into(), endpoint.to_string()),
        ("aws_allow_http".into(), "true".into()),
        ("aws_access_key_id".into(), "testing".into()),
        ("aws_secret_access_key".into(), "testing".into()),
    ]
}

/// Options for an `az://` URL on the Azurite server.
pub fn azure_options(server: &Server) -> Vec<(String, String)> {
    vec![
        ("azure_storage_account_name".into(), AZURITE_ACCOUNT.into()),
        ("azure_storage_account_key".into(), AZURITE_KEY.into()),
        (
            "azure_storage_endpoint".into(),
            format!("{}/{AZURITE_ACCOUNT}", server.endpoint()),
        ),
        ("allow_http".into(), "true".into()),
    ]
}

fn rfc1123(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let days = (secs / 86_400) as i64;
    let (h, m, s) = ((secs % 86_400) / 3600, (secs % 3600) / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days.rem_euclid(7)) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!("{wd}, {d:02} {mon} {year} {h:02}:{m:02}:{s:02} GMT")
}

/// Creates a container on the Azurite server (a Shared Key signed request).
pub fn create_container(server: &Server, container: &str) {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let date = rfc1123(SystemTime::now());
    let version = "2021-08-06";
    let resource = format!("/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container");
    let to_sign =
        format!("PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}");
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let (status, body) = http(
        server.port,
        "PUT",
        &format!("/{AZURITE_ACCOUNT}/{container}?restype=container"),
        &[
            ("x-ms-date", date),
            ("x-ms-version", version.into()),
            (
                "Authorization",
                format!("SharedKey {AZURITE_ACCOUNT}:{sig}"),
            ),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(status, 201, "create container {container}: {body}");
}

/// Peak resident memory of this process (VmHWM), in bytes.
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap()
}

/// Resets the peak resident memory of this process to its current size.
pub fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// The names of the checks in `etl_cache_core::with_contract_checks!` (the
/// list `contract_tests!` runs), read from its source, so that a suite run
/// with [`server_contract_tests!`] is known to cover every check the
/// contract has.
pub fn contract_check_names() -> Vec<String> {
    let src = include_str!("../../../etl-cache-core/src/testing.rs");
    let start = src
        .find("macro_rules! with_contract_checks")
        .expect("with_contract_checks! in core");
    let body = &src[start..];
    let list = &body[body.find("$make;").expect("the check list") + 6..];
    let list = &list[..list.find(");").expect("end of the check list")];
    let mut names: Vec<String> = list
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    names.sort();
    names
}

/// Like `etl_cache_core::contract_tests!`, for a `make` that returns
/// `Option<Harness>` (`None` when the server is not installed and CI is not
/// set: the test then returns early). The checks come from
/// `etl_cache_core::with_contract_checks!`; a generated test compares them
/// with the contract's source.
#[macro_export]
macro_rules! server_contract_tests {
    ($make:path) => {
        ::etl_cache_core::with_contract_checks!($make => $crate::server_contract_tests);
    };
    ($make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let clock = ::std::sync::Arc::new(::etl_cache_core::ManualClock::new());
                let Some(harness) = $make(clock).await else { return };
                ::etl_cache_core::testing::$name(&harness).await;
            }
        )*

        #[test]
        fn suite_covers_every_contract_check() {
            let mut ours = vec![$(stringify!($name).to_string()),*];
            ours.sort();
            assert_eq!(ours, $crate::common::contract_check_names(),
                "with_contract_checks! in etl-cache-core no longer lists every contract check");
        }
    };
}

/// A TCP proxy on 127.0.0.1 in front of a server that can cut responses:
/// while `cuts` is above zero, each new connection closes after relaying
/// `cut_after` bytes of response, and `cuts` goes down by one.
pub struct CuttingProxy {
    pub port: u16,
    pub cuts: Arc<std::sync::atomic::AtomicU64>,
    pub cut_after: Arc<AtomicU64>,
    pub cuts_done: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl CuttingProxy {
    pub fn start(target: u16) -> CuttingProxy {
        use std::sync::atomic::AtomicBool;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cuts = Arc::new(AtomicU64::new(0));
        let cut_after = Arc::new(AtomicU64::new(u64::MAX));
        let cuts_done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, a, d, st) = (
            cuts.clone(),
            cut_after.clone(),
            cuts_done.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                // Arm this connection if cuts are left.
                let budget = if c
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    Some(a.load(Ordering::SeqCst))
                } else {
                    None
                };
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let done = d.clone();
                std::thread::spawn(move || {
                    let (mut s_in, mut c_out) = (server, client);
                    let mut left = budget.unwrap_or(u64::MAX);
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let take = (n as u64).min(left) as usize;
                        if c_out.write_all(&buf[..take]).is_err() {
                            break;
                        }
                        left -= take as u64;
                        if left == 0 {
                            done.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                    let _ = s_in.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttingProxy {
            port,
            cuts,
            cut_after,
            cuts_done,
            stop,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Arms the next `cuts` connections to close after relaying
    /// `cut_after` bytes of response each.
    pub fn arm(&self, cut_after: u64, cuts: u64) {
        self.cut_after.store(cut_after, Ordering::SeqCst);
        self.cuts.store(cuts, Ordering::SeqCst);
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
