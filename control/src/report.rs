//! What Spray prints for people: the service table of `spray check` (shaped like
//! `ipvsadm -L -n`), the periodic stats line of `spray run` and its summary on exit.
//!
//! Everything here reads counters and specs and returns text; nothing writes to a terminal,
//! so the formats are unit-tested.

use std::fmt::Write as _;
use std::time::Duration;

use dataplane::counters::{DropReason, SharedCounters};
use dataplane::service::{Mode, ServiceSpec, Snapshot};

/// `ipvsadm -L -n`-style listing of `services`.
pub fn services_table(services: &[ServiceSpec]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Prot {:<34} {:<9} Service",
        "LocalAddress:Port", "Scheduler"
    );
    let _ = writeln!(s, "  -> {:<34}Forward Weight MAC", "RemoteAddress:Port");
    for svc in services {
        let _ = writeln!(
            s,
            "UDP  {:<34} {:<9} {}",
            svc.vip.addr.to_string(),
            svc.scheduler.name(),
            svc.name
        );
        let forward = match svc.mode {
            Mode::Nat => "Masq",
            Mode::Dr => "Route",
        };
        let backend = |s: &mut String, b: &dataplane::service::Backend| {
            let mac = b.mac.map_or_else(|| "-".to_owned(), |m| m.to_string());
            let _ = writeln!(
                s,
                "  -> {:<34}{:<8}{:<7}{mac}",
                b.addr.to_string(),
                forward,
                b.weight
            );
        };
        for b in &svc.backends {
            backend(&mut s, b);
        }
        // A mirror pool is listed as ipvsadm would list a second service on the same VIP.
        for m in &svc.mirrors {
            let _ = writeln!(
                s,
                "COPY {:<34} {:<9} {} mirror {} (1/{} of its datagrams)",
                svc.vip.addr.to_string(),
                m.scheduler.name(),
                svc.name,
                m.name,
                m.sample
            );
            for b in &m.backends {
                backend(&mut s, b);
            }
        }
    }
    s
}

/// Counters of all workers added up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Packets received, all workers.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// NAT replies rewritten back to their VIP.
    pub nat_replies: u64,
    /// Drops by reason, in [`DropReason::ALL`] order.
    pub drops: [u64; DropReason::ALL.len()],
}

impl Totals {
    /// Adds up the counters of every worker.
    pub fn collect(counters: &[SharedCounters]) -> Self {
        let mut t = Totals::default();
        for c in counters {
            t.rx_packets += c.rx_packets.get();
            t.rx_bytes += c.rx_bytes.get();
            t.tx_packets += c.tx_packets.get();
            t.tx_bytes += c.tx_bytes.get();
            t.nat_replies += c.nat_replies.get();
            for (d, r) in t.drops.iter_mut().zip(DropReason::ALL) {
                *d += c.dropped(r);
            }
        }
        t
    }

    /// Sum of all drops.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// `name count` for every reason with a non-zero count, or `none`.
    pub fn drops_by_reason(&self) -> String {
        let v: Vec<String> = DropReason::ALL
            .iter()
            .zip(self.drops)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{} {n}", r.name()))
            .collect();
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    }
}

fn rate(n: u64, dt: Duration) -> u64 {
    let secs = dt.as_secs_f64();
    if secs > 0.0 {
        (n as f64 / secs).round() as u64
    } else {
        0
    }
}

/// One line of progress: totals and rates since `prev`, `dt` ago.
pub fn progress_line(prev: &Totals, now: &Totals, dt: Duration) -> String {
    format!(
        "stats: rx {} pkts ({}/s), tx {} pkts ({}/s), nat replies {}, drops {} ({})",
        now.rx_packets,
        rate(now.rx_packets.saturating_sub(prev.rx_packets), dt),
        now.tx_packets,
        rate(now.tx_packets.saturating_sub(prev.tx_packets), dt),
        now.nat_replies,
        now.dropped(),
        now.drops_by_reason()
    )
}

