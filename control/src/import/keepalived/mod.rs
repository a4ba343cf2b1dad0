//! `spray import keepalived`: keepalived.conf `virtual_server` blocks to a Spray config.
//!
//! [`convert`] reads the LVS part of a keepalived.conf (`virtual_server`,
//! `virtual_server_group`, `real_server` and their health checkers) and returns the
//! equivalent Spray config plus one [`Diag`] per thing that maps only approximately
//! (`Note`) or not at all (`Warning`), each naming the keepalived line. VRRP
//! (`vrrp_instance`) stays with keepalived: Spray is driven by its notify scripts
//! (`scripts/ha/`, docs/operations.md).
//!
//! The config is built as the loader's own file model ([`RawConfig`]) and written with the
//! toml crate, so the output is what `spray check` reads, key for key. TOML written that way
//! carries no comments between keys: the keepalived line of each service and backend, and
//! the keys a DPDK config must have edited, are listed in a comment block at the top.
//!
//! Mapping, keepalived → Spray:
//!
//! | keepalived | Spray |
//! |---|---|
//! | `lb_algo`/`lvs_sched` `rr`, `wrr` | `scheduler` `rr`, `wrr` (per packet: `ops` is the default) |
//! | `mh`, `sh` | `maglev` (flow hash of client address and port) |
//! | `lc`, `wlc`, others | `wrr` with a warning (no connections to count in UDP) |
//! | `lb_kind`/`lvs_method` `NAT`, `DR`, `TUN` | `mode` `nat`, `dr`, `tunnel` (`dr` and `tunnel` need the dpdk dataplane) |
//! | `TUN type gue port N`, `tun_type gue` + `tun_port N` | `tunnel.encap = "gue"`, `tunnel.port = N` (`ipip` is the default) |
//! | `lvs_method DR`/`TUN` on a `real_server` of a DR or TUN service | that backend's `mode` |
//! | `protocol UDP` | the service; `TCP`, `SCTP` and no protocol (keepalived's default is TCP) are skipped |
//! | `weight` | `weight` |
//! | `delay_loop`, `connect_timeout` | `interval_ms`, `timeout_ms` |
//! | `retry`, `nb_get_retry` | `fall = retry + 1` (keepalived takes a server down after 1 + retry failures), `rise = 1` |
//! | `UDP_CHECK`, `TCP_CHECK`, `HTTP_GET`, `PING_CHECK`, `MISC_CHECK`, `DNS_CHECK` | `udp`, `tcp`, `http`, `icmp`, `exec`, `udp` with a DNS query |
//! | `inhibit_on_failure` | always so: a down backend keeps its place with effective weight 0 |
//! | `sorry_server` | `fallback` |
//! | `quorum`, `persistence_*`, `alpha`, `fwmark`, ... | warnings |

pub mod parse;

use dataplane::service::DEFAULT_GUE_PORT;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};

use dataplane::sched::SchedulerKind;

use self::parse::Node;
use crate::config::file::{
    value, Method, RawBackend, RawCheck, RawConfig, RawDpdkPort, RawService, RawTunnel,
};
use crate::config::loops;

/// How much a diagnostic matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Mapped, but the operator should know how.
    Note,
    /// Not mapped, or mapped with different behaviour.
    Warning,
}

/// One remark about the input, tied to a keepalived line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    /// 1-based line in the keepalived file.
    pub line: usize,
    /// Note or warning.
    pub level: Level,
    /// What happened, lowercase.
    pub message: String,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Note => "note",
            Level::Warning => "warning",
        };
        write!(f, "{}: {level}: {}", self.line, self.message)
    }
}

/// Which dataplane the generated config asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dataplane {
    /// dpdk when a service is DR, else socket.
    Auto,
    /// Kernel sockets: DR services become NAT (with a warning).
    Socket,
    /// DPDK (a `[dpdk]` section with a placeholder NIC to edit).
    Dpdk,
}

/// Conversion options.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The dataplane of the output.
    pub dataplane: Dataplane,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dataplane: Dataplane::Auto,
        }
    }
}

/// The result of a conversion.
#[derive(Debug, Clone)]
pub struct Output {
    /// The Spray config as the loader's file model; no services when none could be
    /// converted.
    pub config: RawConfig,
    /// The same config as TOML (the toml crate's rendering of `config` under a comment
    /// block); empty when no service could be converted.
    pub toml: String,
    /// Services written.
    pub services: usize,
    /// Notes and warnings, in line order.
    pub diags: Vec<Diag>,
}

#[derive(Debug)]
struct Backend {
    addr: SocketAddr,
    weight: u64,
    /// Its own `lvs_method`, when it differs from the service's.
    mode: Option<Method>,
    check: Option<RawCheck>,
    line: usize,
}

#[derive(Debug)]
struct Service {
    vip: SocketAddr,
    scheduler: SchedulerKind,
    mode: Method,
    /// The GUE port of a TUN service (`None`: ipip).
    gue_port: Option<u16>,
    fallback: Option<SocketAddr>,
    backends: Vec<Backend>,
    line: usize,
}

struct Ctx {
    diags: Vec<Diag>,
}

impl Ctx {
    fn warn(&mut self, line: usize, m: impl Into<String>) {
        self.diags.push(Diag {
            line,
            level: Level::Warning,
            message: m.into(),
        });
    }
    fn note(&mut self, line: usize, m: impl Into<String>) {
        self.diags.push(Diag {
            line,
            level: Level::Note,
            message: m.into(),
        });
    }
}

