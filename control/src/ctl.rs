//! `spray ctl`: the command-line client of the control socket.
//!
//! Exit status, for scripts: 0 done, 1 the server refused or failed (its message is
//! printed), 2 usage error (clap), 3 cannot connect to the socket. With `--json` a failure
//! is one JSON object `{"error":{"code":..,"message":..}}` on standard output instead.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::api::client::{CallError, Client};
use crate::api::{Event, ServiceList, Stats};
use crate::config::file::Method;

/// `spray ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Control socket (default: /run/spray/spray.sock for root, else $XDG_RUNTIME_DIR/spray.sock or /tmp/spray-UID.sock)
    #[arg(long, short = 's', value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// Print the server's JSON answer instead of a table or message
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub cmd: CtlCommand,
}

/// `spray ctl` subcommands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// List services and backends with weight, health, state and counters (like ipvsadm -L -n)
    List,
    /// Counters per worker, service and backend; drops by reason
    Stats,
    /// Admin, reload and health events
    Events {
        /// Only events with a sequence number above this
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
    /// Redraw live rates every interval until Ctrl-C (plain successive screens when standard output is not a terminal)
    Watch {
        /// Seconds between refreshes
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many refreshes (0: until Ctrl-C)
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Add a service
    AddVip {
        /// Service name
        name: String,
        /// VIP address:port
        vip: String,
        /// rr, wrr or maglev
        #[arg(long, default_value = "rr")]
        scheduler: String,
        /// nat (or dr, with a wire dataplane)
        #[arg(long, default_value = "nat")]
        mode: String,
        /// A backend, ADDR:PORT or ADDR:PORT=WEIGHT; repeat for more
        #[arg(long = "backend", short = 'b', value_name = "ADDR[=W]")]
        backends: Vec<String>,
    },
    /// Remove a service
    DelVip {
        /// Service name or VIP address:port
        service: String,
    },
    /// Add a backend to a service
    AddBackend {
        /// Service name or VIP address:port
        service: String,
        /// Backend address:port
        addr: String,
        /// Weight, 0..=65535
        #[arg(long, short = 'w', default_value_t = 1, allow_negative_numbers = true)]
        weight: i64,
    },
    /// Remove a backend from a service
    DelBackend {
        /// Service name or VIP address:port
        service: String,
        /// Backend address:port
        backend: String,
    },
    /// Set a backend's weight
    Weight {
        /// Service name or VIP address:port
        service: String,
        /// Backend address:port
        backend: String,
        /// New weight, 0..=65535
        #[arg(allow_negative_numbers = true)]
        weight: i64,
    },
    /// Stop sending new datagrams to a backend (replies still relayed)
    Drain {
        /// Service name or VIP address:port
        service: String,
        /// Backend address:port
        backend: String,
    },
    /// Put a drained backend back into rotation
    Undrain {
        /// Service name or VIP address:port
        service: String,
        /// Backend address:port
        backend: String,
    },
    /// Put a disabled service, or one backend, back into the dataplane
    Enable {
        /// Service name or VIP address:port
        service: String,
        /// Backend address:port (default: the whole service)
        backend: Option<String>,
    },
    /// Take a service, or one backend, out of the dataplane (kept in the listing)
    Disable {
        /// Service name or VIP address:port
        service: String,
        /// Backend address:port (default: the whole service)
        backend: Option<String>,
    },
    /// Re-read the config file (as SIGHUP does); an invalid file is refused with the reason
    Reload,
    /// Version of the running spray and of the protocol
    Version,
}

fn request(cmd: &CtlCommand) -> (&'static str, Value) {
    match cmd {
        CtlCommand::List => ("list", json!({})),
        CtlCommand::Stats | CtlCommand::Watch { .. } => ("stats", json!({})),
        CtlCommand::Events { since } => ("events", json!({ "since": since })),
        CtlCommand::AddVip {
            name,
            vip,
            scheduler,
            mode,
            backends,
        } => {
            let backends: Vec<Value> = backends
                .iter()
                .map(|b| match b.rsplit_once('=') {
                    Some((addr, w)) => match w.parse::<i64>() {
                        Ok(w) => json!({ "addr": addr, "weight": w }),
                        Err(_) => json!({ "addr": addr, "weight": w }),
                    },
                    None => json!({ "addr": b }),
                })
                .collect();
            (
                "add_vip",
                json!({ "name": name, "vip": vip, "scheduler": scheduler, "mode": mode, "backends": backends }),
            )
        }
        CtlCommand::DelVip { service } => ("del_vip", json!({ "service": service })),
        CtlCommand::AddBackend {
            service,
            addr,
            weight,
        } => (
            "add_backend",
            json!({ "service": service, "addr": addr, "weight": weight }),
        ),
        CtlCommand::DelBackend { service, backend } => (
            "del_backend",
            json!({ "service": service, "backend": backend }),
        ),
        CtlCommand::Weight {
            service,
            backend,
            weight,
        } => (
            "set_weight",
            json!({ "service": service, "backend": backend, "weight": weight }),
        ),
        CtlCommand::Drain { service, backend } => {
            ("drain", json!({ "service": service, "backend": backend }))
        }
        CtlCommand::Undrain { service, backend } => {
            ("undrain", json!({ "service": service, "backend": backend }))
        }
        CtlCommand::Enable { service, backend } => {
            ("enable", json!({ "service": service, "backend": backend }))
        }
        CtlCommand::Disable { service, backend } => {
            ("disable", json!({ "service": service, "backend": backend }))
        }
        CtlCommand::Reload => ("reload", json!({})),
        CtlCommand::Version => ("version", json!({})),
    }
}

/// Runs `spray ctl`; returns the exit status.
pub fn run(args: &CtlArgs) -> u8 {
    let path = args
        .socket
        .clone()
        .unwrap_or_else(crate::config::default_socket_path);
    let result = Client::connect(&path).and_then(|mut c| match &args.cmd {
        CtlCommand::Watch { interval, count } => watch(&mut c, *interval, *count),
        cmd => {
            let (name, a) = request(cmd);
            let ok = c.call(name, a)?;
            print!("{}", render(cmd, &ok, args.json));
            Ok(())
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) if args.json => {
            println!("{}", error_json(&e));
            exit_code(&e)
        }
        Err(e) => {
            eprintln!("spray ctl: error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            exit_code(&e)
        }
    }
}

/// Exit status of a failed request (see the module doc).
fn exit_code(e: &CallError) -> u8 {
    match e {
        CallError::Connect { .. } => 3,
        _ => 1,
    }
}

/// What `--json` prints for a failed request: the server's own error object when it
/// answered with one, else a client-side code with the whole cause chain as the message.
pub fn error_json(e: &CallError) -> Value {
    let code = match e {
        CallError::Refused(api) => return json!({ "error": api }),
        CallError::Connect { .. } => "connect_failed",
        CallError::Io { .. } => "connection_lost",
        CallError::Protocol { .. } => "bad_response",
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(message, ": {s}");
        source = s.source();
    }
    json!({ "error": { "code": code, "message": message } })
}

/// Whether `args` (the process's, program name first) ask for `spray ctl --json`, so that
/// a usage error clap finds is reported as JSON too.
pub fn wants_json(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    let mut args = args
        .into_iter()
        .skip(1)
        .take_while(|a| a.as_os_str() != "--");
    args.any(|a| a.as_os_str() == "ctl") && args.any(|a| a.as_os_str() == "--json")
}

/// The `--json` form of a usage error: code `usage`, clap's message without its usage lines.
pub fn usage_json(e: &clap::Error) -> Value {
    let text = e.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let message = text.split("\n\nUsage:").next().unwrap_or(text).trim();
    json!({ "error": { "code": "usage", "message": message } })
}

fn render(cmd: &CtlCommand, ok: &Value, json_out: bool) -> String {
    if json_out {
        return format!("{}\n", serde_json::to_string_pretty(ok).unwrap_or_default());
    }
    match cmd {
        CtlCommand::List => match serde_json::from_value::<ServiceList>(ok.clone()) {
            Ok(l) => list_table(&l),
            Err(_) => format!("{ok}\n"),
        },
        CtlCommand::Stats => match serde_json::from_value::<Stats>(ok.clone()) {
            Ok(s) => stats_text(&s),
            Err(_) => format!("{ok}\n"),
        },
        CtlCommand::Events { .. } => {
            let events: Vec<Event> = ok
                .get("events")
                .cloned()
                .and_then(|e| serde_json::from_value(e).ok())
                .unwrap_or_default();
            events_table(&events)
        }
        CtlCommand::Version => format!(
            "{} {} (protocol {}, {} controller)\n",
            ok["name"].as_str().unwrap_or("spray"),
            ok["version"].as_str().unwrap_or("?"),
            ok["protocol"],
            ok["controller"].as_str().unwrap_or("?")
        ),
        CtlCommand::Reload => {
            let mut s = format!(
                "reloaded {}: {} (generation {})\n",
                ok["file"].as_str().unwrap_or("?"),
                ok["summary"].as_str().unwrap_or(""),
                ok["generation"]
            );
            if let Some(keys) = ok["restart_needed"].as_array().filter(|k| !k.is_empty()) {
                let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
                let _ = writeln!(
                    s,
                    "warning: changed keys take effect only at restart: {}",
                    keys.join(", ")
                );
            }
            s
        }
        _ => format!(
            "{} (generation {})\n",
            ok["message"].as_str().unwrap_or("done"),
            ok["generation"]
        ),
    }
}

/// A service's State column: `down` when it is enabled but no backend is in rotation.
fn service_state(svc: &crate::api::ServiceInfo) -> &'static str {
    if svc.admin == crate::api::Admin::Enabled && svc.in_rotation == 0 {
        "down"
    } else {
        svc.admin.name()
    }
}

/// One line per event: sequence number, UTC time, kind and message.
pub fn events_table(events: &[Event]) -> String {
    let mut s = String::new();
    for e in events {
        let _ = writeln!(
            s,
            "{:>5} {} {:<7} {}",
            e.seq,
            event_time(e.unix_ms),
            e.kind,
            e.message
        );
    }
    s
}

/// `unix_ms` as UTC RFC 3339 with milliseconds, like `2026-12-06T03:04:05.123Z`.
pub fn event_time(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The `ipvsadm -L -n`-style listing.
pub fn list_table(l: &ServiceList) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Prot LocalAddress:Port                 Scheduler State    Packets        Bytes  Service"
    );
    let _ = writeln!(s, "  -> RemoteAddress:Port                Forward Weight Health State    Packets        Bytes");
    for svc in &l.services {
        let _ = writeln!(
            s,
            "{:<4} {:<33} {:<9} {:<8} {:>7} {:>12}  {}",
            svc.protocol.to_uppercase(),
            svc.vip.to_string(),
            svc.scheduler.name(),
            service_state(svc),
            svc.packets,
            svc.bytes,
            svc.name
        );
        for b in &svc.backends {
            backend_line(&mut s, b);
        }
        // Each mirror pool is listed as ipvsadm lists a second service: its header, then
        // its backends with the copies they received.
        for m in &svc.mirrors {
            let (packets, bytes) = m
                .backends
                .iter()
                .fold((0, 0), |(p, b), x| (p + x.packets, b + x.bytes));
            let state = if m.in_rotation > 0 {
                "copying"
            } else {
                "no-copies"
            };
            let _ = writeln!(
                s,
                "{:<4} {:<33} {:<9} {:<8} {:>7} {:>12}  {} mirror {} (1/{} of its datagrams)",
                "COPY",
                svc.vip.to_string(),
                m.scheduler.name(),
                state,
                packets,
                bytes,
                svc.name,
                m.name,
                m.sample
            );
            for b in &m.backends {
                backend_line(&mut s, b);
            }
        }
    }
    s
}

/// One `  -> backend` line of [`list_table`].
fn backend_line(s: &mut String, b: &crate::api::BackendInfo) {
    // ipvsadm's names of its forwarding methods.
    let forward = match b.mode {
        Method::Dr => "Route",
        Method::Tunnel => "Tunnel",
        Method::Nat => "Masq",
    };
    let health = match b.health {
        crate::api::HealthState::Up => "up",
        crate::api::HealthState::Down => "down",
    };
    let _ = writeln!(
        s,
        "  -> {:<33} {:<7} {:<6} {:<6} {:<8} {:>7} {:>12}",
        b.addr.to_string(),
        forward,
        b.weight,
        health,
        b.admin.name(),
        b.packets,
        b.bytes
    );
}

fn stats_text(st: &Stats) -> String {
    let mut s = format!("generation {}, up {:.0} s\n", st.generation, st.uptime_secs);
    let _ = writeln!(
        s,
        "{:<8} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "worker", "rx_packets", "tx_packets", "nat_replies", "drops", "snapshots"
    );
    let mut rows: Vec<_> = st
        .workers
        .iter()
        .map(|w| (w.worker.map_or("-".to_owned(), |i| i.to_string()), w))
        .collect();
    rows.push(("total".to_owned(), &st.totals));
    for (name, w) in rows {
        let drops: u64 = w.drops.values().sum();
        let _ = writeln!(
            s,
            "{name:<8} {:>12} {:>12} {:>12} {drops:>10} {:>10}",
            w.rx_packets, w.tx_packets, w.nat_replies, w.snapshots_applied
        );
    }
    let drops: Vec<String> = st
        .totals
        .drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let _ = writeln!(
        s,
        "drops by reason: {}",
        if drops.is_empty() {
            "none".to_owned()
        } else {
            drops.join(", ")
        }
    );
    let t = &st.totals;
    if st.services.iter().any(|s| !s.mirrors.is_empty()) {
        let _ = writeln!(
            s,
            "mirror copies: {} sent, not sent: {} no buffer, {} tx full, {} unreachable backend",
            t.mirror_copies, t.mirror_no_buffer, t.mirror_tx_full, t.mirror_unsent
        );
    }
    for svc in &st.services {
        let _ = writeln!(
            s,
            "UDP  {:<33} {:>12} pkts {:>14} bytes  {}",
            svc.vip.to_string(),
            svc.packets,
            svc.bytes,
            svc.name
        );
        let backend = |s: &mut String, b: &crate::api::BackendStats| {
            let _ = writeln!(
                s,
                "  -> {:<33}{:>12} pkts {:>14} bytes",
                b.addr.to_string(),
                b.packets,
                b.bytes
            );
        };
        for b in &svc.backends {
            backend(&mut s, b);
        }
        for m in &svc.mirrors {
            let _ = writeln!(s, "COPY {:<33} {} mirror {}", "", svc.name, m.name);
            for b in &m.backends {
                backend(&mut s, b);
            }
        }
    }
    s
}

fn rate(now: u64, before: Option<u64>, dt: f64) -> String {
    match before {
        Some(b) if dt > 0.0 => format!("{:.0}/s", now.saturating_sub(b) as f64 / dt),
        _ => "-".to_owned(),
    }
}

/// Where a packet count belongs on the watch screen: a service (no backend) or one of its
/// backends, in the primary pool (`None`) or a mirror pool. An address may be in several.
type WatchKey<'a> = (&'a str, Option<&'a str>, Option<SocketAddr>);

fn watch_counts(st: &Stats) -> HashMap<WatchKey<'_>, u64> {
    let mut counts = HashMap::new();
    for svc in &st.services {
        counts.insert((svc.name.as_str(), None, None), svc.packets);
        for b in &svc.backends {
            counts.insert((svc.name.as_str(), None, Some(b.addr)), b.packets);
        }
        for m in &svc.mirrors {
            for b in &m.backends {
                counts.insert(
                    (svc.name.as_str(), Some(m.name.as_str()), Some(b.addr)),
                    b.packets,
                );
            }
        }
    }
    counts
}

