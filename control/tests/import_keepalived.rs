//! `spray import keepalived` on realistic keepalived.conf files (control/tests/keepalived/):
//! the output validates with `Config::parse` and means what the keepalived file meant, and
//! what does not map is reported with its keepalived line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use dataplane::sched::SchedulerKind;
use dataplane::service::{Mode, ServiceSpec};
use spray::config::file::RawConfig;
use spray::config::{Config, Machine};
use spray::health::{Check, Probe};
use spray::import::keepalived::{convert, Dataplane, Level, Options, Output};

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keepalived")
        .join(name)
}

fn import(name: &str, dataplane: Dataplane) -> Output {
    let src = std::fs::read_to_string(sample(name)).unwrap();
    convert(&src, Options { dataplane }).unwrap()
}

fn machine() -> Machine {
    Machine { cores: vec![0, 1] }
}

fn parse(out: &Output) -> Config {
    Config::parse("generated.toml", &out.toml, &machine())
        .unwrap_or_else(|e| panic!("{e}\n{}", out.toml))
}

fn service<'a>(c: &'a Config, vip: &str) -> &'a ServiceSpec {
    c.services
        .iter()
        .find(|s| s.vip.addr.to_string() == vip)
        .unwrap_or_else(|| panic!("no service {vip}"))
}

fn check_of<'a>(c: &'a Config, s: &ServiceSpec, i: usize) -> Option<&'a Check> {
    c.checks.get(&s.backends[i].id)
}

/// The diagnostics on `line` of `level`.
fn diag(out: &Output, line: usize, level: Level) -> Vec<&str> {
    out.diags
        .iter()
        .filter(|d| d.line == line && d.level == level)
        .map(|d| d.message.as_str())
        .collect()
}

#[test]
fn syslog_dr_with_misc_check() {
    // DR needs the dpdk dataplane: with this build's dpdk feature it validates as it is; the
    // same services with --dataplane socket (NAT) validate in every build.
    let dpdk = import("syslog-dr.conf", Dataplane::Auto);
    assert!(dpdk.toml.contains("dataplane = \"dpdk\""), "{}", dpdk.toml);
    assert!(dpdk.toml.contains("mode = \"dr\""));
    let built_with_dpdk = cfg!(spray_dpdk);
    match Config::parse("g.toml", &dpdk.toml, &machine()) {
        Ok(c) => assert!(built_with_dpdk, "{c:?}"),
        Err(e) => {
            assert!(!built_with_dpdk, "{e}\n{}", dpdk.toml);
            let problems = e.problems();
            assert_eq!(problems.len(), 1, "{e}");
            assert!(problems[0]
                .message
                .contains("built without the dpdk feature"));
        }
    }
    if cfg!(spray_dpdk) {
        assert_eq!(service(&parse(&dpdk), "198.18.0.10:514").mode, Mode::Dr);
    }

    let out = import("syslog-dr.conf", Dataplane::Socket);
    let c = parse(&out);
    assert_eq!(c.services.len(), 1);
    let s = service(&c, "198.18.0.10:514");
    assert_eq!(s.name, "syslog");
    assert_eq!(s.scheduler, SchedulerKind::Wrr);
    assert_eq!(s.mode, Mode::Nat);
    let addrs: Vec<String> = s.backends.iter().map(|b| b.addr.to_string()).collect();
    assert_eq!(
        addrs,
        ["198.19.1.1:514", "198.19.1.2:514", "198.19.1.3:514"]
    );
    let weights: Vec<u32> = s.backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [2, 2, 1]);
    let k = check_of(&c, s, 0).unwrap();
    assert_eq!(
        k.probe,
        Probe::Exec {
            command: vec![
                "/usr/local/bin/check_rsyslog.sh".into(),
                "198.19.1.1".into()
            ]
        }
    );
    // delay_loop 5, misc_timeout 3, MISC_CHECK's retry default 0: down at the first failure.
    assert_eq!(k.interval, Duration::from_secs(5));
    assert_eq!(k.timeout, Duration::from_secs(3));
    assert_eq!((k.rise, k.fall), (1, 1));
    // A pipe in misc_path: through the shell.
    let Probe::Exec { command } = &check_of(&c, s, 2).unwrap().probe else {
        panic!("not exec")
    };
    assert_eq!(command[..2], ["/bin/sh", "-c"]);

    assert!(diag(&out, 25, Level::Note)[0].starts_with("ops: per-packet"));
    assert!(diag(&out, 26, Level::Note)[0].starts_with("inhibit_on_failure"));
    assert!(diag(&out, 47, Level::Warning)[0].starts_with("misc_dynamic"));
    assert!(
        diag(&out, 20, Level::Warning)[0].contains("DR"),
        "{:?}",
        out.diags
    );
    assert!(diag(&out, 9, Level::Note)[0].contains("scripts/ha/notify.sh"));
}

