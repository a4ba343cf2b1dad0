//! Golden test of the DPDK dataplane without a NIC: `spray run` over a `net_pcap` vdev.
//!
//! The test builds an input capture (four VIPs: DR and NAT, IPv4 and IPv6; NAT replies from
//! backends; traffic for no VIP), runs the `spray` binary with
//! `net_pcap0,rx_pcap=IN,tx_pcap=OUT`, stops it with SIGTERM once its stats line shows every
//! packet received, and checks the output capture packet by packet: destination address and
//! port, MACs, valid checksums and round-robin order. Every MAC is static here (the
//! config's `mac` and `gateway_mac`); the only frames Spray originates are the VIPs'
//! announcements (gratuitous ARP, unsolicited NA), which are checked apart. It also checks
//! that the mempool was full again after stop.
//!
//! Needs root (EAL with `--no-huge`); built only with the dpdk feature.
#![cfg(spray_dpdk)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dataplane::testkit::frames::{checksums_valid, udp_frame, FrameSpec};
use dataplane::wire::parse_udp;

const PORT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x01];

/// Writes a classic pcap file (microsecond timestamps, Ethernet).
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut b = Vec::new();
    b.extend(0xa1b2_c3d4u32.to_le_bytes());
    b.extend(2u16.to_le_bytes());
    b.extend(4u16.to_le_bytes());
    b.extend([0u8; 8]); // thiszone, sigfigs
    b.extend(65535u32.to_le_bytes());
    b.extend(1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for (i, f) in frames.iter().enumerate() {
        b.extend(1u32.to_le_bytes());
        b.extend((i as u32).to_le_bytes());
        b.extend((f.len() as u32).to_le_bytes());
        b.extend((f.len() as u32).to_le_bytes());
        b.extend(f);
    }
    std::fs::write(path, b).unwrap();
}

/// Reads a pcap file (micro- or nanosecond magic, little-endian).
fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap();
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    assert!(
        magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d,
        "not a little-endian pcap: {magic:#x}"
    );
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let incl = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16;
        out.push(b[at..at + incl].to_vec());
        at += incl;
    }
    out
}

fn frame(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let mut s = FrameSpec::new(src.parse().unwrap(), dst.parse().unwrap());
    s.dst_mac = spray_mac();
    udp_frame(&s, payload)
}

fn spray_mac() -> dataplane::service::MacAddr {
    dataplane::service::MacAddr(PORT_MAC)
}

fn bmac(vip: u8, i: u8) -> [u8; 6] {
    [2, 0, 0, 0, vip, i]
}

const CONFIG: &str = r#"
[runtime]
dataplane = "dpdk"
log = "warn"

[dpdk]
memory_mb = 256
no_huge = true
file_prefix = "PREFIX"
vdevs = ["net_pcap0,rx_pcap=IN,tx_pcap=OUT"]
idle_max_sleep_us = 50

[[dpdk.ports]]
device = "net_pcap0"
mac = "02:00:00:00:00:10"
gateway_mac = "02:00:00:00:00:01"
rx_ring = 512
tx_ring = 512

[services.a-v4-nat]
vip = "198.18.0.10:514"
mode = "nat"
backends = [
  { addr = "198.19.1.1:514", mac = "02:00:00:00:01:01" },
  { addr = "198.19.1.2:514", mac = "02:00:00:00:01:02" },
  { addr = "198.19.1.3:514", mac = "02:00:00:00:01:03" },
]

[services.b-v4-dr]
vip = "198.18.0.11:514"
mode = "dr"
backends = [
  { addr = "198.19.2.1", mac = "02:00:00:00:02:01" },
  { addr = "198.19.2.2", mac = "02:00:00:00:02:02" },
  { addr = "198.19.2.3", mac = "02:00:00:00:02:03" },
]

[services.c-v6-nat]
vip = "[2001:db8::10]:514"
mode = "nat"
backends = [
  { addr = "[2001:db8:1::1]:5514", mac = "02:00:00:00:03:01" },
  { addr = "[2001:db8:1::2]:5514", mac = "02:00:00:00:03:02" },
]

[services.d-v6-dr]
vip = "[2001:db8::11]:2055"
mode = "dr"
backends = [
  { addr = "2001:db8:2::1", mac = "02:00:00:00:04:01" },
  { addr = "2001:db8:2::2", mac = "02:00:00:00:04:02" },
]
"#;

/// What one output frame must look like.
struct Expect {
    dst: SocketAddr,
    src: SocketAddr,
    dst_mac: [u8; 6],
}

