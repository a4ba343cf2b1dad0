//! The `[dpdk]` section of the config file: EAL settings, ports and queues, idle back-off.
//!
//! A child module of [`crate::config`], so it validates with the same `Validator` (every
//! problem reported, each with its key path and line). It is parsed whatever the dataplane;
//! only `runtime.dataplane = "dpdk"` makes a port list mandatory.
//!
//! ```toml
//! [runtime]
//! dataplane = "dpdk"
//!
//! [dpdk]
//! cores = [1]                  # worker cores, one per queue pair over all ports
//! memory_mb = 256
//! no_huge = true               # or huge_dir = "/dev/hugepages"
//! vdevs = ["net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap"]
//!
//! [[dpdk.ports]]
//! device = "net_pcap0"         # a vdev name or a PCI address from `allow`
//! rx_queues = 1
//! addresses = ["198.18.0.2", "2001:db8::2"]   # the port's own: ARP/NDP source, answered
//! gateways = ["198.18.0.1", "2001:db8::1"]    # next hop of NAT replies, resolved
//! ```
//!
//! Backend and gateway MACs are resolved by ARP/NDP from the port's addresses
//! ([`dataplane::neigh`], run by the controller); a backend's `mac` and a port's
//! `gateway_mac` are static overrides. What cannot work is refused here: an IPv6 backend
//! without a `mac` when no port has an IPv6 address to solicit from, a NAT service whose
//! replies have no next hop (no `gateway_mac`, no gateway of the VIP's family). `passive`
//! works for NAT services: the workers report the host/port unreachables backends send about
//! NAT flows ([`dataplane::icmp`]); a DR backend's errors go straight to the client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use dataplane::port::PortSettings;
use dataplane::service::{MacAddr, Mode, ServiceSpec};
use dataplane::worker::Idle;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{list, DataplaneKind, Machine, Validator};

/// A port's address and, when given, the prefix length of its network.
type Network<A> = (A, Option<u8>);

/// Most queue pairs per port.
pub const MAX_QUEUES: i64 = 64;

/// `[dpdk]`: settings of the DPDK dataplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkSettings {
    /// Core of each worker (one worker per queue pair, ports in order, then queues);
    /// `None`: the machine's cores in turn.
    pub cores: Option<Vec<usize>>,
    /// EAL memory in MiB (`-m`).
    pub memory_mb: u32,
    /// Run without hugepages (`--no-huge`): slower (TLB misses), needs no set-up.
    pub no_huge: bool,
    /// The hugetlbfs mount to use (`--huge-dir`); EAL finds one when `None`.
    pub huge_dir: Option<PathBuf>,
    /// EAL's `--file-prefix`; `None`: `spray-<pid>`, unique per process.
    pub file_prefix: Option<String>,
    /// PCI addresses EAL may probe (`-a`); empty with vdevs only means `--no-pci`.
    pub allow: Vec<String>,
    /// Virtual devices (`--vdev`), such as `net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`.
    pub vdevs: Vec<String>,
    /// Extra EAL arguments, passed last (`--log-level=pmd.net.*:debug`, ...).
    pub eal_args: Vec<String>,
    /// What workers do while idle.
    pub idle: Idle,
    /// The ports.
    pub ports: Vec<DpdkPortConfig>,
}

impl Default for DpdkSettings {
    fn default() -> Self {
        Self {
            cores: None,
            memory_mb: 256,
            no_huge: false,
            huge_dir: None,
            file_prefix: None,
            allow: Vec::new(),
            vdevs: Vec::new(),
            eal_args: Vec::new(),
            idle: Idle::default(),
            ports: Vec::new(),
        }
    }
}

impl DpdkSettings {
    /// Workers over all ports: one per queue pair.
    pub fn workers(&self) -> usize {
        self.ports
            .iter()
            .map(|p| usize::from(p.ethdev.queues))
            .sum()
    }
}