#[test]
fn dns_nat_with_udp_check_and_dns_check() {
    let out = import("dns-nat.conf", Dataplane::Auto);
    assert!(!out.toml.contains("dpdk"), "NAT stays on sockets");
    let c = parse(&out);
    assert_eq!(c.services.len(), 2);

    let v4 = service(&c, "198.18.0.53:53");
    assert_eq!((v4.scheduler, v4.mode), (SchedulerKind::Rr, Mode::Nat));
    assert_eq!(
        v4.fallback.as_ref().map(|f| f.addr.to_string()).as_deref(),
        Some("198.19.2.99:53")
    );
    let k = check_of(&c, v4, 1).unwrap();
    let Probe::Udp {
        payload,
        require_reply,
        expect,
        port,
        ..
    } = &k.probe
    else {
        panic!("not udp: {k:?}")
    };
    assert_eq!(payload.len(), 17);
    assert_eq!(payload[13..], [0, 6, 0, 1]); // SOA, IN
    assert!(*require_reply);
    assert_eq!((expect, port), (&None, &None));
    // retry 2: keepalived takes the server down at the third failure.
    assert_eq!((k.rise, k.fall), (1, 3));
    assert_eq!(k.interval, Duration::from_secs(2));
    assert_eq!(k.timeout, Duration::from_secs(1));
    assert!(diag(&out, 11, Level::Warning)[0].starts_with("persistence_timeout"));
    assert!(diag(&out, 16, Level::Note)[0].starts_with("delay_before_retry"));

    let v6 = service(&c, "[2001:db8::53]:53");
    assert_eq!(v6.scheduler, SchedulerKind::Maglev);
    assert_eq!(v6.backends[1].addr.to_string(), "[2001:db8::2:2]:5353");
    assert_eq!(v6.backends[1].weight, 3);
    let k = check_of(&c, v6, 0).unwrap();
    let Probe::Udp {
        payload, expect, ..
    } = &k.probe
    else {
        panic!("not udp")
    };
    assert!(payload.windows(7).any(|w| w == b"\x06health"));
    assert_eq!(payload[payload.len() - 4..], [0, 1, 0, 1]); // A, IN
    assert_eq!(expect.as_deref(), Some(&[0x1a, 0x2b][..]));
    assert_eq!(k.fall, 4); // DNS_CHECK's retry default is 3
}

#[test]
fn mixed_file_keeps_udp_and_reports_the_rest() {
    let out = import("mixed.conf", Dataplane::Auto);
    let c = parse(&out);
    // The group's two addresses and NTP; the TCP services and fwmark are skipped.
    assert_eq!(c.services.len(), 3, "{}", out.toml);
    for vip in ["198.18.0.20:514", "198.18.0.21:514"] {
        let s = service(&c, vip);
        assert_eq!(s.scheduler, SchedulerKind::Wrr); // lc
        assert_eq!(s.mode, Mode::Nat); // FNAT, which is not keepalived's
        assert_eq!(s.backends[0].weight, 65535); // 100000, capped
        let tcp = check_of(&c, s, 0).unwrap();
        assert_eq!(tcp.probe, Probe::Tcp { port: Some(601) });
        assert_eq!(tcp.fall, 4);
        assert_eq!(tcp.timeout, Duration::from_secs(10)); // 15 s capped at delay_loop
        let http = check_of(&c, s, 1).unwrap();
        let Probe::Http {
            port,
            path,
            expect_status,
            ..
        } = &http.probe
        else {
            panic!("not http")
        };
        assert_eq!(
            (*port, path.as_str(), *expect_status),
            (Some(8080), "/status", 200)
        );
        assert_eq!(http.timeout, Duration::from_secs(2)); // the real server's connect_timeout
        assert!(check_of(&c, s, 2).is_none(), "BFD_CHECK does not map");
        assert_eq!(
            s.fallback.as_ref().unwrap().addr.to_string(),
            "198.19.4.99:514"
        );
    }
    let ntp = service(&c, "198.18.0.40:123");
    assert_eq!(ntp.name, "ntp");
    assert_eq!(ntp.scheduler, SchedulerKind::Maglev); // sh
    assert_eq!(ntp.backends[1].weight, 0);
    let k = check_of(&c, ntp, 0).unwrap();
    assert_eq!(k.interval, Duration::from_millis(1500));
    assert_eq!(k.timeout, Duration::from_millis(500));

    for (line, what) in [
        (9, "include"),
        (18, "fwmark member"),
        (26, "protocol TCP"),
        (41, "keepalived's default is TCP"),
        (52, "lb_algo lc"),
        (53, "lb_kind FNAT"),
        (55, "quorum"),
        (56, "hysteresis"),
        (58, "alpha"),
        (61, "weight 100000"),
        (62, "notify_down"),
        (64, "timeout 15000 ms"),
        (70, "PING_CHECK"),
        (78, "status_code 200-299"),
        (79, "digest"),
        (81, "second url"),
        (87, "BFD_CHECK"),
        (91, "fwmark 7"),
        (98, "lb_algo sh"),
        (103, "payload"),
    ] {
        let w = diag(&out, line, Level::Warning);
        assert!(
            w.iter().any(|m| m.contains(what)),
            "line {line}: no warning about {what}: {:?}",
            out.diags
        );
    }
    // A group expands into one service per address; its remarks are reported once.
    assert_eq!(diag(&out, 61, Level::Warning).len(), 1, "{:?}", out.diags);
}

