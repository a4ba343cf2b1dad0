//! `spray run` driven by `spray ctl` over its control socket, SIGHUP, and a metrics scrape.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `spray run`, killed on drop.
struct Spray {
    child: Child,
    socket: PathBuf,
    config: PathBuf,
    stdout: PathBuf,
}

impl Drop for Spray {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(socket: &Path, vip: u16, weight_b: &str, extra: &str) -> String {
    format!(
        r#"
[control]
socket = "{}"

[metrics]
listen = "127.0.0.1:0"

[services.syslog]
vip = "127.0.0.1:{vip}"
scheduler = "wrr"
backends = [{{ addr = "127.0.0.1:1" }}, {{ addr = "127.0.0.1:2", weight = {weight_b} }}]
{extra}"#,
        socket.display()
    )
}

fn start(dir: &Path) -> Spray {
    start_with(dir, &|socket| config_text(socket, free_udp_port(), "2", ""))
}

/// Starts `spray run` with the config `text` makes for the control socket's path.
fn start_with(dir: &Path, text: &dyn Fn(&Path) -> String) -> Spray {
    start_limited(dir, text, None)
}

/// As [`start_with`], with the soft limit of open files set to `nofile` when given.
fn start_limited(dir: &Path, text: &dyn Fn(&Path) -> String, nofile: Option<u32>) -> Spray {
    let socket = dir.join("spray.sock");
    let config = dir.join("spray.toml");
    let stdout = dir.join("stdout.txt");
    std::fs::write(&config, text(&socket)).unwrap();
    let limit = nofile.map_or_else(String::new, |n| format!("ulimit -n {n}; "));
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("{limit}exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_spray"))
        .args(["run", "--stats-interval", "0", "--config"])
        .arg(&config)
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&stdout)
        .unwrap_or_default()
        .contains("Ctrl-C")
    {
        assert!(
            Instant::now() < deadline,
            "spray did not start: {}",
            std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Spray {
        child,
        socket,
        config,
        stdout,
    }
}

fn ctl(s: &Spray, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spray"))
        .arg("ctl")
        .arg("--socket")
        .arg(&s.socket)
        .args(args)
        .output()
        .unwrap()
}

fn json(s: &Spray, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = ctl(s, &a);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn send(s: &Spray, vip: SocketAddr, n: usize) {
    let _ = s;
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..n {
        c.send_to(b"hello", vip).unwrap();
    }
}

#[test]
fn ctl_list_change_reload_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());

    // list: table and JSON.
    let out = ctl(&s, &["list"]);
    let table = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(table.starts_with("Prot LocalAddress:Port"), "{table}");
    assert!(table.contains("  -> 127.0.0.1:2"), "{table}");
    let l = json(&s, &["list"]);
    assert_eq!(l["generation"], 1);
    let vip: SocketAddr = l["services"][0]["vip"].as_str().unwrap().parse().unwrap();
    assert_eq!(l["services"][0]["backends"][1]["weight"], 2);
    assert_eq!(l["services"][0]["backends"][1]["health"], "up");

    // Traffic shows up in the counters (the backends do not exist; the kernel still
    // takes the datagrams).
    send(&s, vip, 30);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = json(&s, &["list"]);
        if l["services"][0]["packets"] == 30 {
            assert_eq!(l["services"][0]["backends"][0]["packets"], 10);
            assert_eq!(l["services"][0]["backends"][1]["packets"], 20);
            break;
        }
        assert!(Instant::now() < deadline, "{l}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // weight: refused out of range (exit 1, server's message), then applied.
    let out = ctl(&s, &["weight", "syslog", "127.0.0.1:2", "70000"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "spray ctl: error: set_weight: weight 70000 is out of range 0..=65535"
    );
    let out = ctl(&s, &["weight", "syslog", "127.0.0.1:2", "5"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("from 2 to 5 (generation 2)"),
        "{}",
        text(&out.stdout)
    );
    let out = ctl(&s, &["drain", "syslog", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(0));
    let out = ctl(&s, &["drain", "nosuch", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    let l = json(&s, &["list"]);
    assert_eq!(l["generation"], 3);
    assert_eq!(l["services"][0]["backends"][0]["admin"], "drained");
    assert_eq!(l["services"][0]["backends"][1]["weight"], 5);

    // reload: a bad file is refused and the running config stays.
    let good = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, good.replace("weight = 2", "weight = 70000")).unwrap();
    let out = ctl(&s, &["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("reload refused, the running config stays"),
        "{err}"
    );
    assert!(
        err.contains("services.syslog.backends[1].weight: 70000 is out of range 0..=65535"),
        "{err}"
    );
    assert_eq!(json(&s, &["list"])["generation"], 3);
    // A good one: the file's weight (2) comes back, the drain mark stays, counters survive.
    std::fs::write(&s.config, &good).unwrap();
    let out = ctl(&s, &["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 re-weighted"),
        "{}",
        text(&out.stdout)
    );
    let l = json(&s, &["list"]);
    assert_eq!(l["generation"], 4);
    assert_eq!(l["services"][0]["backends"][1]["weight"], 2);
    assert_eq!(l["services"][0]["backends"][0]["admin"], "drained");
    assert_eq!(l["services"][0]["packets"], 30);

    // SIGHUP reloads like `ctl reload`.
    std::fs::write(&s.config, good.replace("weight = 2", "weight = 9")).unwrap();
    // SAFETY: kill with a valid pid of our own child and a valid signal.
    assert_eq!(unsafe { libc::kill(s.child.id() as i32, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while json(&s, &["list"])["generation"] != 5 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        json(&s, &["list"])["services"][0]["backends"][1]["weight"],
        9
    );
    let ev = json(&s, &["events"]);
    let last = ev["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "reload");
    assert!(
        last["message"].as_str().unwrap().ends_with("(by SIGHUP)"),
        "{last}"
    );

    // Metrics.
    let stdout = std::fs::read_to_string(&s.stdout).unwrap();
    let addr = stdout
        .split("metrics http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let body = scrape(&addr);
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    assert!(body.contains("application/openmetrics-text"), "{body}");
    let line = |prefix: &str| {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {body}"))
            .to_owned()
    };
    assert_eq!(
        line("spray_backend_packets_total{service=\"syslog\",vip=\"")
            .split_whitespace()
            .last(),
        Some("10")
    );
    assert!(line(&format!(
        "spray_vip_packets_total{{service=\"syslog\",vip=\"{vip}\"}}"
    ))
    .ends_with(" 30"));
    assert!(line("spray_backend_up{").ends_with(" 1.0"));
    assert!(line("spray_drops_total{worker=\"0\",reason=\"no_healthy_backend\"}").ends_with(" 0"));
    assert!(line("spray_snapshot_generation ").ends_with(" 5.0"));
    assert!(line("spray_worker_rx_packets_total{worker=\"0\"}").ends_with(" 30"));

    // version, stats, events and watch work; a dead socket is exit 3.
    assert_eq!(json(&s, &["version"])["name"], "spray");
    assert_eq!(json(&s, &["stats"])["totals"]["rx_packets"], 30);
    let out = ctl(&s, &["watch", "--interval", "0.1", "--count", "2"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("UDP  127.0.0.1:"),
        "{}",
        text(&out.stdout)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_spray"))
        .args(["ctl", "--socket"])
        .arg(dir.path().join("nope.sock"))
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("cannot connect to the control socket"),
        "{}",
        text(&out.stderr)
    );
    let out = ctl(&s, &["weight", "syslog"]);
    assert_eq!(out.status.code(), Some(2));
}

/// The metrics address `spray run` printed at start.
fn metrics_addr(s: &Spray) -> String {
    let stdout = std::fs::read_to_string(&s.stdout).unwrap();
    stdout
        .split("metrics http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn ctl_list_shows_a_dead_backend_down() {
    // A live backend (bound, silent: a udp check without require_reply passes) and a dead
    // one (a port nothing listens on: the kernel answers ICMP port unreachable).
    let live = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    let vip = free_udp_port();
    let s = start_with(dir.path(), &|socket| {
        format!(
            r#"
[control]
socket = "{}"

[metrics]
listen = "127.0.0.1:0"

[services.syslog]
vip = "127.0.0.1:{vip}"
backends = [{{ addr = "{}" }}, {{ addr = "127.0.0.1:{dead}" }}]

[services.syslog.check]
type = "udp"
interval_ms = 50
timeout_ms = 40
fall = 2
"#,
            socket.display(),
            live.local_addr().unwrap()
        )
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let l = loop {
        let l = json(&s, &["list"]);
        if l["services"][0]["backends"][1]["health"] == "down" {
            break l;
        }
        assert!(Instant::now() < deadline, "never down: {l}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let b = &l["services"][0]["backends"];
    assert_eq!(b[0]["health"], "up", "{l}");
    assert_eq!(b[1]["effective_weight"], 0, "{l}");
    assert!(b[1]["check_latency_seconds"].as_f64().is_some(), "{l}");
    assert_eq!(
        (b[1]["went_down"].as_u64(), b[1]["went_up"].as_u64()),
        (Some(1), Some(0)),
        "{l}"
    );
    assert!(b[1]["check_failures"].as_u64().unwrap() >= 2, "{l}");
    assert_eq!(b[0]["check_failures"], 0, "{l}");
    assert_eq!(l["generation"], 2, "one snapshot for the verdict: {l}");
    // The table says so too.
    let out = ctl(&s, &["list"]);
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{dead}")))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" down "), "{table}");
    // Events: the verdict, as a health event.
    let ev = json(&s, &["events"]);
    let e = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "health")
        .unwrap_or_else(|| panic!("{ev}"))
        .clone();
    assert_eq!(e["backend"], format!("127.0.0.1:{dead}"), "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("down for syslog"),
        "{e}"
    );
    // A weight change keeps it down; metrics agree.
    let out = ctl(&s, &["weight", "syslog", &format!("127.0.0.1:{dead}"), "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let l = json(&s, &["list"]);
    let b = &l["services"][0]["backends"][1];
    assert_eq!(
        (&b["health"], &b["weight"], &b["effective_weight"]),
        (&"down".into(), &3.into(), &0.into()),
        "{l}"
    );
    let body = scrape(&metrics_addr(&s));
    let up = body
        .lines()
        .find(|l| l.starts_with("spray_backend_up{") && l.contains(&format!("127.0.0.1:{dead}")))
        .unwrap_or_else(|| panic!("{body}"));
    assert!(up.ends_with(" 0.0"), "{up}");
    assert!(
        body.contains("spray_backend_check_latency_seconds{"),
        "{body}"
    );
    let down = body
        .lines()
        .find(|l| {
            l.starts_with("spray_backend_transitions_total{")
                && l.contains(&format!("127.0.0.1:{dead}"))
                && l.contains("to=\"down\"")
        })
        .unwrap_or_else(|| panic!("{body}"));
    assert!(down.ends_with(" 1"), "{down}");
    assert!(
        body.lines()
            .any(|l| l.starts_with("spray_health_check_failures_total{")
                && l.contains(&format!("127.0.0.1:{dead}"))),
        "{body}"
    );
    let v = json(&s, &["version"]);
    assert_eq!(v["controller"], "health");
    assert_eq!(v["build"], spray::build_info::DESCRIPTION, "{v}");
}

#[test]
fn the_track_script_gets_its_answer_when_idle_clients_exhaust_slots_and_fds() {
    use std::os::unix::net::UnixStream;
    let dir = tempfile::tempdir().unwrap();
    let vip = free_udp_port();
    let s = start_limited(
        dir.path(),
        &|socket| config_text(socket, vip, "2", ""),
        Some(64),
    );
    // 300 clients connect and say nothing, more than the slots and the process's fds.
    let path = s.socket.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let flood = std::thread::spawn(move || {
        let held: Vec<UnixStream> = (0..300)
            .filter_map(|_| UnixStream::connect(&path).ok())
            .collect();
        tx.send(held.len()).unwrap();
        // Held open until the checks below are done.
        std::thread::sleep(Duration::from_secs(8));
        drop(held);
    });
    let connected = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(connected > 64, "only {connected} idle clients connected");
    // What scripts/ha/check-spray.sh runs.
    let t0 = Instant::now();
    let out = ctl(&s, &["version"]);
    let took = t0.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        took < Duration::from_secs(5),
        "spray ctl version took {took:?}"
    );
    // SIGTERM is obeyed while the clients still hold their connections.
    let mut s = s;
    let t0 = Instant::now();
    // SAFETY: the pid is our own live child; SIGTERM only asks it to stop.
    assert_eq!(unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) }, 0);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "spray still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    flood.join().unwrap();
}

#[test]
fn a_service_without_a_healthy_backend_says_so_in_the_log_the_list_and_the_metrics() {
    let dead = free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    let vip = free_udp_port();
    let s = start_with(dir.path(), &|socket| {
        format!(
            r#"
[control]
socket = "{}"

[metrics]
listen = "127.0.0.1:0"

[services.syslog]
vip = "127.0.0.1:{vip}"
backends = [{{ addr = "127.0.0.1:{dead}" }}]

[services.syslog.check]
type = "udp"
interval_ms = 50
timeout_ms = 40
fall = 2
rise = 2
"#,
            socket.display()
        )
    });
    let stderr = || std::fs::read_to_string(s.socket.with_file_name("stderr.txt")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stderr().contains("no healthy backend left") {
        assert!(Instant::now() < deadline, "no log line: {}", stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(stderr().matches("no healthy backend left").count(), 1);
    let l = json(&s, &["list"]);
    assert_eq!(l["services"][0]["in_rotation"], 0, "{l}");
    let table = text(&ctl(&s, &["list"]).stdout);
    let row = table.lines().find(|r| r.contains("syslog")).unwrap();
    assert!(row.contains(" down "), "{table}");
    let m = scrape(&metrics_addr(&s));
    assert!(
        m.lines()
            .any(|l| l.starts_with("spray_service_backends_in_rotation{")
                && l.contains("service=\"syslog\"")
                && l.ends_with(" 0.0")),
        "{m}"
    );
    // The receiver comes back: one line says so, and the service serves again.
    let _back = UdpSocket::bind(("127.0.0.1", dead)).unwrap();
    while !stderr().contains("a backend is in rotation again") {
        assert!(Instant::now() < deadline, "no recovery line: {}", stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let l = json(&s, &["list"]);
    assert_eq!(l["services"][0]["in_rotation"], 1, "{l}");
    assert_eq!(stderr().matches("no healthy backend left").count(), 1);
}

#[test]
fn metrics_escape_label_values_and_describe_the_build_and_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let vip = free_udp_port();
    let s = start_with(dir.path(), &|socket| {
        format!(
            r#"
[control]
socket = "{}"

[metrics]
listen = "127.0.0.1:0"

[services.'sys log"x\y']
vip = "127.0.0.1:{vip}"
backends = [{{ addr = "127.0.0.1:9" }}]
"#,
            socket.display()
        )
    });
    let addr = metrics_addr(&s);
    let m = scrape(&addr);
    assert!(
        m.contains(r#"spray_vip_packets_total{service="sys log\"x\\y",vip="#),
        "{m}"
    );
    // Every sample line is NAME{LABELS} VALUE or NAME VALUE, with balanced quotes.
    let body = m.split("\r\n\r\n").nth(1).unwrap();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let unescaped = line.replace("\\\\", "").replace("\\\"", "");
        assert_eq!(unescaped.matches('"').count() % 2, 0, "{line}");
        assert!(
            line.rsplit(' ').next().unwrap().parse::<f64>().is_ok(),
            "{line}"
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        body.lines()
            .any(|l| l.starts_with("spray_build_info{")
                && l.contains(&format!("version=\"{version}\""))),
        "{body}"
    );
    let fds: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("process_open_fds "))
        .unwrap_or_else(|| panic!("{body}"))
        .parse()
        .unwrap();
    assert!(fds >= 3.0, "{fds}");
    for name in [
        "process_max_fds ",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_start_time_seconds ",
    ] {
        assert!(body.lines().any(|l| l.starts_with(name)), "{name}: {body}");
    }
    // HEAD: the headers of GET, no body.
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(b"HEAD /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut head = String::new();
    c.read_to_string(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(head.contains("openmetrics-text"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "a body came: {head}");
}

/// `spray ctl --json ARGS` against `socket`: exit status and the one JSON object printed.
fn json_failure(socket: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_spray"))
        .args(["ctl", "--json", "--socket"])
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {:?} / {:?}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out.status.code(), v)
}

#[test]
fn ctl_json_failures_are_json_without_a_server() {
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;
    let dir = tempfile::tempdir().unwrap();
    // Nobody listens: exit 3.
    let (code, v) = json_failure(&dir.path().join("nope.sock"), &["list"]);
    assert_eq!(code, Some(3), "{v}");
    assert_eq!(v["error"]["code"], "connect_failed", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot connect to the control socket"),
        "{v}"
    );
    // A usage error clap finds: exit 2.
    let (code, v) = json_failure(&dir.path().join("nope.sock"), &["weight", "syslog"]);
    assert_eq!(code, Some(2), "{v}");
    assert_eq!(v["error"]["code"], "usage", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("<WEIGHT>"),
        "{v}"
    );
    // A server that reads the request and hangs up, then one that answers garbage: exit 1.
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        for reply in [None, Some("not json\n")] {
            let (conn, _) = listener.accept().unwrap();
            let mut r = std::io::BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if let Some(reply) = reply {
                (&conn).write_all(reply.as_bytes()).unwrap();
            }
        }
    });
    let (code, v) = json_failure(&path, &["list"]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["code"], "connection_lost", "{v}");
    let (code, v) = json_failure(&path, &["list"]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["error"]["code"], "bad_response", "{v}");
    server.join().unwrap();
}

#[test]
fn ctl_json_refusal_is_the_servers_error_and_piped_watch_is_plain() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let (code, v) = json_failure(&s.socket, &["weight", "syslog", "127.0.0.1:2", "70000"]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(
        v,
        serde_json::json!({ "error": {
            "code": "bad_args",
            "message": "set_weight: weight 70000 is out of range 0..=65535"
        }})
    );
    // About a second of watch with standard output a pipe: screens, no escape codes.
    let out = ctl(&s, &["watch", "--interval", "0.25", "--count", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let screens = text(&out.stdout);
    assert_eq!(screens.matches("spray: generation").count(), 4, "{screens}");
    assert!(screens.contains("UDP  127.0.0.1:"), "{screens}");
    assert!(!out.stdout.contains(&0x1b), "{screens:?}");
}

/// `spray run` in socket mode with a mirror pool, as docs/config.md shows one: every datagram
/// reaches the primary pool and the pool, and `ctl list`, `ctl stats` and the metrics say so.
#[test]
fn a_mirror_pool_gets_a_copy_of_every_datagram_and_is_listed_counted_and_exported() {
    let sink = || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    };
    let (primary, copy_a, copy_b) = (sink(), sink(), sink());
    let port = |s: &UdpSocket| s.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let vip = free_udp_port();
    let (p, a, b) = (port(&primary), port(&copy_a), port(&copy_b));
    let s = start_with(dir.path(), &|socket| {
        format!(
            r#"
[control]
socket = "{}"

[metrics]
listen = "127.0.0.1:0"

[services.syslog]
vip = "127.0.0.1:{vip}"
backends = [{{ addr = "127.0.0.1:{p}" }}]

[[services.syslog.mirror]]
name = "archive"
backends = [{{ addr = "127.0.0.1:{a}" }}, {{ addr = "127.0.0.1:{b}" }}]
"#,
            socket.display()
        )
    });
    let vip_addr: SocketAddr = format!("127.0.0.1:{vip}").parse().unwrap();
    send(&s, vip_addr, 40);
    let count = |sock: &UdpSocket| {
        let mut buf = [0u8; 64];
        let mut n = 0;
        while sock.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    };
    assert_eq!(count(&primary), 40, "the primary pool gets every datagram");
    assert_eq!(
        (count(&copy_a), count(&copy_b)),
        (20, 20),
        "the pool, in rr"
    );
    let l = json(&s, &["list"]);
    let pool = &l["services"][0]["mirrors"][0];
    assert_eq!(pool["name"], "archive", "{l}");
    assert_eq!(pool["backends"][0]["packets"], 20, "{l}");
    assert_eq!(l["services"][0]["packets"], 40, "{l}");
    let st = json(&s, &["stats"]);
    assert_eq!(st["totals"]["mirror_copies"], 40, "{st}");
    assert_eq!(st["totals"]["tx_packets"], 80, "{st}");
    let table = text(&ctl(&s, &["list"]).stdout);
    assert!(
        table.contains("COPY") && table.contains("syslog mirror archive"),
        "{table}"
    );
    let m = scrape(&metrics_addr(&s));
    assert!(
        m.lines()
            .any(|l| l.starts_with("spray_mirror_backend_packets_total{")
                && l.contains("pool=\"archive\"")
                && l.contains(&format!("backend=\"127.0.0.1:{a}\""))
                && l.ends_with(" 20")),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("spray_worker_mirror_copies_total{") && l.ends_with(" 40")),
        "{m}"
    );
}
