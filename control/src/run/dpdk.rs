//! `spray run` with the DPDK dataplane: EAL, ports, mempools, queues, pinned workers, and a
//! clean stop.
//!
//! Order, as in DPDK's l3fwd: everything fallible happens before the first packet.
//! 1. EAL from `[dpdk]` ([`eal_args`]);
//! 2. each `[[dpdk.ports]]`: configure N queue pairs (RSS on the UDP 4-tuple where the
//!    device has it), create its mempool, set up the queues, start, read the link;
//! 3. one worker thread per queue pair: it pins itself to its core, registers with EAL (so
//!    it has an lcore id and the mempool's per-lcore cache), builds its
//!    [`Worker<DpdkPort>`] and reports ready. Workers start polling only when all are ready.
//!
//! Then the control plane, the same as in socket mode ([`super::serve`]): one
//! [`crate::state::Controller`] fed each worker's snapshot channel and counters runs the
//! health checks and neighbour resolution and is the only publisher of snapshots; the
//! control socket, metrics and SIGHUP reload talk to it. Each port's workers queue the
//! ARP/NDP frames they do not answer themselves on one bounded channel to the controller,
//! and the port's first worker sends what the controller wants sent (requests,
//! announcements) from its own channel ([`dataplane::neigh`]).
//!
//! On SIGINT/SIGTERM: stop flag, stop the controller, join the workers (their mbufs free
//! themselves as each `Worker` drops), stop and close each port, check that its mempool is
//! full again (a leak is an error), `rte_eal_cleanup`.
//!
//! The EAL main lcore is the control thread; `--lcores 0@(all cores)` leaves it free to run
//! on any core instead of pinning it next to a worker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::path::Path;

use crossbeam_channel::{Receiver, Sender};
use dataplane::counters::{SharedCounters, WorkerCounters};
use dataplane::flow::NatFlows;
use dataplane::neigh::{NeighConfig, NeighFrame, WorkerNeigh};
use dataplane::port::dpdk::eal::{register_thread, EalError};
use dataplane::port::dpdk::ethdev::EthError;
use dataplane::port::dpdk::{Eal, EthPort};
use dataplane::service::{MacAddr, Snapshot};
use dataplane::socket::PassiveSink;
use dataplane::worker::{Worker, WorkerSettings};

use crate::config::dpdk::DpdkPortConfig;
use crate::config::{Config, DpdkSettings, Machine};
use crate::report;
use crate::state::{Links, NeighLink, PortNeighbours, State, NEIGH_TO_CONTROL, NEIGH_TO_WORKER};

/// Slots of the table that remembers which VIP a NAT flow came through (shared by workers).
const NAT_FLOW_SLOTS: usize = 1 << 16;