/// Converts keepalived.conf text.
///
/// # Errors
/// When the braces do not balance (the only thing that stops the conversion; everything
/// else is a [`Diag`]).
pub fn convert(src: &str, opts: Options) -> Result<Output, parse::SyntaxError> {
    let nodes = parse::parse(src)?;
    let mut cx = Ctx { diags: Vec::new() };
    let mut groups: BTreeMap<String, &Node> = BTreeMap::new();
    for n in &nodes {
        if n.key == "virtual_server_group" {
            match n.arg(0) {
                Some(g) => {
                    groups.insert(g.to_owned(), n);
                }
                None => cx.warn(n.line, "virtual_server_group without a name: ignored"),
            }
        }
    }
    let mut services = Vec::new();
    for n in &nodes {
        match n.key.as_str() {
            "virtual_server" => virtual_server(&mut cx, n, &groups, &mut services),
            "virtual_server_group" => {}
            "include" => cx.warn(
                n.line,
                format!(
                    "include {}: not followed (unsupported); run spray import on that file too \
                     and merge the services",
                    n.args.join(" ")
                ),
            ),
            "vrrp_instance" | "vrrp_sync_group" | "vrrp_script" | "track_file" => cx.note(
                n.line,
                format!(
                    "{} {}: VRRP stays with keepalived; have it drive Spray with \
                     scripts/ha/notify.sh (docs/operations.md, \"HA pair\")",
                    n.key,
                    n.args.join(" ")
                ),
            ),
            "global_defs" | "static_ipaddress" | "static_routes" | "static_rules" => {}
            other => cx.note(n.line, format!("{other}: not an LVS setting, ignored")),
        }
    }
    leave_out_local_real_servers(&mut cx, &mut services);
    let dpdk = match opts.dataplane {
        Dataplane::Auto => services.iter().any(|s| s.mode != Method::Nat),
        Dataplane::Socket => false,
        Dataplane::Dpdk => true,
    };
    if !dpdk {
        for s in services.iter_mut().filter(|s| s.mode != Method::Nat) {
            cx.warn(
                s.line,
                format!(
                    "lb_kind {} of {}: written as mode \"nat\" because of --dataplane socket \
                     ({} needs the dpdk dataplane)",
                    s.mode.name().to_ascii_uppercase(),
                    s.vip,
                    s.mode.name()
                ),
            );
            s.mode = Method::Nat;
            s.gue_port = None;
            for b in &mut s.backends {
                b.mode = None;
            }
        }
    }
    if dpdk && !services.is_empty() {
        cx.warn(
            services[0].line,
            "dpdk dataplane: set the [dpdk] NIC and the port's own address (backend MACs are \
             resolved by ARP/NDP; NAT replies need the port's gateway)",
        );
    }
    let count = services.len();
    let names = names(&services);
    let config = model(&services, &names, dpdk);
    let toml = if services.is_empty() {
        String::new()
    } else {
        let body = config
            .to_toml()
            .expect("the importer builds only what TOML can express");
        format!("{}{body}", header(&services, &names, dpdk))
    };
    // A group's real servers are read once per address: keep one copy of each remark.
    cx.diags
        .sort_by(|a, b| (a.line, &a.message).cmp(&(b.line, &b.message)));
    cx.diags.dedup();
    Ok(Output {
        config,
        toml,
        services: count,
        diags: cx.diags,
    })
}

/// IPVS delivers a datagram for a real server that is one of the director's own VIPs
/// locally; Spray would send it into that VIP again, a forwarding loop. Such real servers
/// are left out, and a service left without any is skipped.
fn leave_out_local_real_servers(cx: &mut Ctx, services: &mut Vec<Service>) {
    let vips: Vec<SocketAddr> = services.iter().map(|s| s.vip).collect();
    let local: Vec<IpAddr> = vips.iter().map(|v| v.ip().to_canonical()).collect();
    for s in services.iter_mut() {
        s.backends.retain(|b| {
            let Some(v) = vips.iter().find(|v| loops::reaches(&b.addr, v, &local)) else {
                return true;
            };
            cx.warn(
                b.line,
                format!(
                    "real_server {} of {} is the virtual_server {v} itself: IPVS delivers it \
                     locally, Spray would loop it back into the vip; left out (run the \
                     server on another address and list that)",
                    b.addr, s.vip
                ),
            );
            false
        });
    }
    services.retain(|s| {
        if s.backends.is_empty() {
            cx.warn(
                s.line,
                format!("virtual_server {}: no real_server left: skipped", s.vip),
            );
        }
        !s.backends.is_empty()
    });
}

