//! `Type=notify`: `spray run` tells systemd READY only when every VIP is bound and the
//! control socket answers, and STOPPING when it shuts down.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Waits for the next notification on `sock`, for at most `within`.
fn next_message(sock: &UnixDatagram, within: Duration) -> Option<String> {
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn run_says_ready_once_every_vip_is_bound_and_the_control_socket_answers() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let control = dir.path().join("spray.sock");
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let backend = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let baddr = backend.local_addr().unwrap();
    let mut config = format!("[control]\nsocket = \"{}\"\n", control.display());
    for (i, port) in ports.iter().enumerate() {
        config.push_str(&format!(
            "[services.s{i}]\nvip = \"127.0.0.1:{port}\"\nbackends = [{{ addr = \"{baddr}\" }}]\n"
        ));
    }
    let path = dir.path().join("spray.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_spray"))
        .args([
            "run",
            "--config",
            path.to_str().unwrap(),
            "--stats-interval",
            "0",
        ])
        .arg("--log-level=warn")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let ready = next_message(&notify, Duration::from_secs(10));

    // At READY, with no retry: each VIP forwards the first datagram sent to it...
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    backend
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut reached = Vec::new();
    for port in &ports {
        client.send_to(b"first", ("127.0.0.1", *port)).unwrap();
        let mut buf = [0u8; 64];
        reached.push(backend.recv_from(&mut buf).is_ok());
    }
    // ... and the control socket answers (what keepalived's track script asks).
    let ctl = Command::new(env!("CARGO_BIN_EXE_spray"))
        .args(["ctl", "--socket", control.to_str().unwrap(), "version"])
        .output()
        .unwrap();

    // SAFETY: kill(2) on the child we spawned and have not waited for yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let stopping = next_message(&notify, Duration::from_secs(10));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);

    let ready =
        ready.unwrap_or_else(|| panic!("no notification within {:?}: {stderr}", started.elapsed()));
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready
            .lines()
            .any(|l| l == "STATUS=serving 2 service(s) on 1 worker(s)"),
        "{ready:?}"
    );
    assert_eq!(
        reached,
        [true, true],
        "a VIP did not forward at READY: {stderr}"
    );
    assert_eq!(
        ctl.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    assert_eq!(stopping.as_deref(), Some("STOPPING=1\n"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