/// The summary printed when `spray run` stops: totals, per VIP, per backend, drops by
/// reason.
pub fn summary(snapshot: &Snapshot, counters: &[SharedCounters], elapsed: Duration) -> String {
    let t = Totals::collect(counters);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "spray ran {:.1} s on {} worker(s): rx {} pkts {} bytes, tx {} pkts {} bytes, nat replies {}",
        elapsed.as_secs_f64(),
        counters.len(),
        t.rx_packets,
        t.rx_bytes,
        t.tx_packets,
        t.tx_bytes,
        t.nat_replies
    );
    let _ = writeln!(
        s,
        "Prot {:<34}{:>8} {:>11}",
        "LocalAddress:Port", "Packets", "Bytes"
    );
    let _ = writeln!(
        s,
        "  -> {:<34}{:>8} {:>11}",
        "RemoteAddress:Port", "Packets", "Bytes"
    );
    for svc in snapshot.services() {
        let (p, b) = counters.iter().fold((0, 0), |(p, b), c| {
            let (cp, cb) = c.vip(svc.spec.id);
            (p + cp, b + cb)
        });
        let _ = writeln!(
            s,
            "UDP  {:<34}{p:>8} {b:>11}  {}",
            svc.spec.vip.addr.to_string(),
            svc.spec.name
        );
        for be in &svc.spec.backends {
            let (p, b) = counters.iter().fold((0, 0), |(p, b), c| {
                let (cp, cb) = c.backend(be.id);
                (p + cp, b + cb)
            });
            let _ = writeln!(s, "  -> {:<34}{p:>8} {b:>11}", be.addr.to_string());
        }
        for m in &svc.spec.mirrors {
            let _ = writeln!(s, "COPY {:<34}  {} mirror {}", "", svc.spec.name, m.name);
            for be in &m.backends {
                let (p, b) = counters.iter().fold((0, 0), |(p, b), c| {
                    let (cp, cb) = c.backend(be.id);
                    (p + cp, b + cb)
                });
                let _ = writeln!(s, "  -> {:<34}{p:>8} {b:>11}", be.addr.to_string());
            }
        }
    }
    let _ = writeln!(s, "drops by reason:");
    for (r, n) in DropReason::ALL.iter().zip(t.drops) {
        let _ = writeln!(s, "  {:<20}{n:>10}", r.name());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::counters::WorkerCounters;
    use dataplane::sched::SchedulerKind;
    use dataplane::service::{Backend, BackendId, VipId, VipKey};

    fn spec() -> ServiceSpec {
        ServiceSpec {
            id: VipId(0),
            name: "syslog".into(),
            vip: VipKey::udp("198.18.0.10:514".parse().unwrap()),
            mode: Mode::Nat,
            scheduler: SchedulerKind::Rr,
            backends: vec![
                Backend::new(BackendId(0), "198.18.1.1:514".parse().unwrap(), 1),
                Backend::new(BackendId(1), "198.18.1.2:514".parse().unwrap(), 2),
            ],
            fallback: None,
            passive: false,
            mirrors: Vec::new(),
        }
    }

    #[test]
    fn table_lists_vip_and_backends() {
        let t = services_table(&[spec()]);
        assert!(t.contains("UDP  198.18.0.10:514"), "{t}");
        assert!(t.contains("  -> 198.18.1.2:514"), "{t}");
        assert!(t.contains("Masq    2"), "{t}");
    }

    #[test]
    fn a_mirror_pool_is_listed_after_its_service_with_its_backends() {
        let mut s = spec();
        let mut b = dataplane::service::Backend::new(
            dataplane::service::BackendId(9),
            "198.18.3.1:514".parse().unwrap(),
            1,
        );
        b.mac = Some("02:00:00:00:03:01".parse().unwrap());
        let mut pool = dataplane::service::MirrorSpec::new(
            "archive",
            dataplane::sched::SchedulerKind::Maglev,
            vec![b],
        );
        pool.sample = 10;
        s.mirrors.push(pool);
        let t = services_table(&[s]);
        let lines: Vec<&str> = t.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with("COPY 198.18.0.10:514"))
            .unwrap_or_else(|| panic!("{t}"));
        assert!(lines[at].contains("maglev"), "{t}");
        assert!(lines[at].contains("syslog mirror archive (1/10"), "{t}");
        assert!(
            lines[at + 1].contains("198.18.3.1:514") && lines[at + 1].contains("02:00:00:00:03:01"),
            "{t}"
        );
        assert!(at > 2, "after the service's own backends: {t}");
    }

    #[test]
    fn totals_and_summary_add_up_workers() {
        let a = WorkerCounters::shared();
        let b = WorkerCounters::shared();
        a.rx_packets.add(2);
        b.rx_packets.add(3);
        a.vip_packet(VipId(0), 10);
        b.vip_packet(VipId(0), 10);
        b.backend_packet(BackendId(1), 10);
        b.drop_packet(DropReason::NoVip);
        let counters = [a, b];
        let t = Totals::collect(&counters);
        assert_eq!(t.rx_packets, 5);
        assert_eq!(t.drops_by_reason(), "no_vip 1");
        let snap = Snapshot::new(1, vec![spec()]).unwrap();
        let s = summary(&snap, &counters, Duration::from_secs(1));
        let rows: Vec<Vec<&str>> = s.lines().map(|l| l.split_whitespace().collect()).collect();
        let has = |row: &[&str]| rows.iter().any(|r| r == row);
        assert!(has(&["UDP", "198.18.0.10:514", "2", "20", "syslog"]), "{s}");
        assert!(has(&["->", "198.18.1.2:514", "1", "10"]), "{s}");
        assert!(has(&["no_vip", "1"]), "{s}");
        assert!(has(&["tx_full", "0"]), "{s}");
        let line = progress_line(&Totals::default(), &t, Duration::from_secs(1));
        assert!(line.starts_with("stats: rx 5 pkts (5/s)"), "{line}");
    }
}