#[test]
fn binary_prints_toml_on_stdout_and_warnings_with_lines_on_stderr() {
    let file = sample("mixed.conf");
    let out = Command::new(env!("CARGO_BIN_EXE_spray"))
        .args(["import", "keepalived"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.starts_with("# Generated by `spray import keepalived`"));
    assert!(!stdout.contains("warning"), "{stdout}");
    let f = file.display().to_string();
    assert!(
        stderr.contains(&format!("{f}:26: warning: protocol TCP")),
        "{stderr}"
    );
    assert!(stderr.contains("the output validates"), "{stderr}");

    // What spray prints, spray checks.
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("spray.toml");
    std::fs::write(&toml, stdout.as_bytes()).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_spray"))
        .args(["check", "--config"])
        .arg(&toml)
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn broken_or_empty_files_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = |body: &str| {
        let p = dir.path().join("k.conf");
        std::fs::write(&p, body).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_spray"))
            .args(["import", "keepalived"])
            .arg(&p)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = run("virtual_server 198.18.0.10 514 {\n protocol UDP\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("k.conf:1: block of 'virtual_server' is never closed"),
        "{err}"
    );
    let (code, err) = run("virtual_server 198.18.0.10 80 {\n real_server 198.19.0.1 80 { }\n}\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("no UDP virtual_server"), "{err}");
    let (code, _) = run("");
    assert_eq!(code, Some(2));
    let missing = dir.path().join("missing.conf");
    let o = Command::new(env!("CARGO_BIN_EXE_spray"))
        .args(["import", "keepalived"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn virtual_server_group_sample_leaves_out_the_real_server_that_is_its_own_vip() {
    // keepalived's own sample lists 192.168.200.1:1358 both as a group member and as a
    // real_server: IPVS delivers that one locally, Spray would loop it.
    let out = import("virtual_server_group.conf", Dataplane::Socket);
    let c = parse(&out);
    assert_eq!(c.services.len(), 11, "{}", out.toml);
    let looped: SocketAddr = "192.168.200.1:1358".parse().unwrap();
    for s in &c.services {
        assert!(
            s.backends.iter().all(|b| b.addr != looped),
            "{} still sends to its own vip: {}",
            s.name,
            out.toml
        );
        assert_eq!(s.backends.len(), 1, "{}", s.name);
    }
    let warned = diag(&out, 32, Level::Warning);
    assert!(
        warned
            .iter()
            .any(|m| m.contains("is the virtual_server 192.168.200.1:1358 itself")),
        "{warned:?}"
    );
    // Written by hand, the same table is refused.
    let looping = out.toml.replace(
        "addr = \"192.168.200.2:1358\"",
        "addr = \"192.168.200.1:1358\"",
    );
    let e = Config::parse("generated.toml", &looping, &machine()).unwrap_err();
    assert!(e.to_string().contains("a forwarding loop"), "{e}");
}

/// The typed config the importer builds, serialised, reads back as the same model, and the
/// normal loader makes of it the services the model names: name, VIP, scheduler, mode,
/// fallback, backends with their weights, and a check where the model has one.
#[test]
fn import_serialise_load_gives_the_same_services() {
    for name in [
        "syslog-dr.conf",
        "dns-nat.conf",
        "mixed.conf",
        "virtual_server_group.conf",
    ] {
        let out = import(name, Dataplane::Socket);
        let model = &out.config;
        let text = model.to_toml().unwrap();
        assert!(
            out.toml.ends_with(&text),
            "{name}: stdout is the model's TOML"
        );
        let back: RawConfig = toml::from_str(&text).unwrap();
        assert_eq!(&back, model, "{name}: read back as a different model");

        let c = parse(&out);
        assert_eq!(c.services.len(), model.services.len(), "{name}");
        assert_eq!(c.services.len(), out.services, "{name}");
        for (s, (key, raw)) in c.services.iter().zip(&model.services) {
            let raw = raw.get_ref();
            assert_eq!(&s.name, key);
            assert_eq!(s.vip.addr.to_string(), *raw.vip.get_ref(), "{key}");
            let sched = raw.scheduler.as_ref().map(|v| v.get_ref().as_str());
            assert_eq!(Some(s.scheduler.to_string().as_str()), sched, "{key}");
            let mode = raw.mode.as_ref().map(|v| v.get_ref().as_str());
            assert_eq!(
                mode,
                Some(match s.mode {
                    Mode::Nat => "nat",
                    Mode::Dr => "dr",
                }),
                "{key}"
            );
            assert_eq!(
                s.fallback.as_ref().map(|f| f.addr.to_string()),
                raw.fallback.as_ref().map(|f| f.get_ref().clone()),
                "{key}"
            );
            let backends = raw.backends.as_ref().unwrap().get_ref();
            assert_eq!(s.backends.len(), backends.len(), "{key}");
            for (i, (b, rb)) in s.backends.iter().zip(backends).enumerate() {
                let rb = rb.get_ref();
                assert_eq!(b.addr.to_string(), *rb.addr.get_ref(), "{key}[{i}]");
                let weight = rb.weight.as_ref().map_or(1, |w| *w.get_ref());
                assert_eq!(i64::from(b.weight), weight, "{key}[{i}]");
                let checked = rb.check.is_some() || raw.check.is_some();
                assert_eq!(check_of(&c, s, i).is_some(), checked, "{key}[{i}]");
            }
        }
    }
}

#[test]
fn tun_services_become_tunnel_mode_with_their_encapsulation() {
    let out = import("syslog-tun.conf", Dataplane::Auto);
    assert!(out.toml.contains("dataplane = \"dpdk\""), "{}", out.toml);
    // What the importer writes is the loader's model, key for key.
    let raw: RawConfig = toml::from_str(&out.toml).unwrap();
    let by_vip = |vip: &str| {
        raw.services
            .values()
            .map(|s| s.get_ref())
            .find(|s| s.vip.get_ref() == vip)
            .unwrap()
    };
    let v4 = by_vip("198.18.0.10:514");
    assert_eq!(v4.mode.as_ref().unwrap().get_ref(), "tunnel");
    let t = v4.tunnel.as_ref().unwrap().get_ref();
    assert_eq!(t.encap.as_ref().unwrap().get_ref(), "gue");
    assert_eq!(*t.port.as_ref().unwrap().get_ref(), 6081);
    let modes: Vec<Option<&str>> = v4
        .backends
        .as_ref()
        .unwrap()
        .get_ref()
        .iter()
        .map(|b| b.get_ref().mode.as_ref().map(|m| m.get_ref().as_str()))
        .collect();
    assert_eq!(modes, [None, None, Some("dr")]);
    let v6 = by_vip("[2001:db8::10]:514");
    assert_eq!(v6.mode.as_ref().unwrap().get_ref(), "tunnel");
    assert!(v6.tunnel.is_none(), "ipip is the default");
    // An IPv4 real server of an IPv6 VIP: a tunnel carries either family over either.
    assert_eq!(v6.backends.as_ref().unwrap().get_ref().len(), 2);

    if cfg!(spray_dpdk) {
        let c = parse(&out);
        let s = service(&c, "198.18.0.10:514");
        assert_eq!(s.mode, Mode::Dr);
        let t = s.backends[0].tunnel.expect("tunnelled");
        assert_eq!(t.encap, dataplane::service::Encap::Gue { port: 6081 });
        assert_eq!(t.source.to_string(), "198.18.0.2");
        assert!(s.backends[2].tunnel.is_none(), "lvs_method DR");
        let s6 = service(&c, "[2001:db8::10]:514");
        let srcs: Vec<String> = s6
            .backends
            .iter()
            .map(|b| b.tunnel.unwrap().source.to_string())
            .collect();
        assert_eq!(srcs, ["2001:db8::2", "198.18.0.2"]);
    }

    // Without the dpdk dataplane the services become NAT, with a warning, and the IPv4
    // real server of the IPv6 VIP is skipped as NAT cannot translate between families.
    let out = import("syslog-tun.conf", Dataplane::Socket);
    assert!(!out.toml.contains("tunnel"), "{}", out.toml);
    assert!(
        diag(&out, 4, Level::Warning)
            .iter()
            .any(|m| m.contains("lb_kind TUNNEL of 198.18.0.10:514")),
        "{:?}",
        out.diags
    );
}
