//! The `spray` binary as a user runs it: exit codes, what goes to stdout and stderr.

use std::path::Path;
use std::process::{Command, Output};

fn spray(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spray"))
        .args(args)
        .output()
        .expect("spray runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_config(dir: &Path, body: &str) -> String {
    let path = dir.join("spray.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

const GOOD: &str = r#"
[services.syslog]
vip = "198.18.0.10:514"
backends = [
  { addr = "198.18.1.1:514" },
  { addr = "198.18.1.2:514", weight = 2 },
]
"#;

#[test]
fn check_good_file_exits_0_and_lists_the_vip() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), GOOD);
    let out = spray(&["check", "--config", &path]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("UDP  198.18.0.10:514"), "{stdout}");
    assert!(stdout.contains("-> 198.18.1.2:514"), "{stdout}");
    assert!(stdout.contains("1 service(s), 2 backend(s)"), "{stdout}");
}

#[test]
fn check_bad_file_exits_2_and_names_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &GOOD.replace("weight = 2", "weight = 70000"));
    let out = spray(&["check", "--config", &path]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{path}:6: services.syslog.backends[1].weight: 70000 is out of range 0..=65535"
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn check_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = GOOD
        .replace("weight = 2", "weight = 70000")
        .replace("198.18.1.1:514", "198.18.1.1");
    let path = write_config(dir.path(), &bad);
    let out = spray(&["check", "-c", &path]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("services.syslog.backends[0].addr"),
        "{stderr}"
    );
    assert!(
        stderr.contains("services.syslog.backends[1].weight"),
        "{stderr}"
    );
}

#[test]
fn check_unknown_key_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &GOOD.replace("weight = 2", "wieght = 2"));
    let out = spray(&["check", "--config", &path]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("services.syslog.backends[1]"), "{stderr}");
    assert!(stderr.contains("unknown field `wieght`"), "{stderr}");
}

#[test]
fn check_missing_file_exits_2_with_the_cause() {
    let out = spray(&["check", "--config", "/nonexistent/spray.toml"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/spray.toml: cannot read the config file"));
    assert!(stderr.contains("caused by:"), "{stderr}");
}

#[test]
fn check_every_docs_example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = spray(&["check", "--config", path.to_str().unwrap()]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {}",
                path.display(),
                text(&out.stderr)
            );
        }
    }
}

#[test]
fn help_mentions_every_subcommand() {
    for flag in ["--help", "-h"] {
        let out = spray(&[flag]);
        assert_eq!(out.status.code(), Some(0));
        let stdout = text(&out.stdout);
        for sub in ["run", "check", "demo", "--log-level", "--version"] {
            assert!(stdout.contains(sub), "{flag} lacks {sub}: {stdout}");
        }
    }
    let out = spray(&["demo", "--help"]);
    let stdout = text(&out.stdout);
    for opt in ["--count", "--scheduler", "--weights", "Examples:"] {
        assert!(stdout.contains(opt), "demo --help lacks {opt}: {stdout}");
    }
    let out = spray(&["run", "--help"]);
    assert!(text(&out.stdout).contains("--stats-interval"));
}

