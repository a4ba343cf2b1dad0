//! Tables that validate but rarely mean what their author wanted: `spray check` and `spray
//! run` warn of them.

use std::net::SocketAddr;

use super::Config;

/// One warning per trap, in service order; the text names the keys involved.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let services = &config.services;
    for (i, wild) in services.iter().enumerate() {
        let w = wild.vip.addr;
        if !w.ip().is_unspecified() {
            continue;
        }
        for (j, specific) in services.iter().enumerate() {
            let s = specific.vip.addr;
            if i != j && shares_port(&w, &s) && !s.ip().is_unspecified() {
                out.push(format!(
                    "services.{}.vip {w} and services.{}.vip {s} share a port: datagrams to {s} \
                     go to services.{} only (the kernel prefers the specific address), the \
                     wildcard gets the rest",
                    wild.name, specific.name, specific.name
                ));
            }
        }
    }
    for svc in services {
        let enabled = svc.backends.iter().filter(|b| b.weight > 0).count();
        if enabled == 0 && !svc.backends.is_empty() {
            out.push(format!(
                "services.{}: every backend has weight 0: each datagram is dropped \
                 (no_healthy_backend) until a weight is raised (spray ctl weight)",
                svc.name
            ));
        }
    }
    out
}

fn shares_port(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.is_ipv4() == b.is_ipv4() && a.port() == b.port()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Machine;

    fn warned(src: &str) -> Vec<String> {
        let c = Config::parse("t.toml", src, &Machine { cores: vec![0] }).unwrap();
        warnings(&c)
    }

    #[test]
    fn a_wildcard_beside_a_specific_vip_and_all_weights_zero_are_warned() {
        let w = warned(
            r#"
[services.any]
vip = "0.0.0.0:5514"
backends = [{ addr = "198.18.2.1:514" }]
[services.one]
vip = "198.18.0.10:5514"
backends = [{ addr = "198.18.2.2:514", weight = 0 }, { addr = "198.18.2.3:514", weight = 0 }]
[services.other_port]
vip = "198.18.0.10:5515"
backends = [{ addr = "198.18.2.2:514" }]
"#,
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with(
                "services.any.vip 0.0.0.0:5514 and services.one.vip 198.18.0.10:5514 share a port"
            ),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("services.one: every backend has weight 0"),
            "{w:?}"
        );
    }

    #[test]
    fn a_plain_table_has_no_warning() {
        let w = warned(
            r#"
[services.a]
vip = "198.18.0.10:514"
backends = [{ addr = "198.18.2.1:514" }, { addr = "198.18.2.2:514", weight = 0 }]
[services.b]
vip = "[::]:514"
backends = [{ addr = "[2001:db8::1]:514" }]
"#,
        );
        assert!(w.is_empty(), "{w:?}");
    }
}
