//! Forwarding into itself: a service whose backend (or fallback) is a VIP of this Spray. If it
//! leads back to the service, each lap opens a new session and sends the datagram again, so
//! one datagram becomes an endless stream. Even a chain that ends at a server is refused:
//! at run time a datagram that reaches a VIP from one of Spray's own session sockets is
//! dropped (counted as `loop`), because the dataplane cannot tell a chain from a loop.

use std::net::{IpAddr, SocketAddr};

/// One service as the loop search sees it.
#[derive(Debug)]
pub struct Node<'a> {
    /// The service's name.
    pub name: &'a str,
    /// Its VIP.
    pub vip: SocketAddr,
    /// Where it sends datagrams: a label (`backends[0]`, `fallback`) and the address.
    pub targets: Vec<(String, SocketAddr)>,
}

impl<'a> Node<'a> {
    /// The node of service `name` at `vip` that sends to `backends` (labelled by their place
    /// in the list) and to its `fallback`, if any.
    pub fn new(
        name: &'a str,
        vip: SocketAddr,
        backends: impl Iterator<Item = SocketAddr>,
        fallback: Option<SocketAddr>,
    ) -> Self {
        let targets = backends
            .enumerate()
            .map(|(i, addr)| (format!("backends[{i}]"), addr))
            .chain(fallback.map(|addr| ("fallback".to_owned(), addr)))
            .collect();
        Self { name, vip, targets }
    }
}

/// One step of a loop: `from`'s target `label` at `addr` reaches service `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Index of the sending service.
    pub from: usize,
    /// The target's label, as in [`Node::targets`].
    pub label: String,
    /// The target's address.
    pub addr: SocketAddr,
    /// Index of the service whose VIP receives it.
    pub to: usize,
}

fn canonical(a: &SocketAddr) -> (IpAddr, u16) {
    (a.ip().to_canonical(), a.port())
}

/// Whether a datagram sent to `target` arrives at `vip`: the same address, or a wildcard VIP
/// of the same family and port and a target that is this host (loopback, or one of the
/// VIPs' addresses in `local`).
pub fn reaches(target: &SocketAddr, vip: &SocketAddr, local: &[IpAddr]) -> bool {
    let ((t, tp), (v, vp)) = (canonical(target), canonical(vip));
    if tp != vp {
        return false;
    }
    if t == v {
        return true;
    }
    v.is_unspecified()
        && t.is_ipv4() == v.is_ipv4()
        && (t.is_loopback() || t.is_unspecified() || local.contains(&t))
}

