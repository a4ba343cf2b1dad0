//! `[services.NAME.tunnel]`: how the tunnelled backends of a service are reached.
//!
//! ```toml
//! [services.syslog]
//! vip = "198.18.0.10:514"
//! mode = "tunnel"                 # every backend, unless its own `mode = "dr"`
//! backends = [{ addr = "198.19.2.1" }, { addr = "2001:db8:2::1" }]
//!
//! [services.syslog.tunnel]
//! encap = "gue"                   # or "ipip" (the default)
//! port = 6080                     # GUE only: the backends' `ip fou` port
//! sources = ["198.18.0.2"]        # outer source per family; default: the port's address
//! mtu = 1500                      # largest outer packet the path carries
//! ```
//!
//! A child module of [`crate::config`], validated with the same `Validator`. The outer
//! source of each family defaults to the DPDK port's address of that family, so it is
//! settled only once `[dpdk]` is read ([`Validator::tunnel_sources`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dataplane::service::{Encap, ServiceSpec, Tunnel, DEFAULT_GUE_PORT, DEFAULT_TUNNEL_MTU};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::dpdk::DpdkSettings;
use super::{Forwarding, Validator};

/// IPv6's minimum link MTU (RFC 8200 §5): an IPv6 datagram this long must get through.
const IPV6_MIN_MTU: usize = 1280;

/// `[services.NAME.tunnel]` as written.
#[derive(Debug, Default, Deserialize, Clone, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTunnel {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encap: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<Spanned<i64>>,
}

/// A service's tunnel, validated: what each of its tunnelled backends gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelSettings {
    /// The encapsulation.
    pub encap: Encap,
    /// Outer source toward IPv4 backends.
    pub source_v4: Option<Ipv4Addr>,
    /// Outer source toward IPv6 backends.
    pub source_v6: Option<Ipv6Addr>,
    /// Largest outer packet.
    pub mtu: u16,
}

impl Default for TunnelSettings {
    fn default() -> Self {
        Self {
            encap: Encap::Ipip,
            source_v4: None,
            source_v6: None,
            mtu: DEFAULT_TUNNEL_MTU,
        }
    }
}

impl TunnelSettings {
    /// The tunnel toward a backend at `ip`; `None` without a source of its family.
    pub fn toward(&self, ip: IpAddr) -> Option<Tunnel> {
        let source = match ip {
            IpAddr::V4(_) => IpAddr::V4(self.source_v4?),
            IpAddr::V6(_) => IpAddr::V6(self.source_v6?),
        };
        Some(Tunnel {
            encap: self.encap,
            source,
            mtu: self.mtu,
        })
    }
}

