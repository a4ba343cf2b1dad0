//! The `[dpdk]` section of the config file: EAL settings, ports and queues, idle back-off.
//!
//! A child module of [`crate::config`], so it validates with the same [`Validator`] (every
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
//! gateway_mac = "02:00:00:00:00:01"
//! ```

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use dataplane::service::{MacAddr, Mode, ServiceSpec};
use dataplane::worker::Idle;
use serde::Deserialize;
use toml::Spanned;

use super::{list, DataplaneKind, Machine, Validator};

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
        self.ports.iter().map(|p| usize::from(p.rx_queues)).sum()
    }
}

/// `[[dpdk.ports]]`: one Ethernet port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkPortConfig {
    /// PCI address (on `dpdk.allow`) or vdev name.
    pub device: String,
    /// RX/TX queue pairs, one worker each.
    pub rx_queues: u16,
    /// RX descriptors per queue.
    pub rx_ring: u16,
    /// TX descriptors per queue.
    pub tx_ring: u16,
    /// Source MAC of sent frames instead of the device's.
    pub mac: Option<MacAddr>,
    /// Next hop of NAT replies toward clients (until ARP/NDP resolution exists).
    pub gateway_mac: Option<MacAddr>,
    /// Packets per RX burst.
    pub burst: u16,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDpdk {
    cores: Option<Spanned<Vec<Spanned<i64>>>>,
    memory_mb: Option<Spanned<i64>>,
    no_huge: Option<bool>,
    huge_dir: Option<Spanned<String>>,
    file_prefix: Option<Spanned<String>>,
    allow: Option<Vec<String>>,
    vdevs: Option<Vec<String>>,
    eal_args: Option<Vec<String>>,
    idle: Option<Spanned<String>>,
    idle_spin_polls: Option<Spanned<i64>>,
    idle_pause_polls: Option<Spanned<i64>>,
    idle_max_sleep_us: Option<Spanned<i64>>,
    ports: Option<Spanned<Vec<Spanned<RawDpdkPort>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDpdkPort {
    device: Spanned<String>,
    rx_queues: Option<Spanned<i64>>,
    rx_ring: Option<Spanned<i64>>,
    tx_ring: Option<Spanned<i64>>,
    mac: Option<Spanned<String>>,
    gateway_mac: Option<Spanned<String>>,
    burst: Option<Spanned<i64>>,
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
                let span = p.span();
                let p = p.get_ref();
                if p.device.get_ref().trim().is_empty() {
                    self.report(Some(p.device.span()), &format!("{key}.device"), "is empty");
                }
                let port = DpdkPortConfig {
                    device: p.device.get_ref().clone(),
                    rx_queues: self.int(
                        &format!("{key}.rx_queues"),
                        &p.rx_queues,
                        1..=MAX_QUEUES,
                        1,
                    ) as u16,
                    rx_ring: self.int(&format!("{key}.rx_ring"), &p.rx_ring, 32..=32768, 1024)
                        as u16,
                    tx_ring: self.int(&format!("{key}.tx_ring"), &p.tx_ring, 32..=32768, 1024)
                        as u16,
                    mac: self.mac(&format!("{key}.mac"), &p.mac),
                    gateway_mac: self.mac(&format!("{key}.gateway_mac"), &p.gateway_mac),
                    burst: self.int(&format!("{key}.burst"), &p.burst, 1..=256, 32) as u16,
                };
                if dataplane == DataplaneKind::Dpdk
                    && port.gateway_mac.is_none()
                    && p.gateway_mac.is_none()
                    && services.iter().any(|s| s.mode == Mode::Nat)
                {
                    self.report(
                        Some(span),
                        &format!("{key}.gateway_mac"),
                        "is needed by the nat services (the next hop of replies to clients) \
                         until spray resolves neighbours itself",
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
            for svc in services {
                for (j, b) in svc.backends.iter().enumerate() {
                    if b.mac.is_none() {
                        self.report(
                            None,
                            &format!("services.{}.backends[{j}].mac", svc.name),
                            "is needed by the dpdk dataplane (the frame's destination) until \
                             spray resolves neighbours itself",
                        );
                    }
                }
            }
        }
        s
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
        assert_eq!(d.ports[0].rx_ring, 2048);
        assert_eq!(d.ports[0].tx_ring, 1024);
        assert_eq!(d.ports[0].burst, 32);
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
    }

    #[test]
    fn dpdk_section_problems_name_their_key() {
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

    #[cfg(spray_dpdk)]
    #[test]
    fn dpdk_mode_needs_ports_macs_and_a_core_per_queue() {
        let e = parse(&dpdk_src().replace("cores = [1, 2]", "cores = [1]")).unwrap_err();
        assert!(
            e.to_string()
                .contains("dpdk.cores: has 1 entries but the ports have 2 queue pair(s)"),
            "{e}"
        );
        let e = parse(&dpdk_src().replace(", mac = \"02:00:00:00:01:01\"", "")).unwrap_err();
        assert!(
            e.to_string()
                .contains("services.s.backends[0].mac: is needed by the dpdk dataplane"),
            "{e}"
        );
        let e = parse(&dpdk_src().replace("gateway_mac = \"02:00:00:00:00:01\"", "")).unwrap_err();
        assert!(
            e.to_string()
                .contains("dpdk.ports[0].gateway_mac: is needed by the nat services"),
            "{e}"
        );
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
}
