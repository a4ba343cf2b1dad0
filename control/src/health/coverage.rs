//! What a configuration's health checks cannot see: the failure classes (a dead receiver
//! process, a dead or unplugged host) that no check or passive report of a service would
//! detect. `spray check` prints these as warnings and `spray run` logs them; none is an
//! error, since an operator may accept a blind spot knowingly.

use std::collections::BTreeSet;

use dataplane::service::Mode;

use super::Probe;
use crate::config::{Config, DataplaneKind};

/// One warning per (service, problem), in service order; the text names the service's key.
pub fn blind_spots(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for svc in &config.services {
        let key = format!("services.{}", svc.name);
        let mut seen = BTreeSet::new();
        let mut unchecked = 0;
        for b in &svc.backends {
            let Some(check) = config.checks.get(&b.id) else {
                unchecked += 1;
                continue;
            };
            // Passive reports exist in socket mode and, in DPDK mode, for NAT only: in DR
            // the backends' ICMP errors go to the clients.
            let passive = svc.passive
                && (config.runtime.dataplane == DataplaneKind::Socket || svc.mode == Mode::Nat);
            let warning = match &check.probe {
                Probe::Udp {
                    require_reply: false,
                    echo: false,
                    ..
                } => Some(format!(
                    "{key}: a udp check with echo = false that needs no reply cannot see a \
                     dead or unplugged host: silence counts as health"
                )),
                Probe::Udp {
                    require_reply: false,
                    ..
                } if !passive && config.runtime.dataplane == DataplaneKind::Socket => {
                    Some(format!(
                        "{key}: passive = false: a dead receiver is seen only by the checks, \
                         whose icmp errors the backend's kernel rate-limits together with the \
                         data's (one a second per peer): under load it may never be seen"
                    ))
                }
                Probe::Icmp if passive => Some(format!(
                    "{key}: an icmp check cannot see a dead receiver process: passive \
                     detection takes the backend down on the first icmp error for data, but \
                     the next echo brings it back; use a udp, tcp or http check"
                )),
                Probe::Icmp => Some(format!(
                    "{key}: an icmp check cannot see a dead receiver process, and nothing \
                     else does here (no passive detection); use a udp, tcp or http check"
                )),
                _ => None,
            };
            if let Some(w) = warning {
                if seen.insert(w.clone()) {
                    out.push(w);
                }
            }
        }
        if unchecked > 0 {
            out.push(format!(
                "{key}: {unchecked} of {} backend(s) have no health check: a dead one keeps \
                 its share of the datagrams (add [{key}.check])",
                svc.backends.len()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Machine;

    fn spots(src: &str) -> Vec<String> {
        blind_spots(&Config::parse("t.toml", src, &Machine { cores: vec![0] }).unwrap())
    }

    const SVC: &str = r#"
[services.s]
vip = "198.18.0.10:514"
backends = [{ addr = "198.18.2.11:514" }, { addr = "198.18.2.12:514" }]
"#;

    #[test]
    fn the_readme_config_has_no_blind_spot() {
        let src = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/examples/syslog.toml"
        ))
        .unwrap();
        assert_eq!(spots(&src), Vec::<String>::new());
        let tcp = format!("{SVC}[services.s.check]\ntype = \"tcp\"\n");
        assert_eq!(spots(&tcp), Vec::<String>::new());
    }

    #[test]
    fn each_blind_spot_is_named_once_per_service() {
        let no_echo = format!("{SVC}[services.s.check]\ntype = \"udp\"\necho = false\n");
        let w = spots(&no_echo);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("services.s: a udp check with echo = false"),
            "{w:?}"
        );

        let not_passive = SVC.replace("backends", "passive = false\nbackends")
            + "[services.s.check]\ntype = \"udp\"\n";
        assert!(spots(&not_passive)[0].contains("passive = false"));

        let icmp = format!("{SVC}[services.s.check]\ntype = \"icmp\"\n");
        assert!(spots(&icmp)[0].contains("icmp check cannot see a dead receiver process"));

        let w = spots(SVC);
        assert_eq!(
            w,
            [
                "services.s: 2 of 2 backend(s) have no health check: a dead one keeps its share \
              of the datagrams (add [services.s.check])"
            ]
        );
    }
}