#[test]
fn pcap_golden_four_vips_dr_nat_v4_v6() {
    if not_root() {
        eprintln!("skipped: the DPDK golden test needs root (EAL)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in.pcap"), dir.path().join("out.pcap"));
    let mut frames = Vec::new();
    let mut expect = Vec::new();
    let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
    for i in 0..12u8 {
        let client4 = format!("198.18.0.{}:{}", 100 + i, 40000 + u16::from(i));
        let client6 = format!("[2001:db8::c:{i}]:{}", 40000 + u16::from(i));
        frames.push(frame(&client4, "198.18.0.10:514", b"<13>nat v4"));
        expect.push(Expect {
            dst: sa(&format!("198.19.1.{}:514", i % 3 + 1)),
            src: sa(&client4),
            dst_mac: bmac(1, i % 3 + 1),
        });
        frames.push(frame(&client4, "198.18.0.11:514", b"<13>dr v4"));
        expect.push(Expect {
            dst: sa("198.18.0.11:514"),
            src: sa(&client4),
            dst_mac: bmac(2, i % 3 + 1),
        });
        frames.push(frame(&client6, "[2001:db8::10]:514", b"<13>nat v6"));
        expect.push(Expect {
            dst: sa(&format!("[2001:db8:1::{}]:5514", i % 2 + 1)),
            src: sa(&client6),
            dst_mac: bmac(3, i % 2 + 1),
        });
        frames.push(frame(&client6, "[2001:db8::11]:2055", b"netflow v6"));
        expect.push(Expect {
            dst: sa("[2001:db8::11]:2055"),
            src: sa(&client6),
            dst_mac: bmac(4, i % 2 + 1),
        });
        // Not for a VIP: dropped, no output.
        frames.push(frame(&client4, "198.18.0.99:514", b"stray"));
    }
    // NAT replies from each backend go back to their client with the VIP as source.
    for b in 1..=3u8 {
        let client = format!("198.18.0.{}:{}", 99 + b, 39999 + u16::from(b));
        frames.push(frame(&format!("198.19.1.{b}:514"), &client, b"reply"));
        expect.push(Expect {
            dst: sa(&client),
            src: sa("198.18.0.10:514"),
            dst_mac: GW_MAC,
        });
    }
    frames.push(frame(
        "[2001:db8:1::2]:5514",
        "[2001:db8::c:1]:40001",
        b"reply6",
    ));
    expect.push(Expect {
        dst: sa("[2001:db8::c:1]:40001"),
        src: sa("[2001:db8::10]:514"),
        dst_mac: GW_MAC,
    });
    write_pcap(&inp, &frames);

    let cfg = dir.path().join("spray.toml");
    let prefix = format!("spray-test-pcap-{}", std::process::id());
    std::fs::write(
        &cfg,
        CONFIG
            .replace("PREFIX", &prefix)
            .replace("IN", &inp.display().to_string())
            .replace("OUT", &out.display().to_string()),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spray"))
        .args(["run", "--stats-interval", "1", "-c"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spray starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("spray> {line}");
            let _ = tx.send(line.clone());
        }
    });
    let want = format!("stats: rx {} pkts", frames.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = false;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.starts_with(&want) => {
                seen = true;
                break;
            }
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("spray exited early: {status}");
                }
            }
            Err(_) => break,
        }
    }
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let lines: Vec<String> = rx.try_iter().collect();
    assert!(
        seen,
        "spray never reported receiving {} packets",
        frames.len()
    );
    assert!(status.success(), "spray exited with {status}");
    // EAL leaves its runtime folder behind; Spray removes it after clean-up.
    let runtime = std::path::Path::new("/var/run/dpdk").join(&prefix);
    assert!(!runtime.exists(), "{} left behind", runtime.display());
    let pool = lines
        .iter()
        .find(|l| l.contains("mempool") && l.contains("free"))
        .expect("a mempool line after stop");
    let level = pool
        .split_whitespace()
        .find(|w| w.contains('/'))
        .expect("free/size");
    let (free, size) = level.split_once('/').unwrap();
    assert_eq!(free, size, "mempool not full after stop: {pool}");

    // Besides the datagrams, the controller announced each VIP (gratuitous ARP, unsolicited
    // NA) with the port's MAC; set those apart.
    let (announced, got): (Vec<Vec<u8>>, Vec<Vec<u8>>) = read_pcap(&out)
        .into_iter()
        .partition(|f| dataplane::neigh::sender_of(f).is_some());
    let mut vips: Vec<std::net::IpAddr> = announced
        .iter()
        .filter_map(|f| dataplane::neigh::sender_of(f))
        .inspect(|(_, mac)| assert_eq!(mac.0, PORT_MAC, "announced with the port's MAC"))
        .map(|(ip, _)| ip)
        .collect();
    vips.sort();
    vips.dedup();
    let want_vips: Vec<std::net::IpAddr> =
        ["198.18.0.10", "198.18.0.11", "2001:db8::10", "2001:db8::11"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
    assert_eq!(vips, want_vips, "every vip announced");
    assert_eq!(got.len(), expect.len(), "frames out");
    for (i, (f, e)) in got.iter().zip(&expect).enumerate() {
        let p = parse_udp(f).unwrap_or_else(|r| panic!("frame {i}: {r:?}"));
        assert_eq!(p.dst(), e.dst, "frame {i}: destination");
        assert_eq!(p.src(), e.src, "frame {i}: source");
        assert_eq!(&f[0..6], &e.dst_mac, "frame {i}: destination MAC");
        assert_eq!(&f[6..12], &PORT_MAC, "frame {i}: source MAC");
        assert!(checksums_valid(f), "frame {i}: checksums");
    }
}

/// Whether this process lacks root (EAL needs it to map memory and open its run directory).
fn not_root() -> bool {
    !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