impl Validator<'_> {
    /// The tunnel of service `key` (defaults when it has no table).
    pub(super) fn tunnel(&mut self, key: &str, raw: Option<&Spanned<RawTunnel>>) -> TunnelSettings {
        let mut t = TunnelSettings::default();
        let Some(raw) = raw.map(Spanned::get_ref) else {
            return t;
        };
        let key = format!("{key}.tunnel");
        let gue = match &raw.encap {
            None => false,
            Some(e) => match e.get_ref().as_str() {
                "ipip" => false,
                "gue" => true,
                other => {
                    self.report(
                        Some(e.span()),
                        &format!("{key}.encap"),
                        format!("unknown encapsulation {other:?}: expected ipip or gue"),
                    );
                    false
                }
            },
        };
        if gue {
            let port = self.int(
                &format!("{key}.port"),
                &raw.port,
                1..=i64::from(u16::MAX),
                i64::from(DEFAULT_GUE_PORT),
            );
            t.encap = Encap::Gue { port: port as u16 };
        } else if let Some(p) = &raw.port {
            self.report(
                Some(p.span()),
                &format!("{key}.port"),
                "is the UDP port of GUE: set encap = \"gue\", or remove it (ipip has no port)",
            );
        }
        (t.source_v4, t.source_v6) = self.ip_pair(&format!("{key}.sources"), &raw.sources);
        t.mtu = self.int(
            &format!("{key}.mtu"),
            &raw.mtu,
            576..=9216,
            i64::from(DEFAULT_TUNNEL_MTU),
        ) as u16;
        t
    }

    /// Checks that an IPv6 datagram of the minimum MTU still fits service `key`'s tunnel
    /// toward `backend`: RFC 8200 lets no link carry less, so clients could not adapt.
    pub(super) fn tunnel_fits_ipv6(
        &mut self,
        key: &str,
        raw: Option<&Spanned<RawTunnel>>,
        t: &TunnelSettings,
        backend: IpAddr,
    ) {
        let probe = Tunnel {
            encap: t.encap,
            source: backend,
            mtu: t.mtu,
        };
        let room = usize::from(t.mtu).saturating_sub(probe.overhead(backend.is_ipv6()));
        if room < IPV6_MIN_MTU {
            let span = raw
                .and_then(|r| r.get_ref().mtu.as_ref())
                .map(Spanned::span);
            self.report(
                span,
                &format!("{key}.tunnel.mtu"),
                format!(
                    "{} leaves {room} bytes for the datagram toward {backend}, less than the \
                     1280 every IPv6 path must carry: raise it to at least {}",
                    t.mtu,
                    IPV6_MIN_MTU + probe.overhead(backend.is_ipv6())
                ),
            );
        }
    }

    /// Gives every tunnel without a source of some family the DPDK port's address of that
    /// family, then the source to each tunnelled backend; a backend still without one is
    /// reported.
    pub(super) fn tunnel_sources(
        &mut self,
        services: &mut [ServiceSpec],
        forwarding: &mut BTreeMap<String, Forwarding>,
        dpdk: &DpdkSettings,
    ) {
        let port_v4 = dpdk.ports.iter().find_map(|p| p.ipv4);
        let port_v6 = dpdk.ports.iter().find_map(|p| p.ipv6);
        for svc in services {
            let Some(Forwarding { tunnel: t, .. }) = forwarding.get_mut(&svc.name) else {
                continue;
            };
            t.source_v4 = t.source_v4.or(port_v4);
            t.source_v6 = t.source_v6.or(port_v6);
            for (j, b) in svc.backends.iter_mut().enumerate() {
                if b.tunnel.is_none() {
                    continue;
                }
                b.tunnel = t.toward(b.addr.ip());
                if b.tunnel.is_none() {
                    let family = super::family(b.addr.ip());
                    self.report(
                        None,
                        &format!("services.{}.backends[{j}]", svc.name),
                        format!(
                            "{} is reached through a tunnel, which needs an {family} outer \
                             source: add one to services.{}.tunnel.sources or to \
                             dpdk.ports[N].addresses",
                            b.addr.ip(),
                            svc.name
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::Method;
    use crate::config::{Config, Machine};
    use dataplane::service::Mode;

    /// The example of docs/config.md ("Tunnel mode"), with a DPDK port.
    const TUNNEL: &str = r#"
[runtime]
dataplane = "dpdk"

[dpdk]
cores = [0]
no_huge = true
vdevs = ["net_null0"]

[[dpdk.ports]]
device = "net_null0"
addresses = ["198.18.0.2/24", "2001:db8::2/64"]
gateways = ["198.18.0.1", "2001:db8::1"]

[services.syslog]
vip = "198.18.0.10:514"
mode = "tunnel"
backends = [
  { addr = "198.19.2.1" },
  { addr = "198.19.2.2" },
  { addr = "198.18.0.33", mode = "dr" },
]

[services.syslog.tunnel]
encap = "gue"
port = 6080
mtu = 1500

[services.syslog6]
vip = "[2001:db8::10]:514"
mode = "tunnel"
backends = [{ addr = "198.19.2.1" }, { addr = "2001:db8:2::1" }]
"#;

    fn parse(src: &str) -> Result<Config, String> {
        Config::parse("spray.toml", src, &Machine { cores: vec![0] }).map_err(|e| e.to_string())
    }

    fn error(from: &str, to: &str) -> String {
        assert!(TUNNEL.contains(from), "{from}");
        parse(&TUNNEL.replace(from, to)).unwrap_err()
    }

    #[test]
    fn tunnel_services_get_their_encapsulation_and_the_ports_sources() {
        if !cfg!(spray_dpdk) {
            // Without the feature the one problem is the dataplane, not the tunnels.
            let e = parse(TUNNEL).unwrap_err();
            assert_eq!(e.lines().count(), 1, "{e}");
            assert!(e.contains("built without the dpdk feature"), "{e}");
            return;
        }
        let c = parse(TUNNEL).unwrap();
        let s = &c.services[0];
        assert_eq!((s.name.as_str(), s.mode), ("syslog", Mode::Dr));
        let gue = Tunnel {
            encap: Encap::Gue { port: 6080 },
            source: "198.18.0.2".parse().unwrap(),
            mtu: 1500,
        };
        assert_eq!(s.backends[0].tunnel, Some(gue));
        assert_eq!(s.backends[0].addr, "198.19.2.1:514".parse().unwrap());
        assert_eq!(s.backends[2].tunnel, None, "its own mode = \"dr\"");
        assert_eq!(c.forwarding["syslog"].method, Method::Tunnel);
        // Defaults: ipip, the port's address of each family, 1500.
        let s6 = &c.services[1];
        let sources: Vec<(Encap, String, u16)> = s6
            .backends
            .iter()
            .map(|b| {
                let t = b.tunnel.unwrap();
                (t.encap, t.source.to_string(), t.mtu)
            })
            .collect();
        assert_eq!(
            sources,
            [
                (Encap::Ipip, "198.18.0.2".to_owned(), 1500),
                (Encap::Ipip, "2001:db8::2".to_owned(), 1500)
            ]
        );
        c.snapshot(1).unwrap();
    }

    #[test]
    fn what_a_tunnel_cannot_do_is_refused_with_its_key() {
        let e = error("encap = \"gue\"", "encap = \"gre\"");
        assert!(
            e.contains(
                "services.syslog.tunnel.encap: unknown encapsulation \"gre\": expected ipip or gue"
            ),
            "{e}"
        );
        let e = error("encap = \"gue\"", "encap = \"ipip\"");
        assert!(
            e.contains("services.syslog.tunnel.port: is the UDP port of GUE"),
            "{e}"
        );
        let e = error("mtu = 1500", "mtu = 100");
        assert!(
            e.contains("services.syslog.tunnel.mtu: 100 is out of range 576..=9216"),
            "{e}"
        );
        // An IPv6 VIP's datagrams of 1280 bytes must fit: 1300 - 20 - 8 - 4 does not.
        let six = TUNNEL.replace(
            "[services.syslog6]",
            "[services.syslog6.tunnel]\nencap = \"gue\"\nmtu = 1300\n\n[services.syslog6]",
        );
        let e = parse(&six).unwrap_err();
        assert!(
            e.contains("services.syslog6.tunnel.mtu: 1300 leaves 1268 bytes for the datagram toward 198.19.2.1, less than the 1280 every IPv6 path must carry: raise it to at least 1312"),
            "{e}"
        );
        let e = error(
            "mode = \"tunnel\"\nbackends = [\n  { addr = \"198.19.2.1\" },",
            "mode = \"nat\"\nbackends = [\n  { addr = \"198.19.2.1:514\", mode = \"tunnel\" },",
        );
        assert!(
            e.contains("services.syslog.backends[0].mode: \"tunnel\" cannot mix with the service's \"nat\""),
            "{e}"
        );
        // A DR backend behind the router cannot work; the tunnel can.
        let e = error(
            "{ addr = \"198.19.2.2\" }",
            "{ addr = \"198.19.2.2\", mode = \"dr\" }",
        );
        assert!(
            e.contains("services.syslog: backend 198.19.2.2 is outside every dpdk port's network, and dr only rewrites the MAC address"),
            "{e}"
        );
        // No IPv6 source anywhere.
        let e = error("addresses = [\"198.18.0.2/24\", \"2001:db8::2/64\"]\ngateways = [\"198.18.0.1\", \"2001:db8::1\"]", "addresses = [\"198.18.0.2/24\"]\ngateways = [\"198.18.0.1\"]");
        assert!(
            e.contains("services.syslog6.backends[1]: 2001:db8:2::1 is reached through a tunnel, which needs an IPv6 outer source"),
            "{e}"
        );
        // A routed backend needs a gateway of its family.
        let e = error(
            "gateways = [\"198.18.0.1\", \"2001:db8::1\"]",
            "gateways = [\"2001:db8::1\"]",
        );
        assert!(
            e.contains("backend 198.19.2.1 is outside every dpdk port's network and no port has an IPv4 gateway"),
            "{e}"
        );
    }

    #[test]
    fn the_socket_dataplane_refuses_tunnel_mode_and_says_why() {
        let src = TUNNEL.replace("dataplane = \"dpdk\"", "dataplane = \"socket\"");
        let e = parse(&src).unwrap_err();
        assert!(
            e.contains("services.syslog.mode: \"tunnel\" needs a dataplane that owns the wire (dpdk): the socket dataplane sends through the kernel's UDP sockets"),
            "{e}"
        );
        assert!(
            e.contains("services.syslog.backends[2].mode: \"dr\" needs a dataplane"),
            "{e}"
        );
    }
}