#[test]
fn version_and_usage_errors() {
    let out = spray(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("spray "));
    assert_eq!(spray(&[]).status.code(), Some(2));
    assert_eq!(spray(&["run"]).status.code(), Some(2));
    assert_eq!(spray(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(spray(&["demo", "--scheduler", "lc"]).status.code(), Some(2));
}

#[test]
fn demo_deals_exact_thirds() {
    let out = spray(&["demo", "--count", "3000"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("replies: 3000 of 3000, all from the VIP"),
        "{stdout}"
    );
    assert!(
        stdout.contains("result: ok, rr dealt exactly 1000 to each backend"),
        "{stdout}"
    );
}

#[test]
fn demo_wrr_follows_weights() {
    let out = spray(&[
        "demo",
        "-n",
        "600",
        "--scheduler",
        "wrr",
        "--weights",
        "3,2,1",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("result: ok"), "{stdout}");
}

#[test]
fn run_serves_until_sigterm_and_prints_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let backend = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let baddr = backend.local_addr().unwrap();
    let path = write_config(
        dir.path(),
        &format!(
            "[services.echo]\nvip = \"127.0.0.1:{port}\"\nbackends = [{{ addr = \"{baddr}\" }}]\n"
        ),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_spray"))
        .args(["run", "--config", &path, "--stats-interval", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Send until the backend sees a datagram (the workers need a moment to bind).
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    backend
        .set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 64];
    let mut got = false;
    for _ in 0..50 {
        client.send_to(b"ping", ("127.0.0.1", port)).unwrap();
        if backend.recv_from(&mut buf).is_ok() {
            got = true;
            break;
        }
    }
    // SAFETY: plain kill(2) on the child we spawned and have not waited for yet.
    unsafe { libc_kill(child.id()) };
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert!(
        got,
        "no datagram reached the backend: {stdout}{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("UDP  127.0.0.1:{port}")),
        "{stdout}"
    );
    assert!(stdout.contains("drops by reason:"), "{stdout}");
}

unsafe fn libc_kill(pid: u32) {
    // SAFETY: the caller passes the pid of a live child; SIGTERM only asks it to stop.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
}

#[test]
fn run_exits_1_when_a_vip_cannot_be_bound() {
    let dir = tempfile::tempdir().unwrap();
    // 192.0.2.0/24 (TEST-NET-1, RFC 5737) is never configured on a host.
    let path = write_config(
        dir.path(),
        "[services.x]\nvip = \"192.0.2.1:514\"\nbackends = [{ addr = \"192.0.2.2:514\" }]\n",
    );
    let out = spray(&["run", "--config", &path]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: worker 0 failed"), "{stderr}");
    assert!(
        stderr.contains("caused by: cannot bind VIP 192.0.2.1:514"),
        "{stderr}"
    );
}

#[test]
fn a_second_spray_cannot_take_a_vip_the_first_one_serves() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = |name: &str| {
        let sock = dir.path().join(format!("{name}.sock"));
        let body = format!(
            "[control]\nsocket = \"{}\"\n[services.x]\nvip = \"127.0.0.1:{port}\"\nbackends = [{{ addr = \"127.0.0.1:9\" }}]\n",
            sock.display()
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, body).unwrap();
        (path.display().to_string(), sock)
    };
    let (first, first_sock) = config("first");
    let child = Command::new(env!("CARGO_BIN_EXE_spray"))
        .args(["run", "--config", &first, "--stats-interval", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !first_sock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "first spray did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (second, _) = config("second");
    let mut other = Command::new(env!("CARGO_BIN_EXE_spray"))
        .args(["run", "--config", &second, "--stats-interval", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Refused at start; one that serves is stopped after 5 s and fails the test.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while other.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for pid in [child.id(), other.id()] {
        // SAFETY: plain kill(2) on children we spawned and have not reaped yet.
        unsafe { libc_kill(pid) };
    }
    let _ = child.wait_with_output();
    let out = other.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot bind VIP 127.0.0.1:{port}"))
            && stderr.contains("already bound by another process"),
        "{stderr}"
    );
}

#[test]
fn check_warns_of_a_failure_no_check_can_see_but_accepts_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blind.toml");
    std::fs::write(
        &path,
        "[services.syslog]\nvip = \"198.18.0.10:514\"\n\
         backends = [{ addr = \"198.18.2.11:514\" }]\n\
         [services.syslog.check]\ntype = \"udp\"\necho = false\n",
    )
    .unwrap();
    let out = spray(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: services.syslog: a udp check with echo = false"),
        "{stderr}"
    );
    // README's configuration: no warning.
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/syslog.toml");
    let out = spray(&["check", "--config", readme.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), "");
}

/// README.md shows docs/examples/syslog.toml, which scripts/failover-tests.sh runs: the
/// two must not drift apart.
#[test]
fn readme_config_is_the_tested_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let block = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a toml block in README.md");
    let example = std::fs::read_to_string(root.join("docs/examples/syslog.toml")).unwrap();
    let example: String = example
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(block, example);
}

#[test]
fn version_names_the_features_and_the_dpdk_built_in() {
    let out = spray(&["--version"]);
    let v = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        v.starts_with(&format!(
            "spray {} (features: socket",
            env!("CARGO_PKG_VERSION")
        )),
        "{v}"
    );
    if spray::build_info::DPDK {
        assert!(v.contains("dpdk; DPDK 2"), "{v}");
    } else {
        assert!(v.contains("no dpdk"), "{v}");
    }
}

#[test]
fn check_without_config_reads_the_default_path() {
    let out = spray(&["check"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    if Path::new(spray::cli::DEFAULT_CONFIG).exists() {
        // This machine has one (installed, or an operator's): whatever it holds, it is read.
        assert!(
            stdout.starts_with("/etc/spray/spray.toml: ok")
                || stderr.starts_with("error: /etc/spray/spray.toml"),
            "{stdout}{stderr}"
        );
    } else {
        assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
        assert!(
            stderr.starts_with("error: /etc/spray/spray.toml: cannot read the config file"),
            "{stderr}"
        );
        assert!(
            stderr.contains("hint: that is the default config path"),
            "{stderr}"
        );
    }
}

#[test]
fn the_packaged_default_config_passes_check_without_a_warning() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/spray.toml");
    let out = spray(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("UDP  127.0.0.1:5514"));
}

#[test]
fn completions_name_every_subcommand_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _spray"),
        ("zsh", "#compdef spray"),
        ("fish", "complete -c spray"),
    ] {
        let out = spray(&["completions", shell]);
        let script = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        assert!(script.contains(marker), "{shell}: {script}");
        for sub in ["run", "check", "ctl", "import", "reload"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let out = spray(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("possible values"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn man_pages_cover_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = spray(&["man", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for page in [
        "spray.1",
        "spray-run.1",
        "spray-check.1",
        "spray-ctl-reload.1",
        "spray-completions.1",
    ] {
        let body = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(body.contains(".TH"), "{page}");
    }
    let main = std::fs::read_to_string(dir.path().join("spray.1")).unwrap();
    assert!(main.contains(".TH spray 1"), "{main}");
    assert!(main.contains("per\\-packet round robin"), "{main}");
    // The packaging helper itself is not documented as a user command.
    assert!(!dir.path().join("spray-man.1").exists());
    let out = spray(&["man", "--out", "/nonexistent/dir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot write the man pages into /nonexistent/dir"));
}