/// The addresses a `virtual_server` line stands for, or none (with a diagnostic).
fn vips(cx: &mut Ctx, n: &Node, groups: &BTreeMap<String, &Node>) -> Vec<(SocketAddr, usize)> {
    match (n.arg(0), n.arg(1)) {
        (Some("fwmark"), m) => {
            cx.warn(
                n.line,
                format!(
                    "virtual_server fwmark {}: firewall-mark services do not map (Spray matches \
                     address and port): skipped",
                    m.unwrap_or("?")
                ),
            );
            Vec::new()
        }
        (Some("group"), Some(g)) => {
            let Some(group) = groups.get(g) else {
                cx.warn(
                    n.line,
                    format!("virtual_server group {g}: no such virtual_server_group: skipped"),
                );
                return Vec::new();
            };
            let mut out = Vec::new();
            for m in group.children() {
                if m.key == "fwmark" {
                    cx.warn(
                        m.line,
                        format!("group {g}: fwmark member does not map: skipped"),
                    );
                    continue;
                }
                match (m.arg(0).map(str::parse::<u16>), group_range(&m.key)) {
                    (Some(Ok(port)), Some(addrs)) if port > 0 => {
                        out.extend(
                            addrs
                                .into_iter()
                                .map(|a| (SocketAddr::new(a, port), m.line)),
                        );
                    }
                    _ => cx.warn(
                        m.line,
                        format!(
                            "group {g}: member '{} {}' is not ADDRESS[-LAST] PORT: skipped",
                            m.key,
                            m.args.join(" ")
                        ),
                    ),
                }
            }
            cx.note(
                n.line,
                format!(
                    "virtual_server group {g}: expanded into {} service(s), one per address:port",
                    out.len()
                ),
            );
            out
        }
        (Some(a), p) => {
            let Ok(ip) = a.parse::<IpAddr>() else {
                cx.warn(
                    n.line,
                    format!("virtual_server {a}: not an IP address: skipped"),
                );
                return Vec::new();
            };
            match p.map(str::parse::<u16>) {
                Some(Ok(port)) if port > 0 => vec![(SocketAddr::new(ip, port), n.line)],
                _ => {
                    cx.warn(
                        n.line,
                        format!("virtual_server {a}: no port (all ports) does not map: skipped"),
                    );
                    Vec::new()
                }
            }
        }
        (None, _) => {
            cx.warn(n.line, "virtual_server without an address: skipped");
            Vec::new()
        }
    }
}

/// `198.18.0.10` or keepalived's range `198.18.0.10-12` (last IPv4 octet, or last IPv6
/// group in hex).
fn group_range(s: &str) -> Option<Vec<IpAddr>> {
    let (first, last) = match s.split_once('-') {
        None => return s.parse().ok().map(|a| vec![a]),
        Some(x) => x,
    };
    match first.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => {
            let last: u8 = last.parse().ok()?;
            let o = a.octets();
            (o[3]..=last)
                .map(|x| Some(IpAddr::from([o[0], o[1], o[2], x])))
                .collect()
        }
        IpAddr::V6(a) => {
            let last = u16::from_str_radix(last, 16).ok()?;
            let mut s = a.segments();
            (s[7]..=last)
                .map(|x| {
                    s[7] = x;
                    Some(IpAddr::from(s))
                })
                .collect()
        }
    }
}

/// Seconds (keepalived TIMER, fractions allowed) to milliseconds.
fn secs_ms(s: &str) -> Option<u64> {
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| (v * 1000.0).round() as u64)
}

/// Checker settings keepalived lets a virtual or real server set as defaults.
#[derive(Debug, Clone, Default)]
struct Timers {
    delay_loop: Option<(u64, usize)>,
    connect_timeout: Option<u64>,
    retry: Option<u64>,
    delay_before_retry: Option<u64>,
    virtualhost: Option<String>,
}

impl Timers {
    /// Reads a timer key; true when `n` was one.
    fn read(&mut self, cx: &mut Ctx, n: &Node) -> bool {
        let v = n.arg(0).unwrap_or("");
        let bad = |cx: &mut Ctx| cx.warn(n.line, format!("{} {v:?}: not a number: ignored", n.key));
        match n.key.as_str() {
            "delay_loop" => match secs_ms(v) {
                Some(ms) => self.delay_loop = Some((ms, n.line)),
                None => bad(cx),
            },
            "connect_timeout" => match secs_ms(v) {
                Some(ms) => self.connect_timeout = Some(ms),
                None => bad(cx),
            },
            "retry" | "nb_get_retry" => match v.parse() {
                Ok(r) => self.retry = Some(r),
                Err(_) => bad(cx),
            },
            "delay_before_retry" => match secs_ms(v) {
                Some(ms) => self.delay_before_retry = Some(ms),
                None => bad(cx),
            },
            "virtualhost" => self.virtualhost = Some(v.to_owned()),
            "warmup" => cx.note(
                n.line,
                "warmup: Spray spreads first checks over the first interval by itself",
            ),
            _ => return false,
        }
        true
    }
}