/// One screen of `watch`: rates since `prev`.
fn watch_screen(st: &Stats, prev: Option<&Stats>, dt: f64) -> String {
    let before = prev.map(watch_counts).unwrap_or_default();
    let drops: u64 = st.totals.drops.values().sum();
    let prev_drops = prev.map(|p| p.totals.drops.values().sum::<u64>());
    let mut s = format!(
        "spray: generation {}, rx {} tx {} drops {} (Ctrl-C to stop)\n",
        st.generation,
        rate(st.totals.rx_packets, prev.map(|p| p.totals.rx_packets), dt),
        rate(st.totals.tx_packets, prev.map(|p| p.totals.tx_packets), dt),
        rate(drops, prev_drops, dt),
    );
    let _ = writeln!(
        s,
        "Prot LocalAddress:Port                 {:>12} {:>14}  Service",
        "Rate", "Packets"
    );
    let row = |s: &mut String, key: WatchKey, addr: SocketAddr, packets: u64| {
        let r = rate(packets, before.get(&key).copied(), dt);
        let _ = writeln!(s, "  -> {:<33} {r:>12} {packets:>14}", addr.to_string());
    };
    for svc in &st.services {
        let name = svc.name.as_str();
        let r = rate(svc.packets, before.get(&(name, None, None)).copied(), dt);
        let _ = writeln!(
            s,
            "UDP  {:<33} {r:>12} {:>14}  {name}",
            svc.vip.to_string(),
            svc.packets,
        );
        for b in &svc.backends {
            row(&mut s, (name, None, Some(b.addr)), b.addr, b.packets);
        }
        for m in &svc.mirrors {
            let _ = writeln!(
                s,
                "COPY {:<33} {:>12} {:>14}  {name} mirror {}",
                "", "", "", m.name
            );
            for b in &m.backends {
                let key = (name, Some(m.name.as_str()), Some(b.addr));
                row(&mut s, key, b.addr, b.packets);
            }
        }
    }
    s
}