/// Error from starting, running or stopping the DPDK dataplane.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// EAL set-up failed.
    #[error(transparent)]
    Eal(#[from] EalError),
    /// A port could not be set up or closed.
    #[error(transparent)]
    Port(#[from] EthError),
    /// A worker could not register with EAL.
    #[error("worker {worker}")]
    Register {
        /// Worker index.
        worker: usize,
        /// Why.
        #[source]
        source: EalError,
    },
    /// A worker panicked (a Spray bug).
    #[error("worker {worker} panicked")]
    Panicked {
        /// Worker index.
        worker: usize,
    },
    /// The control plane (controller, control socket, metrics, signals) failed.
    #[error(transparent)]
    Control(#[from] super::RunError),
    /// Mbufs did not come back to a port's mempool (a Spray bug).
    #[error("dpdk port {device:?}: {missing} mbuf(s) of {size} did not come back to the mempool")]
    Leak {
        /// The device.
        device: String,
        /// Mbufs missing.
        missing: u32,
        /// Pool size.
        size: u32,
    },
    /// `rte_eal_cleanup` failed.
    #[error("cannot clean up the DPDK EAL: {0}")]
    Cleanup(String),
}

/// EAL's command line for `d` on `machine` (without the program name).
pub fn eal_args(d: &DpdkSettings, machine: &Machine) -> Vec<String> {
    let mut a = Vec::new();
    let cores = if machine.cores.is_empty() {
        "0".to_owned()
    } else {
        machine
            .cores
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    a.extend(["--lcores".to_owned(), format!("0@({cores})")]);
    let prefix = d
        .file_prefix
        .clone()
        .unwrap_or_else(|| format!("spray-{}", std::process::id()));
    a.extend(["--file-prefix".to_owned(), prefix]);
    a.extend(["-m".to_owned(), d.memory_mb.to_string()]);
    if d.no_huge {
        a.push("--no-huge".to_owned());
    } else {
        // Page files are unlinked once mapped, so a crash leaves none behind.
        a.push("--huge-unlink".to_owned());
        if let Some(dir) = &d.huge_dir {
            a.extend(["--huge-dir".to_owned(), dir.display().to_string()]);
        }
    }
    if d.allow.is_empty() {
        a.push("--no-pci".to_owned());
    }
    for pci in &d.allow {
        a.extend(["-a".to_owned(), pci.clone()]);
    }
    for v in &d.vdevs {
        a.extend(["--vdev".to_owned(), v.clone()]);
    }
    a.extend(d.eal_args.iter().cloned());
    a
}

/// Running DPDK workers and what the control thread keeps of them.
struct Workers {
    stop: Arc<AtomicBool>,
    counters: Vec<SharedCounters>,
    // Kept for reloads and health updates; dropping them would disconnect the workers.
    updates: Vec<Sender<Arc<Snapshot>>>,
    handles: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Workers {
    fn stop_and_join(&mut self) -> Result<(), StartupError> {
        self.stop.store(true, Ordering::Relaxed);
        let mut first = Ok(());
        for (worker, h) in self.handles.drain(..).enumerate() {
            if h.join().is_err() && first.is_ok() {
                first = Err(StartupError::Panicked { worker });
            }
        }
        self.updates.clear();
        first
    }

    fn any_finished(&self) -> bool {
        self.handles.iter().any(JoinHandle::is_finished)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Starts one worker per queue pair of `ports` and waits until each is ready.
fn start_workers(
    config: &Config,
    machine: &Machine,
    ports: &[EthPort],
    mut neigh: Vec<WorkerEnds>,
    passive: &PassiveSink,
    snapshot: &Arc<Snapshot>,
    stop: &Arc<AtomicBool>,
) -> Result<Workers, StartupError> {
    let d = &config.dpdk;
    let total = d.workers();
    let mut w = Workers {
        stop: Arc::clone(stop),
        counters: Vec::with_capacity(total),
        updates: Vec::with_capacity(total),
        handles: Vec::with_capacity(total),
        started: Instant::now(),
    };
    let nat_flows = Arc::new(NatFlows::new(NAT_FLOW_SLOTS));
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(total.max(1));
    let mut id = 0usize;
    for ((port, pc), ends) in ports.iter().zip(&d.ports).zip(&mut neigh) {
        for q in 0..port.queues() {
            let core = match &d.cores {
                Some(c) => c.get(id).copied(),
                None if machine.cores.is_empty() => None,
                None => Some(machine.cores[id % machine.cores.len()]),
            };
            let dp = port.queue(q).expect("q < queues");
            let settings = WorkerSettings {
                burst: usize::from(pc.ethdev.burst),
                gateway_mac: pc.gateway_mac.unwrap_or(MacAddr::default()),
                idle: d.idle,
            };
            let (tx, rx) = crossbeam_channel::unbounded();
            let counters = WorkerCounters::shared();
            let (snap, wc, stop, flows, ready) = (
                Arc::clone(snapshot),
                Arc::clone(&counters),
                Arc::clone(stop),
                Arc::clone(&nat_flows),
                ready_tx.clone(),
            );
            let device = port.device().to_owned();
            // Every worker of the port queues to the controller; the first one also sends
            // what the controller wants sent.
            let wn = WorkerNeigh {
                local_v4: pc.ipv4,
                local_v6: pc.ipv6,
                to_control: Some(ends.to_control.clone()),
                from_control: ends.from_control.take(),
            };
            let passive = passive.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("spray-dpdk-{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                            let _ =
                                ready.send(Err(super::RunError::Pin { worker: id, core }.into()));
                            return;
                        }
                    }
                    // Declared before the worker so it is dropped after it: the worker's
                    // mbufs go back while this thread is still a registered lcore.
                    let lcore = match register_thread() {
                        Ok(g) => g,
                        Err(source) => {
                            let _ = ready.send(Err(StartupError::Register { worker: id, source }));
                            return;
                        }
                    };
                    let mut worker = Worker::new(dp, settings, snap, rx, wc, flows);
                    worker.set_neigh(wn);
                    worker.set_passive_reports(Some(passive));
                    tracing::info!(
                        worker = id,
                        ?core,
                        lcore = lcore.lcore_id(),
                        device = %device,
                        queue = q,
                        "dpdk worker started"
                    );
                    let _ = ready.send(Ok(()));
                    drop(ready);
                    worker.run(&stop);
                    drop(worker);
                    tracing::info!(worker = id, "dpdk worker stopped");
                    drop(lcore);
                });
            match spawned {
                Ok(h) => {
                    w.handles.push(h);
                    w.counters.push(counters);
                    w.updates.push(tx);
                }
                Err(source) => {
                    let _ = w.stop_and_join();
                    return Err(super::RunError::Spawn { worker: id, source }.into());
                }
            }
            id += 1;
        }
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..total {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => break, // a worker died before reporting: join tells
        }
    }
    if let Some(e) = failure {
        let _ = w.stop_and_join();
        return Err(e);
    }
    w.started = Instant::now();
    Ok(w)
}

/// The workers' ends of one port's neighbour queues.
struct WorkerEnds {
    to_control: Sender<NeighFrame>,
    /// Taken by the port's first worker.
    from_control: Option<Receiver<NeighFrame>>,
}

/// The neighbour settings of port `pc`, whose MAC is `mac`.
pub fn neigh_config(pc: &DpdkPortConfig, mac: MacAddr) -> NeighConfig {
    let mut c = NeighConfig::new(mac);
    c.vlan = pc.vlan;
    c.local_v4 = pc.ipv4;
    c.local_v6 = pc.ipv6;
    c.prefix_v4 = pc.ipv4_prefix;
    c.prefix_v6 = pc.ipv6_prefix;
    // A static gateway_mac overrides resolution: nothing to resolve then.
    if pc.gateway_mac.is_none() {
        c.gateway_v4 = pc.gateway_ipv4;
        c.gateway_v6 = pc.gateway_ipv6;
    }
    c
}

/// `spray run` with `runtime.dataplane = "dpdk"` for `config` (read from `path`): see the
/// module docs.
///
/// # Errors
/// When EAL, a port, a worker or the control plane cannot start, a worker panics, or mbufs
/// leaked.
pub fn run(
    config: &Config,
    path: &Path,
    stats_interval: Option<Duration>,
) -> Result<(), StartupError> {
    let machine = Machine::current();
    let mut state = State::new(config.clone(), 1, Instant::now())
        .map_err(|e| StartupError::Control(super::RunError::Controller(e)))?;
    let stop = Arc::new(AtomicBool::new(false));
    super::stop_on_signals(&stop)?;
    let args = eal_args(&config.dpdk, &machine);
    tracing::info!(args = %args.join(" "), "initialising the DPDK EAL");
    let eal = Eal::init(&args)?;
    let mut ports = Vec::with_capacity(config.dpdk.ports.len());
    let mut neigh = Vec::with_capacity(config.dpdk.ports.len());
    let mut ends = Vec::with_capacity(config.dpdk.ports.len());
    let mut links = Vec::with_capacity(config.dpdk.ports.len());
    for pc in &config.dpdk.ports {
        let port = EthPort::open(&eal, &pc.device, &pc.ethdev)?;
        let link = port.link();
        let (_, pool) = port.pool_level();
        if pc.ethdev.share_copies && !port.shares_copies() {
            tracing::warn!(
                "dpdk port {}: mirror_payload = \"share\", but the device does not send \
                 multi-segment frames: copies for mirror pools are full copies",
                pc.device
            );
        }
        let addrs: Vec<String> = [
            pc.ipv4.map(|a| a.to_string()),
            pc.ipv6.map(|a| a.to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        println!(
            "spray: dpdk port {} (port {}): mac {}, {} queue pair(s), rss {}, rx ipv4 checksum \
             offload {}, mirror payload {}, link {} {} Mbit/s, mempool {pool} mbufs, address(es) {}",
            port.device(),
            port.id(),
            port.mac(),
            port.queues(),
            if port.rss() { "on" } else { "off" },
            if port.rx_ip_checksum() { "on" } else { "off" },
            if port.shares_copies() {
                "share"
            } else {
                "copy"
            },
            if link.up { "up" } else { "down" },
            link.speed_mbps,
            if addrs.is_empty() {
                "none".to_owned()
            } else {
                addrs.join(", ")
            }
        );
        neigh.push(PortNeighbours::new(
            port.device(),
            neigh_config(pc, port.mac()),
            pc.gateway_mac,
        ));
        let (to_control, from_workers) = crossbeam_channel::bounded(NEIGH_TO_CONTROL);
        let (to_worker, from_control) = crossbeam_channel::bounded(NEIGH_TO_WORKER);
        ends.push(WorkerEnds {
            to_control,
            from_control: Some(from_control),
        });
        links.push(NeighLink {
            from_workers,
            to_worker,
        });
        ports.push(port);
    }
    state
        .set_neighbours(neigh, Instant::now())
        .map_err(|e| StartupError::Control(super::RunError::Controller(e)))?;
    let snapshot = Arc::clone(state.snapshot());
    // Workers report ICMP errors from backends of passive services, as in socket mode.
    let (passive_tx, passive_rx) = crate::state::passive_channel();
    let mut workers = start_workers(
        config,
        &machine,
        &ports,
        ends,
        &passive_tx,
        &snapshot,
        &stop,
    )?;
    let served = super::serve(
        config,
        state,
        Links {
            updates: workers.updates.clone(),
            counters: workers.counters.clone(),
            passive: Some(passive_rx),
            source: Some((path.to_owned(), machine.clone())),
            neigh: links,
        },
        &format!("{} dpdk worker(s)", workers.handles.len()),
        &stop,
        &|| workers.any_finished(),
        stats_interval,
    );
    let joined = workers.stop_and_join();
    let mut result = match served {
        Ok(snapshot) => {
            print!(
                "{}",
                report::summary(&snapshot, &workers.counters, workers.started.elapsed())
            );
            joined
        }
        Err(e) => Err(e.into()),
    };
    for port in ports {
        let device = port.device().to_owned();
        let missed = port.rx_missed();
        match port.close() {
            Ok((free, size)) => {
                println!(
                    "spray: dpdk port {device}: closed, mempool {free}/{size} mbufs free, \
                     {missed} missed on rx"
                );
                if free != size && result.is_ok() {
                    result = Err(StartupError::Leak {
                        device,
                        missing: size - free,
                        size,
                    });
                }
            }
            Err(e) => {
                if result.is_ok() {
                    result = Err(e.into());
                }
            }
        }
    }
    drop(workers);
    eal.cleanup().map_err(StartupError::Cleanup)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eal_args_from_the_config() {
        let m = Machine { cores: vec![0, 1] };
        let mut d = DpdkSettings {
            file_prefix: Some("t".into()),
            no_huge: true,
            vdevs: vec!["net_null0".into()],
            eal_args: vec!["--log-level=warning".into()],
            ..DpdkSettings::default()
        };
        assert_eq!(
            eal_args(&d, &m).join(" "),
            "--lcores 0@(0,1) --file-prefix t -m 256 --no-huge --no-pci --vdev net_null0 \
             --log-level=warning"
        );
        d.no_huge = false;
        d.huge_dir = Some("/mnt/huge".into());
        d.file_prefix = None;
        d.allow = vec!["0000:01:00.0".into()];
        d.vdevs.clear();
        d.eal_args.clear();
        assert_eq!(
            eal_args(&d, &m).join(" "),
            format!(
                "--lcores 0@(0,1) --file-prefix spray-{} -m 256 --huge-unlink --huge-dir \
                 /mnt/huge -a 0000:01:00.0",
                std::process::id()
            )
        );
    }
}