fn virtual_server(
    cx: &mut Ctx,
    n: &Node,
    groups: &BTreeMap<String, &Node>,
    out: &mut Vec<Service>,
) {
    let addrs = vips(cx, n, groups);
    if addrs.is_empty() {
        return;
    }
    let mut protocol: Option<(String, usize)> = None;
    for c in n.children() {
        if c.key == "protocol" {
            protocol = Some((c.arg(0).unwrap_or("").to_ascii_uppercase(), c.line));
        }
    }
    match &protocol {
        Some((p, _)) if p == "UDP" => {}
        Some((p, line)) => {
            cx.warn(
                *line,
                format!(
                    "protocol {p} of virtual_server {}: Spray balances UDP only: service skipped",
                    n.args.join(" ")
                ),
            );
            return;
        }
        None => {
            cx.warn(
                n.line,
                format!(
                    "virtual_server {}: no protocol, and keepalived's default is TCP: service \
                     skipped (add 'protocol UDP' if it is UDP)",
                    n.args.join(" ")
                ),
            );
            return;
        }
    }
    let mut sched = SchedulerKind::Wrr;
    let mut sched_set = false;
    let mut mode = Method::Nat;
    let mut gue_port = None;
    let mut timers = Timers::default();
    let mut fallback = None;
    let mut reals = Vec::new();
    for c in n.children() {
        let v = c.arg(0).unwrap_or("");
        if timers.read(cx, c) {
            continue;
        }
        match c.key.as_str() {
            "protocol" => {}
            "lb_algo" | "lvs_sched" => {
                sched_set = true;
                sched = match v {
                    "rr" => SchedulerKind::Rr,
                    "wrr" => SchedulerKind::Wrr,
                    "mh" => {
                        cx.note(
                            c.line,
                            format!("{} mh: maglev, Spray's consistent hash", c.key),
                        );
                        SchedulerKind::Maglev
                    }
                    "sh" => {
                        cx.warn(
                            c.line,
                            format!(
                                "{} sh: written as maglev, which hashes the client address and \
                                 port (sh hashes the address only)",
                                c.key
                            ),
                        );
                        SchedulerKind::Maglev
                    }
                    other => {
                        cx.warn(
                            c.line,
                            format!(
                                "{} {other}: no connections to count in per-packet UDP; written \
                                 as wrr (per-packet weighted round robin)",
                                c.key
                            ),
                        );
                        SchedulerKind::Wrr
                    }
                }
            }
            "lb_kind" | "lvs_method" => {
                mode = match method(cx, c) {
                    Some((m, port)) => {
                        gue_port = port.or(gue_port);
                        m
                    }
                    None => Method::Nat,
                }
            }
            "tun_type" => match v {
                "ipip" => gue_port = None,
                "gue" => gue_port = Some(gue_port.unwrap_or(DEFAULT_GUE_PORT)),
                other => cx.warn(
                    c.line,
                    format!("tun_type {other}: Spray tunnels with ipip or gue: ipip written"),
                ),
            },
            "tun_port" => match v.parse::<u16>() {
                Ok(p) if p > 0 => gue_port = Some(p),
                _ => cx.warn(c.line, format!("tun_port {v:?}: not a port: ignored")),
            },
            "ops" => cx.note(
                c.line,
                "ops: per-packet scheduling is Spray's default (and replies keep working)",
            ),
            "inhibit_on_failure" => cx.note(c.line, INHIBIT),
            "sorry_server" => match addr_port(c, None) {
                Some(a) => fallback = Some(a),
                None => cx.warn(c.line, "sorry_server: needs an address and a port: ignored"),
            },
            "sorry_server_inhibit" | "sorry_server_lvs_method" => cx.note(
                c.line,
                format!(
                    "{}: the fallback is never checked and is sent to like a backend",
                    c.key
                ),
            ),
            "quorum" | "quorum_up" | "quorum_down" | "hysteresis" => cx.warn(
                c.line,
                format!(
                    "{}: not mapped: Spray never removes a VIP; below quorum it keeps \
                     serving the backends that are up (use fallback for a sorry server)",
                    c.key
                ),
            ),
            "persistence_timeout" | "persistence_granularity" | "persistence_engine" => cx.warn(
                c.line,
                format!(
                    "{}: not mapped: Spray keeps no per-client state; use scheduler = \
                     \"maglev\" to keep a flow on one backend",
                    c.key
                ),
            ),
            "ha_suspend" => cx.note(
                c.line,
                "ha_suspend: with Spray, keepalived's notify script enables the VIP's service \
                 on the master and disables it on the backup (scripts/ha/notify.sh)",
            ),
            "alpha" => cx.warn(
                c.line,
                "alpha: not mapped: Spray backends start up and go down after fall failed checks",
            ),
            "real_server" => reals.push(c),
            other => cx.warn(c.line, format!("{other}: not mapped, ignored")),
        }
    }
    if !sched_set {
        cx.note(
            n.line,
            "no lb_algo: written as wrr (keepalived's default scheduler is wlc)",
        );
    }
    for (vip, line) in addrs {
        let mut backends = Vec::new();
        for rs in &reals {
            if let Some(b) = real_server(cx, rs, vip, mode, &timers) {
                if backends.iter().any(|o: &Backend| o.addr == b.addr) {
                    cx.warn(
                        rs.line,
                        format!("real_server {} listed twice: skipped", b.addr),
                    );
                } else {
                    backends.push(b);
                }
            }
        }
        if backends.is_empty() {
            cx.warn(
                line,
                format!("virtual_server {vip}: no usable real_server: service skipped"),
            );
            continue;
        }
        let fallback = match fallback {
            Some(f) if f.is_ipv4() != vip.is_ipv4() => {
                cx.warn(
                    line,
                    format!("sorry_server {f}: not of the VIP's family: ignored"),
                );
                None
            }
            Some(f) if backends.iter().any(|b| b.addr == f) => {
                cx.warn(
                    line,
                    format!("sorry_server {f}: also a real_server: ignored"),
                );
                None
            }
            f => f,
        };
        if out.iter().any(|s: &Service| s.vip == vip) {
            cx.warn(
                line,
                format!("virtual_server {vip} defined twice: the second is skipped"),
            );
            continue;
        }
        out.push(Service {
            vip,
            scheduler: sched,
            mode,
            gue_port: gue_port.filter(|_| mode == Method::Tunnel),
            fallback,
            backends,
            line,
        });
    }
}

const INHIBIT: &str = "inhibit_on_failure: Spray always does this: a down backend stays in \
                       the table with effective weight 0 (see spray ctl list)";