/// A loop, as the hops that close it, or else the first hop into a VIP of this table;
/// `None` when every target is outside.
pub fn find(nodes: &[Node<'_>]) -> Option<Vec<Hop>> {
    let local: Vec<IpAddr> = nodes.iter().map(|n| canonical(&n.vip).0).collect();
    let edges: Vec<Vec<Hop>> = nodes
        .iter()
        .enumerate()
        .map(|(from, n)| {
            n.targets
                .iter()
                .flat_map(|(label, addr)| {
                    nodes
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| reaches(addr, &m.vip, &local))
                        .map(|(to, _)| Hop {
                            from,
                            label: label.clone(),
                            addr: *addr,
                            to,
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .collect();
    // Depth-first search; a hop back to a service on the current path closes a loop.
    #[derive(Clone, Copy, PartialEq)]
    enum Seen {
        No,
        OnPath,
        Done,
    }
    fn visit(at: usize, edges: &[Vec<Hop>], seen: &mut [Seen], path: &mut Vec<Hop>) -> bool {
        seen[at] = Seen::OnPath;
        for hop in &edges[at] {
            path.push(hop.clone());
            let next = seen[hop.to];
            if next == Seen::OnPath {
                let start = path.iter().position(|h| h.from == hop.to).unwrap_or(0);
                path.drain(..start);
                return true;
            }
            if next == Seen::No && visit(hop.to, edges, seen, path) {
                return true;
            }
            path.pop();
        }
        seen[at] = Seen::Done;
        false
    }
    let mut seen = vec![Seen::No; nodes.len()];
    for start in 0..nodes.len() {
        let mut path = Vec::new();
        if seen[start] == Seen::No && visit(start, &edges, &mut seen, &mut path) {
            return Some(path);
        }
    }
    edges.into_iter().flatten().next().map(|hop| vec![hop])
}

/// Says what the loop `hops` does, naming every service and target on it.
pub fn describe(nodes: &[Node<'_>], hops: &[Hop], prefix: &str) -> String {
    let steps: Vec<String> = hops
        .iter()
        .map(|h| {
            let to = &nodes[h.to];
            format!(
                "{prefix}{}.{} {} reaches the vip {} of {prefix}{}",
                nodes[h.from].name, h.label, h.addr, to.vip, to.name
            )
        })
        .collect();
    let closed = hops.first().map(|h| h.from) == hops.last().map(|h| h.to);
    let what = if closed {
        "a forwarding loop, each datagram would be sent again and again"
    } else {
        "datagrams would come back into this spray, which drops them as a loop"
    };
    format!(
        "{}: {what}; a backend must be a server, not a vip of this spray",
        steps.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node<'a>(name: &'a str, vip: &str, targets: &[&str]) -> Node<'a> {
        Node {
            name,
            vip: vip.parse().unwrap(),
            targets: targets
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("backends[{i}]"), t.parse().unwrap()))
                .collect(),
        }
    }

    #[test]
    fn a_chain_is_one_hop_a_cycle_is_the_whole_loop() {
        let apart = [
            node("a", "198.18.0.10:514", &["198.18.2.10:514"]),
            node("b", "198.18.0.11:514", &["198.18.2.11:514"]),
        ];
        assert_eq!(find(&apart), None);
        let chain = [
            node("a", "198.18.0.10:514", &["198.18.0.11:514"]),
            node("b", "198.18.0.11:514", &["198.18.2.11:514"]),
        ];
        let hops = find(&chain).unwrap();
        assert_eq!(
            describe(&chain, &hops, "services."),
            "services.a.backends[0] 198.18.0.11:514 reaches the vip 198.18.0.11:514 of \
             services.b: datagrams would come back into this spray, which drops them as a \
             loop; a backend must be a server, not a vip of this spray"
        );
        let cycle = [
            node(
                "a",
                "198.18.0.10:514",
                &["198.18.2.11:514", "198.18.0.11:514"],
            ),
            node("b", "198.18.0.11:514", &["198.18.0.10:514"]),
        ];
        let hops = find(&cycle).unwrap();
        assert_eq!(
            hops.iter().map(|h| (h.from, h.to)).collect::<Vec<_>>(),
            [(0, 1), (1, 0)]
        );
        assert_eq!(
            describe(&cycle, &hops, "services."),
            "services.a.backends[1] 198.18.0.11:514 reaches the vip 198.18.0.11:514 of \
             services.b, services.b.backends[0] 198.18.0.10:514 reaches the vip \
             198.18.0.10:514 of services.a: a forwarding loop, each datagram would be sent \
             again and again; a backend must be a server, not a vip of this spray"
        );
    }

    #[test]
    fn its_own_backend_a_mapped_address_and_a_wildcard_are_loops() {
        let own = [node("a", "198.18.0.10:514", &["198.18.0.10:514"])];
        assert_eq!(find(&own).unwrap().len(), 1);
        let mapped = [node("a", "198.18.0.10:514", &["[::ffff:198.18.0.10]:514"])];
        assert!(find(&mapped).is_some());
        // A wildcard VIP catches loopback and the other VIPs' addresses on its port.
        let wild = [node("a", "0.0.0.0:5514", &["127.0.0.1:5514"])];
        assert!(find(&wild).is_some());
        let via = [
            node("a", "0.0.0.0:5514", &["198.18.0.11:5514"]),
            node("b", "198.18.0.11:5515", &["198.18.2.1:5514"]),
        ];
        assert!(find(&via).is_some(), "198.18.0.11 is this host's address");
        // Another port, another family, or a remote server: no loop.
        for t in ["127.0.0.1:5515", "[::1]:5514", "198.18.2.1:5514"] {
            assert_eq!(find(&[node("a", "0.0.0.0:5514", &[t])]), None, "{t}");
        }
    }
}