/// `[[dpdk.ports]]`: one Ethernet port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkPortConfig {
    /// PCI address (on `dpdk.allow`) or vdev name.
    pub device: String,
    /// `rx_queues` (one worker each), `rx_ring`, `tx_ring`, `burst` and `mac`: how the
    /// device is set up.
    pub ethdev: PortSettings,
    /// Next hop of NAT replies toward clients, static: overrides the resolved gateways.
    pub gateway_mac: Option<MacAddr>,
    /// The port's own IPv4 address: answered for, the sender of its ARP requests.
    pub ipv4: Option<Ipv4Addr>,
    /// The port's own IPv6 address: answered for, the source of its solicitations.
    pub ipv6: Option<Ipv6Addr>,
    /// Prefix length of the IPv4 network: backends outside it are reached through the
    /// gateway. `None`: every address is on the link.
    pub ipv4_prefix: Option<u8>,
    /// Prefix length of the IPv6 network, likewise.
    pub ipv6_prefix: Option<u8>,
    /// Next hop toward IPv4 clients (NAT replies), resolved by ARP.
    pub gateway_ipv4: Option<Ipv4Addr>,
    /// Next hop toward IPv6 clients, resolved by NDP.
    pub gateway_ipv6: Option<Ipv6Addr>,
    /// 802.1Q TCI of the frames Spray originates on this port (ARP/NDP); `None`: untagged.
    pub vlan: Option<u16>,
}

impl DpdkPortConfig {
    /// Whether `ip` is inside this port's network (always, when its address of that family
    /// has no prefix length, as in [`dataplane::neigh::Neighbours::on_link`]).
    pub fn on_link(&self, ip: IpAddr) -> bool {
        match (ip, self.ipv4, self.ipv4_prefix, self.ipv6, self.ipv6_prefix) {
            (IpAddr::V4(a), Some(l), Some(len), ..) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                u32::from(a) & mask == u32::from(l) & mask
            }
            (IpAddr::V6(a), .., Some(l), Some(len)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                u128::from(a) & mask == u128::from(l) & mask
            }
            _ => true,
        }
    }

    /// The port's gateway of `ip`'s family.
    pub fn gateway(&self, ip: IpAddr) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(_) => self.gateway_ipv4.map(IpAddr::V4),
            IpAddr::V6(_) => self.gateway_ipv6.map(IpAddr::V6),
        }
    }

    /// A port on `device` with the defaults of every other key.
    pub fn new(device: impl Into<String>) -> Self {
        Self {
            device: device.into(),
            ethdev: PortSettings::default(),
            gateway_mac: None,
            ipv4: None,
            ipv6: None,
            ipv4_prefix: None,
            ipv6_prefix: None,
            gateway_ipv4: None,
            gateway_ipv6: None,
            vlan: None,
        }
    }
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDpdk {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<Spanned<Vec<Spanned<i64>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_huge: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub huge_dir: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_prefix: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vdevs: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eal_args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_spin_polls: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_pause_polls: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_max_sleep_us: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Spanned<Vec<Spanned<RawDpdkPort>>>>,
}

#[derive(Debug, Deserialize, Clone, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDpdkPort {
    pub device: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_queues: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_ring: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_ring: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_mac: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateways: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_payload: Option<Spanned<String>>,
}

/// Where an address of `addresses` / `gateways` may not point.
fn unusable(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if matches!(ip, IpAddr::V4(a) if a.is_broadcast()) {
        Some("the broadcast address")
    } else {
        None
    }
}