/// `IP [PORT]` of a statement; `default_port` when the port is left out.
fn addr_port(n: &Node, default_port: Option<u16>) -> Option<SocketAddr> {
    let ip: IpAddr = n.arg(0)?.parse().ok()?;
    let port = match n.arg(1) {
        Some(p) => p.parse().ok().filter(|&p| p > 0)?,
        None => default_port?,
    };
    Some(SocketAddr::new(ip, port))
}

fn real_server(
    cx: &mut Ctx,
    rs: &Node,
    vip: SocketAddr,
    mode: Method,
    vs_timers: &Timers,
) -> Option<Backend> {
    let Some(addr) = addr_port(rs, Some(vip.port())) else {
        cx.warn(
            rs.line,
            format!(
                "real_server {}: not ADDRESS [PORT]: skipped",
                rs.args.join(" ")
            ),
        );
        return None;
    };
    if addr.is_ipv4() != vip.is_ipv4() && mode != Method::Tunnel {
        cx.warn(
            rs.line,
            format!("real_server {addr}: not of the VIP's family: skipped"),
        );
        return None;
    }
    let mut weight = 1;
    let mut own = None;
    let mut timers = vs_timers.clone();
    let mut checkers = Vec::new();
    for c in rs.children() {
        if timers.read(cx, c) {
            continue;
        }
        let v = c.arg(0).unwrap_or("");
        match c.key.as_str() {
            "weight" => match v.parse::<u64>() {
                Ok(w) if w <= 65535 => weight = w,
                Ok(w) => {
                    cx.warn(
                        c.line,
                        format!("weight {w}: above Spray's 65535: written as 65535"),
                    );
                    weight = 65535;
                }
                Err(_) => cx.warn(c.line, format!("weight {v:?}: not a number: 1 kept")),
            },
            "inhibit_on_failure" => cx.note(c.line, INHIBIT),
            "lvs_method" => match method(cx, c) {
                Some((m, _)) if m == mode => {}
                // Direct return either way: only how the datagram reaches the server differs.
                Some((m, None)) if m != Method::Nat && mode != Method::Nat => own = Some(m),
                _ => cx.warn(
                    c.line,
                    format!(
                        "lvs_method {v} on a real_server of a {} service: only dr and tunnel \
                         mix (with the service's tunnel settings): ignored",
                        mode.name()
                    ),
                ),
            },
            "notify_up" | "notify_down" => cx.warn(
                c.line,
                format!(
                    "{}: not mapped: follow health changes with spray ctl events, or the \
                     spray_backend_up metric",
                    c.key
                ),
            ),
            "uthreshold" | "lthreshold" => cx.warn(
                c.line,
                format!(
                    "{}: connection thresholds do not apply to per-packet UDP: ignored",
                    c.key
                ),
            ),
            "smtp_alert" | "snmp_name" => {
                cx.note(c.line, format!("{}: ignored", c.key));
            }
            "alpha" => cx.warn(
                c.line,
                "alpha: not mapped: Spray backends start up and go down after fall failed checks",
            ),
            k if k.ends_with("_CHECK") || k == "HTTP_GET" || k == "SSL_GET" => checkers.push(c),
            other => cx.warn(c.line, format!("{other}: not mapped, ignored")),
        }
    }
    let mut check = None;
    for c in &checkers {
        if check.is_some() {
            cx.warn(
                c.line,
                format!(
                    "{}: Spray runs one check per backend; the first checker of real_server {addr} \
                     is used, this one is ignored",
                    c.key
                ),
            );
            continue;
        }
        check = checker(cx, c, &timers);
    }
    Some(Backend {
        addr,
        weight,
        mode: own,
        check,
        line: rs.line,
    })
}

/// The method of `lb_kind`/`lvs_method` `NAT | DR | TUN [type ipip | gue [port N]]` and
/// the GUE port it names; an unknown one is warned about (`None`).
fn method(cx: &mut Ctx, c: &Node) -> Option<(Method, Option<u16>)> {
    let kind = c.arg(0).unwrap_or("").to_ascii_uppercase();
    let m = match kind.as_str() {
        "NAT" => Method::Nat,
        "DR" => Method::Dr,
        "TUN" => Method::Tunnel,
        other => {
            cx.warn(
                c.line,
                format!(
                    "{} {other}: not NAT, DR or TUN; written as nat (backends must route \
                     replies back through Spray)",
                    c.key
                ),
            );
            return None;
        }
    };
    let mut port = None;
    let rest: Vec<&str> = c.args.iter().skip(1).map(String::as_str).collect();
    match rest.as_slice() {
        [] | ["type", "ipip"] => {}
        ["type", "gue", tail @ ..] => {
            port = Some(DEFAULT_GUE_PORT);
            if let ["port", p, ..] = tail {
                match p.parse::<u16>() {
                    Ok(p) if p > 0 => port = Some(p),
                    _ => cx.warn(
                        c.line,
                        format!("port {p:?}: not a port: {DEFAULT_GUE_PORT} written"),
                    ),
                }
            }
            if tail.len() > 2 {
                cx.note(
                    c.line,
                    "GUE checksum options: Spray sends no outer checksum over IPv4 and a full \
                     one over IPv6",
                );
            }
        }
        other => cx.warn(
            c.line,
            format!(
                "{} {kind} {}: Spray tunnels with ipip or gue: ipip written",
                c.key,
                other.join(" ")
            ),
        ),
    }
    Some((m, port))
}

/// Hex string (keepalived's free format: spaces allowed) to bytes; `None` if not hex or if
/// it has the `X` wildcard.
fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_digit(16).map(|d| d as u8))
        .collect::<Option<_>>()?;
    Some(
        digits
            .chunks(2)
            .map(|p| if p.len() == 2 { p[0] << 4 | p[1] } else { p[0] })
            .collect(),
    )
}