fn watch(c: &mut Client, interval: f64, count: u64) -> Result<(), CallError> {
    let every = Duration::from_secs_f64(interval.clamp(0.1, 3600.0));
    let mut prev: Option<(Stats, Instant)> = None;
    let tty = std::io::stdout().is_terminal();
    let mut n = 0;
    loop {
        let v = c.call("stats", json!({}))?;
        let now = Instant::now();
        let st: Stats = serde_json::from_value(v.clone()).map_err(|_| CallError::Protocol {
            path: PathBuf::new(),
            line: v.to_string(),
        })?;
        let dt = prev
            .as_ref()
            .map_or(0.0, |(_, t)| now.duration_since(*t).as_secs_f64());
        let screen = watch_screen(&st, prev.as_ref().map(|(p, _)| p), dt);
        let mut out = std::io::stdout().lock();
        // A terminal is redrawn in place (home, clear); a pipe or file gets plain screens
        // one after the other, a blank line apart, since escape codes would be garbage there.
        let written = if tty {
            write!(out, "\x1b[H\x1b[2J{screen}")
        } else {
            writeln!(out, "{screen}")
        }
        .and_then(|()| out.flush());
        drop(out);
        // The reader went away (`| head`): stop quietly, as other line tools do.
        if written.is_err() {
            return Ok(());
        }
        prev = Some((st, now));
        n += 1;
        if count > 0 && n >= count {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(addr: &str, packets: u64) -> crate::api::BackendInfo {
        crate::api::BackendInfo {
            addr: addr.parse().unwrap(),
            mode: Method::Nat,
            weight: 1,
            effective_weight: 1,
            health: crate::api::HealthState::Up,
            admin: crate::api::Admin::Enabled,
            packets,
            bytes: packets * 100,
            check_latency_seconds: None,
            check_failures: 0,
            went_up: 0,
            went_down: 0,
        }
    }

    #[test]
    fn list_shows_each_mirror_pool_after_its_service() {
        let l = ServiceList {
            generation: 3,
            services: vec![crate::api::ServiceInfo {
                name: "syslog".to_owned(),
                vip: "198.18.0.10:514".parse().unwrap(),
                protocol: "udp".to_owned(),
                scheduler: dataplane::sched::SchedulerKind::Rr,
                mode: Method::Nat,
                admin: crate::api::Admin::Enabled,
                packets: 10,
                bytes: 1000,
                in_rotation: 1,
                backends: vec![backend("198.18.1.1:514", 10)],
                mirrors: vec![crate::api::MirrorInfo {
                    name: "archive".to_owned(),
                    scheduler: dataplane::sched::SchedulerKind::Wrr,
                    sample: 2,
                    in_rotation: 2,
                    backends: vec![backend("198.18.3.1:514", 3), backend("198.18.3.2:514", 2)],
                }],
            }],
        };
        let t = list_table(&l);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[3].starts_with("  -> 198.18.1.1:514"), "{t}");
        assert!(lines[4].starts_with("COPY 198.18.0.10:514"), "{t}");
        assert!(
            lines[4].contains("wrr") && lines[4].contains("copying"),
            "{t}"
        );
        assert!(
            lines[4].contains("      5          500  syslog mirror archive (1/2"),
            "{t}"
        );
        assert!(
            lines[5].starts_with("  -> 198.18.3.1:514") && lines[5].ends_with("3          300"),
            "{t}"
        );
        assert_eq!(lines.len(), 7, "{t}");
        // The listing carries the config model's types, and its JSON the file's words.
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["services"][0]["scheduler"], "rr");
        assert_eq!(v["services"][0]["mode"], "nat");
        assert_eq!(v["services"][0]["mirrors"][0]["scheduler"], "wrr");
        assert_eq!(v["services"][0]["backends"][0]["mode"], "nat");
        assert_eq!(serde_json::from_value::<ServiceList>(v.clone()).unwrap(), l);
        let mut bad = v;
        bad["services"][0]["mode"] = "masq".into();
        let e = serde_json::from_value::<ServiceList>(bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown mode \"masq\": expected nat, dr or tunnel"),
            "{e}"
        );
    }

    #[test]
    fn watch_shows_each_mirror_pool_with_its_own_rates() {
        use crate::api::{BackendStats, MirrorStats, ServiceStats};
        let at = |packets: u64, copies: u64| Stats {
            generation: 2,
            uptime_secs: 1.0,
            totals: crate::api::WorkerStats::default(),
            workers: vec![],
            services: vec![ServiceStats {
                name: "syslog".to_owned(),
                vip: "198.18.0.10:514".parse().unwrap(),
                packets,
                bytes: 0,
                backends: vec![BackendStats {
                    addr: "198.18.1.1:514".parse().unwrap(),
                    packets,
                    bytes: 0,
                }],
                // The same address as the primary's backend: a pool's rate is its own.
                mirrors: vec![MirrorStats {
                    name: "archive".to_owned(),
                    backends: vec![BackendStats {
                        addr: "198.18.1.1:514".parse().unwrap(),
                        packets: copies,
                        bytes: 0,
                    }],
                }],
            }],
        };
        let screen = watch_screen(&at(300, 30), Some(&at(100, 20)), 2.0);
        let lines: Vec<&str> = screen.lines().collect();
        assert!(lines[2].starts_with("UDP  198.18.0.10:514") && lines[2].contains("100/s"));
        assert!(lines[3].starts_with("  -> 198.18.1.1:514") && lines[3].contains(" 100/s "));
        assert!(
            lines[4].starts_with("COPY ") && lines[4].ends_with("syslog mirror archive"),
            "{screen}"
        );
        assert!(
            lines[5].starts_with("  -> 198.18.1.1:514") && lines[5].contains(" 5/s "),
            "{screen}"
        );
        assert_eq!(lines.len(), 6, "{screen}");
        // The first screen has no rates yet.
        assert!(watch_screen(&at(1, 1), None, 0.0)
            .lines()
            .all(|l| !l.contains("/s")));
    }

    #[test]
    fn event_times_are_utc_rfc3339_with_milliseconds() {
        assert_eq!(event_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(event_time(1_796_526_245_123), "2026-12-06T03:04:05.123Z");
        let e = Event {
            seq: 7,
            unix_ms: 1_796_526_245_123,
            kind: "reload".to_owned(),
            service: None,
            backend: None,
            message: "reloaded spray.toml (by SIGHUP)".to_owned(),
        };
        assert_eq!(
            events_table(&[e]),
            "    7 2026-12-06T03:04:05.123Z reload  reloaded spray.toml (by SIGHUP)\n"
        );
    }
}