impl Validator<'_> {
    fn mac(&mut self, key: &str, raw: &Option<Spanned<String>>) -> Option<MacAddr> {
        let m = raw.as_ref()?;
        match MacAddr::from_str(m.get_ref()) {
            Ok(mac) => Some(mac),
            Err(e) => {
                self.report(
                    Some(m.span()),
                    key,
                    format!("{:?} is not a MAC address: {e}", m.get_ref()),
                );
                None
            }
        }
    }

    /// `mirror_payload` at `key`: whether copies for mirror pools share the payload.
    fn mirror_payload(&mut self, key: &str, raw: &Option<Spanned<String>>) -> bool {
        match raw.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("copy", _)) => false,
            Some(("share", _)) => true,
            Some((other, span)) => {
                self.report(
                    Some(span),
                    key,
                    format!("unknown mirror payload {other:?}: expected copy or share"),
                );
                false
            }
        }
    }

    /// At most one IPv4 and one IPv6 address from the list at `key`.
    pub(super) fn ip_pair(
        &mut self,
        key: &str,
        raw: &Option<Spanned<Vec<Spanned<String>>>>,
    ) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        let (v4, v6) = self.networks(key, raw, false);
        (v4.map(|(a, _)| a), v6.map(|(a, _)| a))
    }

    /// At most one IPv4 and one IPv6 address from the list at `key`, each with its prefix
    /// length when `prefixes` allows one (`198.18.0.2/24`).
    fn networks(
        &mut self,
        key: &str,
        raw: &Option<Spanned<Vec<Spanned<String>>>>,
        prefixes: bool,
    ) -> (Option<Network<Ipv4Addr>>, Option<Network<Ipv6Addr>>) {
        let (mut v4, mut v6) = (None, None);
        for (i, a) in raw.iter().flat_map(|r| r.get_ref().iter()).enumerate() {
            let k = format!("{key}[{i}]");
            let text = a.get_ref();
            let (addr, len) = match text.split_once('/') {
                Some((addr, len)) if prefixes => (addr, Some(len)),
                _ => (text.as_str(), None),
            };
            let ip = match addr.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => {
                    let like = if prefixes {
                        "like 198.18.0.2/24 or 2001:db8::2/64; the prefix length is optional"
                    } else {
                        "like 198.18.0.2 or 2001:db8::2, without a prefix length"
                    };
                    self.report(
                        Some(a.span()),
                        &k,
                        format!("{text:?} is not an IP address ({like})"),
                    );
                    continue;
                }
            };
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len.map(|l| l.parse::<u8>().ok().filter(|&l| l <= max)) {
                None => None,
                Some(Some(l)) => Some(l),
                Some(None) => {
                    self.report(
                        Some(a.span()),
                        &k,
                        format!("{text:?}: the prefix length must be 0..={max}"),
                    );
                    continue;
                }
            };
            if let Some(why) = unusable(ip) {
                self.report(Some(a.span()), &k, format!("{ip} is {why}"));
                continue;
            }
            let taken = match ip {
                IpAddr::V4(a) => v4.replace((a, len)).is_some(),
                IpAddr::V6(a) => v6.replace((a, len)).is_some(),
            };
            if taken {
                self.report(
                    Some(a.span()),
                    &k,
                    format!(
                        "{ip}: only one {} address per port is supported",
                        super::family(ip)
                    ),
                );
            }
        }
        (v4, v6)
    }

    pub(super) fn dpdk(
        &mut self,
        raw: &RawDpdk,
        dataplane: DataplaneKind,
        services: &[ServiceSpec],
        machine: &Machine,
    ) -> DpdkSettings {
        let d = DpdkSettings::default();
        let mut s = DpdkSettings {
            memory_mb: self.int("dpdk.memory_mb", &raw.memory_mb, 64..=1 << 20, 256) as u32,
            no_huge: raw.no_huge.unwrap_or(false),
            huge_dir: raw.huge_dir.as_ref().map(|h| PathBuf::from(h.get_ref())),
            allow: raw.allow.clone().unwrap_or_default(),
            vdevs: raw.vdevs.clone().unwrap_or_default(),
            eal_args: raw.eal_args.clone().unwrap_or_default(),
            ..d
        };
        if let (true, Some(h)) = (s.no_huge, &raw.huge_dir) {
            self.report(
                Some(h.span()),
                "dpdk.huge_dir",
                "is set but so is no_huge = true: choose one",
            );
        }
        if let Some(p) = &raw.file_prefix {
            let ok = !p.get_ref().is_empty()
                && p.get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if ok {
                s.file_prefix = Some(p.get_ref().clone());
            } else {
                self.report(
                    Some(p.span()),
                    "dpdk.file_prefix",
                    format!("{:?} must be letters, digits, '-' or '_'", p.get_ref()),
                );
            }
        }
        s.idle = match raw.idle.as_ref().map(|i| (i.get_ref().as_str(), i.span())) {
            Some(("off", _)) => Idle::Off,
            None | Some(("backoff", _)) => {
                let Idle::Backoff {
                    spin_polls,
                    pause_polls,
                    max_sleep,
                } = Idle::default()
                else {
                    unreachable!("the default idle policy backs off")
                };
                let r = 0..=i64::from(u32::MAX);
                Idle::Backoff {
                    spin_polls: self.int(
                        "dpdk.idle_spin_polls",
                        &raw.idle_spin_polls,
                        r.clone(),
                        i64::from(spin_polls),
                    ) as u32,
                    pause_polls: self.int(
                        "dpdk.idle_pause_polls",
                        &raw.idle_pause_polls,
                        r,
                        i64::from(pause_polls),
                    ) as u32,
                    max_sleep: Duration::from_micros(self.int(
                        "dpdk.idle_max_sleep_us",
                        &raw.idle_max_sleep_us,
                        10..=100_000,
                        max_sleep.as_micros() as i64,
                    ) as u64),
                }
            }
            Some((other, span)) => {
                self.report(
                    Some(span),
                    "dpdk.idle",
                    format!("unknown idle policy {other:?}: expected backoff or off"),
                );
                Idle::default()
            }
        };
        if let Some(ports) = &raw.ports {
            for (i, p) in ports.get_ref().iter().enumerate() {
                let key = format!("dpdk.ports[{i}]");
                let p = p.get_ref();
                if p.device.get_ref().trim().is_empty() {
                    self.report(Some(p.device.span()), &format!("{key}.device"), "is empty");
                }
                let vlan = p
                    .vlan
                    .as_ref()
                    .map(|_| self.int(&format!("{key}.vlan"), &p.vlan, 1..=4094, 1) as u16);
                let (v4, v6) = self.networks(&format!("{key}.addresses"), &p.addresses, true);
                let (gateway_ipv4, gateway_ipv6) =
                    self.ip_pair(&format!("{key}.gateways"), &p.gateways);
                let port = DpdkPortConfig {
                    device: p.device.get_ref().clone(),
                    ethdev: PortSettings {
                        queues: self.int(
                            &format!("{key}.rx_queues"),
                            &p.rx_queues,
                            1..=MAX_QUEUES,
                            1,
                        ) as u16,
                        rx_ring: self.int(&format!("{key}.rx_ring"), &p.rx_ring, 32..=32768, 1024)
                            as u16,
                        tx_ring: self.int(&format!("{key}.tx_ring"), &p.tx_ring, 32..=32768, 1024)
                            as u16,
                        burst: self.int(&format!("{key}.burst"), &p.burst, 1..=256, 32) as u16,
                        mac: self.mac(&format!("{key}.mac"), &p.mac),
                        share_copies: self
                            .mirror_payload(&format!("{key}.mirror_payload"), &p.mirror_payload),
                        ..PortSettings::default()
                    },
                    gateway_mac: self.mac(&format!("{key}.gateway_mac"), &p.gateway_mac),
                    vlan,
                    ipv4: v4.map(|(a, _)| a),
                    ipv6: v6.map(|(a, _)| a),
                    ipv4_prefix: v4.and_then(|(_, l)| l),
                    ipv6_prefix: v6.and_then(|(_, l)| l),
                    gateway_ipv4,
                    gateway_ipv6,
                };
                if let (Some(g), None) = (port.gateway_ipv6, port.ipv6) {
                    self.report(
                        p.gateways.as_ref().map(Spanned::span),
                        &format!("{key}.gateways"),
                        format!(
                            "{g} cannot be resolved: the port has no IPv6 address to send \
                             neighbour solicitations from (add one to {key}.addresses)"
                        ),
                    );
                }
                if s.ports.iter().any(|o| o.device == port.device) {
                    self.report(
                        Some(p.device.span()),
                        &format!("{key}.device"),
                        format!("{:?} is listed twice", port.device),
                    );
                }
                s.ports.push(port);
            }
        }
        if let Some(cores) = &raw.cores {
            let mut ids = Vec::new();
            for (i, c) in cores.get_ref().iter().enumerate() {
                let id = usize::try_from(*c.get_ref())
                    .ok()
                    .filter(|id| machine.cores.contains(id));
                match id {
                    Some(id) => ids.push(id),
                    None => self.report(
                        Some(c.span()),
                        &format!("dpdk.cores[{i}]"),
                        format!(
                            "core {} does not exist on this machine (available: {})",
                            c.get_ref(),
                            list(&machine.cores)
                        ),
                    ),
                }
            }
            if dataplane == DataplaneKind::Dpdk && cores.get_ref().len() != s.workers() {
                self.report(
                    Some(cores.span()),
                    "dpdk.cores",
                    format!(
                        "has {} entries but the ports have {} queue pair(s): give one core \
                         per queue pair (one worker each)",
                        cores.get_ref().len(),
                        s.workers()
                    ),
                );
            }
            s.cores = Some(ids);
        }
        if dataplane == DataplaneKind::Dpdk {
            if s.ports.is_empty() {
                self.report(
                    None,
                    "dpdk.ports",
                    "no port is defined: add [[dpdk.ports]] with device = a PCI address \
                     (listed in dpdk.allow) or a vdev name (listed in dpdk.vdevs)",
                );
            }
            self.dpdk_neighbours(&s, services);
        }
        s
    }

    /// What neighbour resolution cannot supply: see the module doc.
    fn dpdk_neighbours(&mut self, s: &DpdkSettings, services: &[ServiceSpec]) {
        let has_v6 = s.ports.iter().any(|p| p.ipv6.is_some());
        let gateway_mac = s.ports.iter().any(|p| p.gateway_mac.is_some());
        for svc in services {
            let unresolvable = svc
                .backends
                .iter()
                .chain(svc.fallback.as_ref())
                .filter(|b| b.mac.is_none() && b.addr.is_ipv6() && !has_v6);
            for b in unresolvable {
                self.report(
                    None,
                    &format!("services.{}", svc.name),
                    format!(
                        "backend {} has no mac and no dpdk port has an IPv6 address to \
                         resolve it from: add one to dpdk.ports[N].addresses, or give the \
                         backend a mac",
                        b.addr
                    ),
                );
            }
            for b in &svc.backends {
                let ip = b.addr.ip();
                if b.mac.is_some() || s.ports.iter().any(|p| p.on_link(ip)) {
                    continue;
                }
                let service = format!("services.{}", svc.name);
                if svc.mode == Mode::Dr && b.tunnel.is_none() {
                    self.report(
                        None,
                        &service,
                        format!(
                            "backend {ip} is outside every dpdk port's network, and dr only \
                             rewrites the MAC address: it must share the port's segment; \
                             reach it through a router with mode = \"tunnel\""
                        ),
                    );
                } else if !gateway_mac && !s.ports.iter().any(|p| p.gateway(ip).is_some()) {
                    self.report(
                        None,
                        &service,
                        format!(
                            "backend {ip} is outside every dpdk port's network and no port has \
                             an {} gateway to reach it through: add one to \
                             dpdk.ports[N].gateways",
                            super::family(ip)
                        ),
                    );
                }
            }
            let v4 = svc.vip.addr.is_ipv4();
            let gateway = s.ports.iter().any(|p| {
                if v4 {
                    p.gateway_ipv4.is_some()
                } else {
                    p.gateway_ipv6.is_some()
                }
            });
            if svc.mode == Mode::Nat && !gateway && !gateway_mac {
                self.report(
                    None,
                    &format!("services.{}", svc.name),
                    format!(
                        "nat replies to {} clients need a next hop: add the router's {} \
                         address to dpdk.ports[N].gateways (resolved by {}), or set \
                         dpdk.ports[N].gateway_mac",
                        if v4 { "IPv4" } else { "IPv6" },
                        if v4 { "IPv4" } else { "IPv6" },
                        if v4 { "ARP" } else { "NDP" },
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};

    fn parse(src: &str) -> Result<Config, ConfigError> {
        Config::parse(
            "spray.toml",
            src,
            &Machine {
                cores: vec![0, 1, 2, 3],
            },
        )
    }

    const DPDK: &str = r#"
[runtime]
dataplane = "DATAPLANE"

[dpdk]
cores = [1, 2]
memory_mb = 512
huge_dir = "/dev/hugepages"
vdevs = ["net_null0"]
allow = ["0000:01:00.0"]
idle_spin_polls = 10
idle_max_sleep_us = 200

[[dpdk.ports]]
device = "0000:01:00.0"
rx_queues = 2
rx_ring = 2048
gateway_mac = "02:00:00:00:00:01"
mirror_payload = "share"

[services.s]
vip = "198.18.0.10:514"
backends = [{ addr = "198.19.1.1:514", mac = "02:00:00:00:01:01" }]
"#;

    fn dpdk_src() -> String {
        DPDK.replace(
            "DATAPLANE",
            if cfg!(spray_dpdk) { "dpdk" } else { "socket" },
        )
    }

    #[test]
    fn dpdk_section_is_parsed() {
        let c = parse(&dpdk_src()).unwrap();
        let d = &c.dpdk;
        assert_eq!(d.cores, Some(vec![1, 2]));
        assert_eq!(d.memory_mb, 512);
        assert_eq!(d.huge_dir, Some(PathBuf::from("/dev/hugepages")));
        assert_eq!(d.workers(), 2);
        assert_eq!(d.ports[0].ethdev.rx_ring, 2048);
        assert_eq!(d.ports[0].ethdev.tx_ring, 1024);
        assert_eq!(d.ports[0].ethdev.burst, 32);
        assert!(d.ports[0].ethdev.share_copies);
        assert_eq!(d.ports[0].gateway_mac, Some(MacAddr([2, 0, 0, 0, 0, 1])));
        assert_eq!(
            d.idle,
            Idle::Backoff {
                spin_polls: 10,
                pause_polls: 4096,
                max_sleep: Duration::from_micros(200)
            }
        );
        let c = parse(&dpdk_src().replace("idle_spin_polls = 10", "idle = \"off\"")).unwrap();
        assert_eq!(c.dpdk.idle, Idle::Off);
        let c = parse(&dpdk_src().replace("mirror_payload = \"share\"", "")).unwrap();
        assert!(
            !c.dpdk.ports[0].ethdev.share_copies,
            "copies are full by default"
        );
    }

    #[test]
    fn dpdk_section_problems_name_their_key() {
        let e = parse(&dpdk_src().replace("\"share\"", "\"clone\"")).unwrap_err();
        assert!(
            e.to_string().contains(
                "dpdk.ports[0].mirror_payload: unknown mirror payload \"clone\": expected copy or \
                 share"
            ),
            "{e}"
        );
        let e = parse(&dpdk_src().replace("rx_ring = 2048", "rx_ring = 1")).unwrap_err();
        assert!(
            e.to_string()
                .contains("spray.toml:17: dpdk.ports[0].rx_ring: 1 is out of range"),
            "{e}"
        );
        let e = parse(&dpdk_src().replace("idle_spin_polls = 10", "idle = \"nap\"")).unwrap_err();
        assert!(e.to_string().contains("unknown idle policy \"nap\""), "{e}");
        let e = parse(&dpdk_src().replace("vdevs", "no_huge = true\nvdevs")).unwrap_err();
        assert!(e
            .to_string()
            .contains("dpdk.huge_dir: is set but so is no_huge"));
        let e = parse(&dpdk_src().replace("[1, 2]", "[1, 7]")).unwrap_err();
        assert!(e
            .to_string()
            .contains("dpdk.cores[1]: core 7 does not exist"));
    }

    #[test]
    fn port_addresses_gateways_and_vlan_are_parsed() {
        let src = dpdk_src().replace(
            "rx_ring = 2048",
            "rx_ring = 2048\naddresses = [\"198.18.0.2\", \"2001:db8::2\"]\n\
             gateways = [\"2001:db8::1\", \"198.18.0.1\"]\nvlan = 100",
        );
        let p = &parse(&src).unwrap().dpdk.ports[0];
        assert_eq!(p.ipv4, Some("198.18.0.2".parse().unwrap()));
        assert_eq!(p.ipv6, Some("2001:db8::2".parse().unwrap()));
        assert_eq!(p.gateway_ipv4, Some("198.18.0.1".parse().unwrap()));
        assert_eq!(p.gateway_ipv6, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(p.vlan, Some(100));
        let bad = |from: &str, to: &str| parse(&src.replace(from, to)).unwrap_err().to_string();
        let with_prefix = parse(&src.replace("\"198.18.0.2\"", "\"198.18.0.2/24\"")).unwrap();
        let p = &with_prefix.dpdk.ports[0];
        assert_eq!((p.ipv4_prefix, p.ipv6_prefix), (Some(24), None));
        assert!(p.on_link("198.18.0.200".parse().unwrap()));
        assert!(!p.on_link("198.19.1.1".parse().unwrap()));
        assert!(
            p.on_link("2001:db8:ffff::1".parse().unwrap()),
            "no IPv6 prefix"
        );
        let e = bad("\"198.18.0.2\"", "\"198.18.0.2/33\"");
        assert!(
            e.contains(
                "dpdk.ports[0].addresses[0]: \"198.18.0.2/33\": the prefix length must be 0..=32"
            ),
            "{e}"
        );
        let e = bad("\"198.18.0.2\"", "\"198.18.0.2/x\"");
        assert!(e.contains("\"198.18.0.2/x\": the prefix length"), "{e}");
        let e = bad("\"198.18.0.2\"", "\"198.18.0.x/24\"");
        assert!(
            e.contains("\"198.18.0.x/24\" is not an IP address (like 198.18.0.2/24"),
            "{e}"
        );
        let e = bad("\"198.18.0.2\"", "\"198.18.0.3\", \"198.18.0.2\"");
        assert!(
            e.contains("addresses[1]: 198.18.0.2: only one IPv4 address per port"),
            "{e}"
        );
        let e = bad("\"2001:db8::2\"", "\"ff02::1\"");
        assert!(
            e.contains("addresses[1]: ff02::1 is a multicast address"),
            "{e}"
        );
        let e = bad(", \"2001:db8::2\"", "");
        assert!(
            e.contains(
                "dpdk.ports[0].gateways: 2001:db8::1 cannot be resolved: the port has no IPv6"
            ),
            "{e}"
        );
        let e = bad("vlan = 100", "vlan = 4095");
        assert!(
            e.contains("dpdk.ports[0].vlan: 4095 is out of range 1..=4094"),
            "{e}"
        );
    }

    #[cfg(spray_dpdk)]
    #[test]
    fn dpdk_mode_needs_ports_next_hops_and_a_core_per_queue() {
        let e = parse(&dpdk_src().replace("cores = [1, 2]", "cores = [1]")).unwrap_err();
        assert!(
            e.to_string()
                .contains("dpdk.cores: has 1 entries but the ports have 2 queue pair(s)"),
            "{e}"
        );
        // Backend MACs are resolved: no mac is fine for IPv4...
        let no_mac = dpdk_src().replace(", mac = \"02:00:00:00:01:01\"", "");
        parse(&no_mac).unwrap();
        // ...and for IPv6 only with an IPv6 address to solicit from.
        let v6 = no_mac
            .replace("198.18.0.10:514", "[2001:db8::10]:514")
            .replace("198.19.1.1:514", "[2001:db8::1:1]:514");
        let e = parse(&v6).unwrap_err();
        assert!(
            e.to_string().contains(
                "services.s: backend [2001:db8::1:1]:514 has no mac and no dpdk port has an \
                 IPv6 address"
            ),
            "{e}"
        );
        parse(&v6.replace(
            "rx_ring = 2048",
            "rx_ring = 2048\naddresses = [\"2001:db8::2\"]",
        ))
        .unwrap();
        // NAT replies need a next hop: a static gateway_mac or a gateway of the family.
        let no_gw = dpdk_src().replace("gateway_mac = \"02:00:00:00:00:01\"", "");
        let e = parse(&no_gw).unwrap_err();
        assert!(
            e.to_string()
                .contains("services.s: nat replies to IPv4 clients need a next hop"),
            "{e}"
        );
        parse(&no_gw.replace(
            "rx_ring = 2048",
            "rx_ring = 2048\ngateways = [\"198.18.0.1\"]",
        ))
        .unwrap();
        // Passive detection: the workers report ICMP errors about NAT flows.
        let c = parse(&dpdk_src().replace("backends =", "passive = true\nbackends =")).unwrap();
        assert!(c.services.iter().all(|s| s.passive));
        let src = dpdk_src();
        let cut = src.find("[[dpdk.ports]]").unwrap();
        let e = parse(
            &(src[..cut].replace("cores = [1, 2]", "") + &src[src.find("[services").unwrap()..]),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("dpdk.ports: no port is defined"),
            "{e}"
        );
    }

    /// The sample in docs/dpdk.md is live: it parses, with its addresses and gateways.
    #[cfg(spray_dpdk)]
    #[test]
    fn docs_dpdk_sample_parses() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dpdk.md"),
        )
        .unwrap();
        let start = doc.find("```toml\n").expect("a toml sample") + 8;
        let end = start + doc[start..].find("```").unwrap();
        let c = parse(&doc[start..end]).unwrap_or_else(|e| panic!("docs/dpdk.md: {e}"));
        let p = &c.dpdk.ports[0];
        assert_eq!(p.ipv4, Some("198.18.0.2".parse().unwrap()));
        assert_eq!(p.gateway_ipv6, Some("2001:db8::1".parse().unwrap()));
        assert!(c.services[0].backends[0].mac.is_none());
    }
}