/// Bytes Spray can carry in a TOML string (ASCII: one byte each).
fn ascii_string(b: &[u8]) -> Option<String> {
    b.is_ascii().then(|| b.iter().map(|&c| c as char).collect())
}

/// A DNS query (RFC 1035 4.1) whose every byte is ASCII, so a TOML string can carry it.
fn dns_query(name: &str, qtype: u16) -> Option<String> {
    // ID 0x1a2b, RD set, one question.
    let mut q: Vec<u8> = vec![0x1a, 0x2b, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        if label.len() > 63 {
            return None;
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    ascii_string(&q)
}

/// Splits a command line into words: whitespace separates, single and double quotes group.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn checker(cx: &mut Ctx, c: &Node, outer: &Timers) -> Option<RawCheck> {
    let mut t = outer.clone();
    let kind = c.key.as_str();
    let mut check = RawCheck::default();
    let mut misc_timeout = None;
    let mut url: Option<&Node> = None;
    let mut dns = (String::from("."), 6u16);
    for k in c.children() {
        if t.read(cx, k) {
            continue;
        }
        let v = k.arg(0).unwrap_or("");
        match k.key.as_str() {
            "connect_port" => match v.parse::<u16>() {
                Ok(p) if p > 0 => check.port = Some(value(i64::from(p))),
                _ => cx.warn(k.line, format!("connect_port {v:?}: not a port: ignored")),
            },
            "bindto" => match v.parse::<IpAddr>() {
                Ok(_) => check.source = Some(value(v.to_owned())),
                Err(_) => cx.warn(k.line, format!("bindto {v:?}: not an address: ignored")),
            },
            "connect_ip" => cx.warn(
                k.line,
                format!("connect_ip {v}: not mapped: Spray checks the backend's own address"),
            ),
            "bind_port" | "bind_if" | "fwmark" => {
                cx.warn(k.line, format!("{} in {kind}: not mapped, ignored", k.key));
            }
            "log_all_failures" => {}
            "alpha" => cx.warn(
                k.line,
                "alpha: not mapped: Spray backends start up and go down after fall failed checks",
            ),
            "misc_path" if kind == "MISC_CHECK" => {
                let shell = v.contains(['|', '&', ';', '<', '>', '$', '`', '*', '(']);
                let cmd = if shell {
                    cx.note(
                        k.line,
                        "misc_path uses shell syntax: run through /bin/sh -c (Spray runs \
                         commands without a shell)",
                    );
                    vec!["/bin/sh".to_owned(), "-c".to_owned(), v.to_owned()]
                } else {
                    words(v)
                };
                if cmd.is_empty() {
                    cx.warn(k.line, "misc_path is empty: checker ignored");
                    return None;
                }
                check.command = Some(value(cmd));
            }
            "misc_timeout" if kind == "MISC_CHECK" => match secs_ms(v) {
                Some(ms) => misc_timeout = Some(ms),
                None => cx.warn(k.line, format!("misc_timeout {v:?}: not a number: ignored")),
            },
            "misc_dynamic" => cx.warn(
                k.line,
                "misc_dynamic: not mapped: exit status 0 is up, anything else down (a weight \
                 from the exit status is not read); set weights with spray ctl weight",
            ),
            "user" => cx.warn(
                k.line,
                "user: not mapped: the command runs as the user running spray",
            ),
            "payload" if kind == "UDP_CHECK" => {
                match hex_bytes(&k.args.join(""))
                    .as_deref()
                    .and_then(ascii_string)
                {
                    Some(s) => check.payload = Some(value(s)),
                    None => cx.warn(
                        k.line,
                        "payload: only ASCII bytes fit Spray's payload string: an empty datagram \
                         is sent instead",
                    ),
                }
            }
            "require_reply" if kind == "UDP_CHECK" => {
                if k.args.is_empty() {
                    check.require_reply = Some(value(true));
                } else {
                    match hex_bytes(&k.args.join(""))
                        .as_deref()
                        .and_then(ascii_string)
                    {
                        Some(s) => {
                            check.expect = Some(value(s));
                            cx.note(
                                k.line,
                                "require_reply HEX: Spray's expect matches the bytes anywhere in \
                                 the reply, not only at its start",
                            );
                        }
                        None => {
                            cx.warn(
                                k.line,
                                "require_reply HEX: wildcards or non-ASCII bytes do not map: \
                                 any reply is accepted",
                            );
                            check.require_reply = Some(value(true));
                        }
                    }
                }
            }
            "min_reply_length" | "max_reply_length" => {
                cx.warn(k.line, format!("{}: not mapped, ignored", k.key));
            }
            "url" if kind == "HTTP_GET" || kind == "SSL_GET" => {
                if url.is_some() {
                    cx.warn(k.line, "second url: Spray checks one path; ignored");
                } else {
                    url = Some(k);
                }
            }
            "http_protocol" | "fast_recovery" | "enable_sni" => {
                cx.note(k.line, format!("{}: ignored", k.key));
            }
            "type" if kind == "DNS_CHECK" => {
                dns.1 = match v.to_ascii_uppercase().as_str() {
                    "A" => 1,
                    "NS" => 2,
                    "CNAME" => 5,
                    "SOA" => 6,
                    "MX" => 15,
                    "TXT" => 16,
                    "AAAA" => 28,
                    other => {
                        cx.warn(k.line, format!("type {other}: unknown, SOA used"));
                        6
                    }
                }
            }
            "name" if kind == "DNS_CHECK" => dns.0 = v.to_owned(),
            other => cx.warn(k.line, format!("{other} in {kind}: not mapped, ignored")),
        }
    }
    let ty = match kind {
        "UDP_CHECK" => "udp",
        "TCP_CHECK" => "tcp",
        "HTTP_GET" => "http",
        "PING_CHECK" => "icmp",
        "MISC_CHECK" => "exec",
        "DNS_CHECK" => {
            match dns_query(&dns.0, dns.1) {
                Some(q) => {
                    check.payload = Some(value(q));
                    check.expect = Some(value("\u{1a}\u{2b}".into()));
                    cx.note(
                        c.line,
                        format!(
                            "DNS_CHECK: a udp check sending a DNS query for {} (reply required, \
                             its id matched; the rcode is not read)",
                            dns.0
                        ),
                    );
                }
                None => {
                    cx.warn(
                        c.line,
                        "DNS_CHECK name does not fit a query: reply required only",
                    );
                    check.require_reply = Some(value(true));
                }
            }
            "udp"
        }
        "SSL_GET" => {
            cx.warn(
                c.line,
                "SSL_GET: Spray's http check has no TLS: written as a tcp check of the same port",
            );
            "tcp"
        }
        "SMTP_CHECK" => {
            cx.warn(c.line, "SMTP_CHECK: written as a tcp check (connect only)");
            "tcp"
        }
        other => {
            cx.warn(
                c.line,
                format!("{other}: no Spray equivalent: checker ignored"),
            );
            return None;
        }
    };
    if ty == "exec" && check.command.is_none() {
        cx.warn(c.line, "MISC_CHECK without misc_path: checker ignored");
        return None;
    }
    if let (Some(u), "http") = (url, ty) {
        for k in u.children() {
            let v = k.arg(0).unwrap_or("");
            match k.key.as_str() {
                "path" if v.starts_with('/') => check.path = Some(value(v.to_owned())),
                "status_code" => {
                    let first = v.split('-').next().and_then(|s| s.parse::<i64>().ok());
                    match first {
                        Some(s) if (100..=599).contains(&s) => {
                            if k.args.len() > 1 || v.contains('-') {
                                cx.warn(
                                    k.line,
                                    format!(
                                        "status_code {}: Spray expects one status: {s}",
                                        k.args.join(" ")
                                    ),
                                );
                            }
                            check.expect_status = Some(value(s));
                        }
                        _ => cx.warn(k.line, format!("status_code {v:?}: not mapped, 200 used")),
                    }
                }
                "virtualhost" => t.virtualhost = Some(v.to_owned()),
                other => cx.warn(k.line, format!("{other} in url: not mapped, ignored")),
            }
        }
        if check.expect_status.is_none() {
            cx.note(
                u.line,
                "no status_code: keepalived accepts any 2xx, Spray expects 200",
            );
        }
    }
    if ty == "http" {
        if let Some(h) = &t.virtualhost {
            check.host = Some(value(h.clone()));
        }
    }
    // Timing: keepalived's defaults are delay_loop 60 s, connect_timeout 5 s, retry 1
    // (DNS_CHECK 3, MISC_CHECK 0); misc_timeout defaults to delay_loop.
    let interval = t.delay_loop.map_or(60_000, |d| d.0).clamp(10, 3_600_000);
    let timeout = if ty == "exec" {
        misc_timeout.unwrap_or(interval)
    } else {
        t.connect_timeout.unwrap_or(5_000)
    };
    let timeout = if timeout > interval {
        cx.warn(
            c.line,
            format!(
                "{kind}: timeout {timeout} ms is longer than the interval {interval} ms; Spray \
                 needs timeout <= interval: {interval} ms used"
            ),
        );
        interval
    } else {
        timeout.max(1)
    };
    let retry = t.retry.unwrap_or(match kind {
        "DNS_CHECK" => 3,
        "MISC_CHECK" => 0,
        _ => 1,
    });
    let fall = (retry + 1).min(100);
    if let Some(dbr) = t.delay_before_retry {
        if retry > 0 && dbr != interval {
            cx.note(
                c.line,
                format!(
                    "delay_before_retry {dbr} ms: Spray retries at the interval ({interval} ms); \
                     a dead backend goes down after {fall} failed checks, about {} ms \
                     (keepalived: about {} ms)",
                    (fall - 1) * interval,
                    retry * dbr
                ),
            );
        }
    }
    // Bounded above (interval and timeout by an hour, fall by 100): they fit an i64.
    check.kind = Some(value(ty.to_owned()));
    check.interval_ms = Some(value(interval as i64));
    check.timeout_ms = Some(value(timeout as i64));
    check.rise = Some(value(1));
    check.fall = Some(value(fall as i64));
    Some(check)
}

const WELL_KNOWN: &[(u16, &str)] = &[
    (53, "dns"),
    (67, "dhcp"),
    (69, "tftp"),
    (123, "ntp"),
    (161, "snmp"),
    (162, "snmptrap"),
    (514, "syslog"),
    (1812, "radius"),
    (1813, "radius-acct"),
    (2055, "netflow"),
    (4739, "ipfix"),
    (6343, "sflow"),
];

/// Service names: the port's well-known name when that is unique, else with the address.
fn names(services: &[Service]) -> Vec<String> {
    let base = |s: &Service| {
        WELL_KNOWN
            .iter()
            .find(|(p, _)| *p == s.vip.port())
            .map_or_else(|| format!("udp{}", s.vip.port()), |(_, n)| (*n).to_owned())
    };
    services
        .iter()
        .map(|s| {
            let b = base(s);
            if services.iter().filter(|o| base(o) == b).count() == 1 {
                b
            } else {
                let ip: String = s
                    .vip
                    .ip()
                    .to_string()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect();
                format!("{b}-{ip}")
            }
        })
        .collect()
}

/// The PCI address a generated DPDK config names until the operator edits it.
const PLACEHOLDER_PCI: &str = "0000:00:00.0";

/// The Spray config of `services` (named `names`), as the loader's file model.
fn model(services: &[Service], names: &[String], dpdk: bool) -> RawConfig {
    let mut config = RawConfig::default();
    if dpdk {
        let strings = |v: &[&str]| Some(value(v.iter().map(|s| value((*s).to_owned())).collect()));
        config.runtime.dataplane = Some(value("dpdk".to_owned()));
        config.dpdk.allow = Some(vec![PLACEHOLDER_PCI.to_owned()]);
        config.dpdk.ports = Some(value(vec![value(RawDpdkPort {
            device: value(PLACEHOLDER_PCI.to_owned()),
            rx_queues: None,
            rx_ring: None,
            tx_ring: None,
            mac: None,
            gateway_mac: None,
            addresses: strings(&["198.18.0.2", "2001:db8::2"]),
            gateways: strings(&["198.18.0.1", "2001:db8::1"]),
            vlan: None,
            burst: None,
            mirror_payload: None,
        })]));
    }
    for (s, name) in services.iter().zip(names) {
        // One service-wide check when every backend has the same one.
        let first = s.backends[0].check.as_ref();
        let shared = first.is_some() && s.backends.iter().all(|b| b.check.as_ref() == first);
        let backends = s
            .backends
            .iter()
            .map(|b| {
                value(RawBackend {
                    addr: value(b.addr.to_string()),
                    // At most 65535.
                    weight: (b.weight != 1).then(|| value(b.weight as i64)),
                    mode: b.mode.map(|m| value(m.name().to_owned())),
                    mac: None,
                    check: if shared {
                        None
                    } else {
                        b.check.clone().map(value)
                    },
                    drain: None,
                })
            })
            .collect();
        let service = RawService {
            vip: value(s.vip.to_string()),
            protocol: None,
            scheduler: Some(value(s.scheduler.name().to_owned())),
            mode: Some(value(s.mode.name().to_owned())),
            backends: Some(value(backends)),
            check: if shared {
                first.cloned().map(value)
            } else {
                None
            },
            fallback: s.fallback.map(|f| value(f.to_string())),
            passive: None,
            tunnel: s.gue_port.map(|port| {
                value(RawTunnel {
                    encap: Some(value("gue".to_owned())),
                    port: Some(value(i64::from(port))),
                    ..RawTunnel::default()
                })
            }),
            mirror: None,
        };
        config.services.insert(name.clone(), value(service));
    }
    config
}

/// The comment block above the generated TOML: how to use it, what a DPDK config must
/// have edited, and the keepalived line each service and backend comes from.
fn header(services: &[Service], names: &[String], dpdk: bool) -> String {
    let mut o = String::from(
        "# Generated by `spray import keepalived`: review it, then `spray check --config FILE`.\n\
         # Reference: docs/config.md. Warnings about what did not map went to standard error.\n",
    );
    if dpdk {
        o.push_str(
            "#\n\
             # runtime.dataplane = \"dpdk\": DR and tunnel need a dataplane that owns the wire (docs/dpdk.md).\n\
             # EDIT before use:\n\
             #   dpdk.allow, dpdk.ports[0].device  the PCI address of the NIC bound to vfio-pci\n\
             #   dpdk.ports[0].addresses           this port's own addresses\n\
             #   dpdk.ports[0].gateways            next hops toward clients (NAT replies)\n",
        );
    }
    o.push_str("#\n# From the keepalived file:\n");
    let mut by_name: Vec<(&String, &Service)> = names.iter().zip(services).collect();
    by_name.sort_by_key(|(n, _)| *n);
    for (name, s) in by_name {
        let lines: Vec<String> = s.backends.iter().map(|b| b.line.to_string()).collect();
        let _ = writeln!(
            o,
            "#   services.{name}: line {}; backends from lines {}",
            s.line,
            lines.join(", ")
        );
    }
    o.push('\n');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ranges_expand() {
        let v = group_range("198.18.0.10-12").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2], "198.18.0.12".parse::<IpAddr>().unwrap());
        assert_eq!(group_range("2001:db8::a-b").unwrap().len(), 2);
        assert!(group_range("198.18.0.10-x").is_none());
    }

    #[test]
    fn hex_and_words() {
        assert_eq!(hex_bytes("4142 43").unwrap(), b"ABC");
        assert!(hex_bytes("4X").is_none());
        assert_eq!(
            words("/bin/check -n 'a b' \"\""),
            ["/bin/check", "-n", "a b", ""]
        );
    }

    #[test]
    fn dns_query_is_ascii_and_well_formed() {
        let q = dns_query("example.org.", 1).unwrap();
        let b = q.as_bytes();
        assert_eq!(&b[12..25], b"\x07example\x03org\x00");
        assert_eq!(&b[25..], [0, 1, 0, 1]);
    }
}
