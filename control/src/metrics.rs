//! Prometheus metrics over HTTP (`[metrics] listen`, loopback by default).
//!
//! Everything is read at scrape time through the [`Controller`] (`list` and `stats`), so
//! the metrics and `spray ctl` can never disagree, and the dataplane does no work for them.
//! The exposition format is `prometheus-client`'s OpenMetrics text encoder; `tiny_http`
//! serves `GET /metrics` (anything else is 404).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `spray_vip_packets_total`, `spray_vip_bytes_total` | counter | `service`, `vip` |
//! | `spray_backend_packets_total`, `spray_backend_bytes_total` | counter | `service`, `vip`, `backend` |
//! | `spray_service_backends_in_rotation` | gauge | `service`, `vip` |
//! | `spray_backend_up` | gauge (1 up, 0 down) | `service`, `vip`, `backend` |
//! | `spray_backend_weight`, `spray_backend_effective_weight` | gauge | `service`, `vip`, `backend` |
//! | `spray_backend_check_latency_seconds` | gauge (when a checker runs) | `service`, `vip`, `backend` |
//! | `spray_worker_rx_packets_total`, `..._rx_bytes_total`, `..._tx_packets_total`, `..._tx_bytes_total`, `..._nat_replies_total`, `..._snapshots_applied_total`, `..._bind_errors_total` | counter | `worker` |
//! | `spray_worker_mirror_copies_total`, `..._mirror_no_buffer_total`, `..._mirror_tx_full_total`, `..._mirror_unsent_total` | counter | `worker` |
//! | `spray_mirror_backend_packets_total`, `spray_mirror_backend_bytes_total` | counter | `service`, `vip`, `pool`, `backend` |
//! | `spray_mirror_backend_up` | gauge (1 up, 0 down) | `service`, `vip`, `pool`, `backend` |
//! | `spray_drops_total` | counter | `worker`, `reason` |
//! | `spray_snapshot_generation` | gauge | |
//! | `spray_uptime_seconds` | gauge | |
//! | `spray_health_check_failures_total` | counter | `service`, `vip`, `backend` |
//! | `spray_backend_transitions_total` | counter | `service`, `vip`, `backend`, `to` (`up`, `down`) |
//! | `spray_build_info` | gauge, always 1 | `version`, `features`, `dpdk` |
//! | `process_open_fds`, `process_max_fds`, `process_resident_memory_bytes`, `process_start_time_seconds` | gauge | |
//! | `process_cpu_seconds_total` | counter | |

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::api::{Controller, HealthState, WorkerStats};
use crate::process_stats::ProcessStats;

/// Error from starting the metrics endpoint.
#[derive(Debug, thiserror::Error)]
#[error("metrics.listen {addr}: cannot listen: {message}")]
pub struct MetricsError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why.
    pub message: String,
}

/// Reads the controller at each scrape.
struct SprayCollector(Arc<dyn Controller>);

impl std::fmt::Debug for SprayCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SprayCollector")
    }
}

type Labels = Vec<(&'static str, String)>;

/// `v` as a label value of the text exposition format: backslash, double quote and line
/// feed escaped (the encoder writes values as they are, and one bad name would make the
/// whole scrape unreadable).
fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    if let [(labels, v)] = rows {
        if labels.is_empty() {
            // A lone sample without labels: no `{}` after the name.
            return ConstGauge::new(*v).encode(m);
        }
    }
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for SprayCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let list = self.0.list();
        let stats = self.0.stats();
        let mut vp = Vec::new();
        let mut vb = Vec::new();
        let mut rotation = Vec::new();
        let (mut failures, mut transitions) = (Vec::new(), Vec::new());
        let (mut mp, mut mb, mut mup) = (Vec::new(), Vec::new(), Vec::new());
        let (mut bp, mut bb, mut up, mut w, mut ew, mut lat) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for s in &list.services {
            let name = label_value(&s.name);
            let l: Labels = vec![("service", name.clone()), ("vip", s.vip.to_string())];
            vp.push((l.clone(), s.packets));
            vb.push((l.clone(), s.bytes));
            rotation.push((l, s.in_rotation as f64));
            for b in &s.backends {
                let l: Labels = vec![
                    ("service", name.clone()),
                    ("vip", s.vip.to_string()),
                    ("backend", b.addr.to_string()),
                ];
                bp.push((l.clone(), b.packets));
                bb.push((l.clone(), b.bytes));
                up.push((l.clone(), f64::from(u8::from(b.health == HealthState::Up))));
                w.push((l.clone(), f64::from(b.weight)));
                ew.push((l.clone(), f64::from(b.effective_weight)));
                failures.push((l.clone(), b.check_failures));
                for (to, n) in [("up", b.went_up), ("down", b.went_down)] {
                    let mut l = l.clone();
                    l.push(("to", to.to_owned()));
                    transitions.push((l, n));
                }
                if let Some(s) = b.check_latency_seconds {
                    lat.push((l, s));
                }
            }
            for m in &s.mirrors {
                for b in &m.backends {
                    let l: Labels = vec![
                        ("service", name.clone()),
                        ("vip", s.vip.to_string()),
                        ("pool", label_value(&m.name)),
                        ("backend", b.addr.to_string()),
                    ];
                    mp.push((l.clone(), b.packets));
                    mb.push((l.clone(), b.bytes));
                    mup.push((l, f64::from(u8::from(b.health == HealthState::Up))));
                }
            }
        }
        if !mp.is_empty() {
            counters(
                &mut enc,
                "spray_mirror_backend_packets",
                "Copies sent to a backend of a mirror pool.",
                &mp,
            )?;
            counters(
                &mut enc,
                "spray_mirror_backend_bytes",
                "Bytes of the copies sent to a backend of a mirror pool.",
                &mb,
            )?;
            gauges(
                &mut enc,
                "spray_mirror_backend_up",
                "1 when the health checker says the mirror pool's backend is up.",
                &mup,
            )?;
        }
        counters(
            &mut enc,
            "spray_vip_packets",
            "Datagrams received for a VIP.",
            &vp,
        )?;
        counters(
            &mut enc,
            "spray_vip_bytes",
            "Payload bytes received for a VIP.",
            &vb,
        )?;
        counters(
            &mut enc,
            "spray_backend_packets",
            "Datagrams sent to a backend.",
            &bp,
        )?;
        counters(
            &mut enc,
            "spray_backend_bytes",
            "Payload bytes sent to a backend.",
            &bb,
        )?;
        gauges(
            &mut enc,
            "spray_service_backends_in_rotation",
            "Backends a service sends to; 0: its datagrams go to the fallback or are dropped.",
            &rotation,
        )?;
        gauges(
            &mut enc,
            "spray_backend_up",
            "1 when the health checker says the backend is up.",
            &up,
        )?;
        gauges(
            &mut enc,
            "spray_backend_weight",
            "Configured weight of a backend.",
            &w,
        )?;
        gauges(
            &mut enc,
            "spray_backend_effective_weight",
            "Weight the dataplane uses: 0 when down, drained or disabled.",
            &ew,
        )?;
        if !lat.is_empty() {
            gauges(
                &mut enc,
                "spray_backend_check_latency_seconds",
                "Duration of the last health check of a backend.",
                &lat,
            )?;
        }
        type Field = fn(&WorkerStats) -> u64;
        let fields: [(&str, &str, Field); 11] = [
            (
                "spray_worker_rx_packets",
                "Datagrams a worker read from VIP sockets.",
                |w| w.rx_packets,
            ),
            (
                "spray_worker_rx_bytes",
                "Payload bytes a worker read from VIP sockets.",
                |w| w.rx_bytes,
            ),
            (
                "spray_worker_tx_packets",
                "Datagrams a worker sent toward backends.",
                |w| w.tx_packets,
            ),
            (
                "spray_worker_tx_bytes",
                "Payload bytes a worker sent toward backends.",
                |w| w.tx_bytes,
            ),
            (
                "spray_worker_nat_replies",
                "Backend replies a worker relayed to clients.",
                |w| w.nat_replies,
            ),
            (
                "spray_worker_snapshots_applied",
                "Service table snapshots a worker applied.",
                |w| w.snapshots_applied,
            ),
            (
                "spray_worker_bind_errors",
                "VIP sockets a snapshot update could not bind.",
                |w| w.bind_errors,
            ),
            (
                "spray_worker_mirror_copies",
                "Copies a worker sent to mirror pools.",
                |w| w.mirror_copies,
            ),
            (
                "spray_worker_mirror_no_buffer",
                "Copies for mirror pools a worker had no buffer for.",
                |w| w.mirror_no_buffer,
            ),
            (
                "spray_worker_mirror_tx_full",
                "Copies for mirror pools refused by a full TX ring or send buffer.",
                |w| w.mirror_tx_full,
            ),
            (
                "spray_worker_mirror_unsent",
                "Copies for mirror pools whose backend could not be reached.",
                |w| w.mirror_unsent,
            ),
        ];
        for (name, help, f) in fields {
            let rows: Vec<(Labels, u64)> = stats
                .workers
                .iter()
                .map(|w| (vec![("worker", w.worker.unwrap_or(0).to_string())], f(w)))
                .collect();
            counters(&mut enc, name, help, &rows)?;
        }
        let drops: Vec<(Labels, u64)> = stats
            .workers
            .iter()
            .flat_map(|w| {
                let worker = w.worker.unwrap_or(0).to_string();
                w.drops.iter().map(move |(r, n)| {
                    (vec![("worker", worker.clone()), ("reason", r.clone())], *n)
                })
            })
            .collect();
        counters(
            &mut enc,
            "spray_drops",
            "Datagrams dropped by the dataplane, by reason.",
            &drops,
        )?;
        gauges(
            &mut enc,
            "spray_snapshot_generation",
            "Generation of the service table in force.",
            &[(Vec::new(), stats.generation as f64)],
        )?;
        gauges(
            &mut enc,
            "spray_uptime_seconds",
            "Seconds since the workers started.",
            &[(Vec::new(), stats.uptime_secs)],
        )?;
        counters(
            &mut enc,
            "spray_health_check_failures",
            "Health checks of a backend that failed.",
            &failures,
        )?;
        counters(
            &mut enc,
            "spray_backend_transitions",
            "Changes of a backend's health, by the state it went to.",
            &transitions,
        )?;
        let build: Labels = vec![
            ("version", crate::build_info::VERSION.to_owned()),
            (
                "features",
                if crate::build_info::DPDK {
                    "socket,dpdk"
                } else {
                    "socket"
                }
                .to_owned(),
            ),
            (
                "dpdk",
                crate::build_info::dpdk_version().unwrap_or("").to_owned(),
            ),
        ];
        gauges(
            &mut enc,
            "spray_build_info",
            "Always 1; the labels say what was built.",
            &[(build, 1.0)],
        )?;
        process(&mut enc, &ProcessStats::read())
    }
}

/// The `process_*` metrics that `/proc` gave.
fn process(enc: &mut DescriptorEncoder, p: &ProcessStats) -> Result<(), std::fmt::Error> {
    let g = [
        (
            "process_open_fds",
            "Open file descriptors.",
            p.open_fds.map(|v| v as f64),
        ),
        (
            "process_max_fds",
            "Limit of open file descriptors.",
            p.max_fds.map(|v| v as f64),
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory in bytes.",
            p.resident_bytes.map(|v| v as f64),
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            p.start_time_seconds,
        ),
    ];
    for (name, help, v) in g {
        if let Some(v) = v {
            gauges(enc, name, help, &[(Vec::new(), v)])?;
        }
    }
    if let Some(cpu) = p.cpu_seconds {
        let m = enc.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(cpu).encode(m)?;
    }
    Ok(())
}

/// The metrics text for `ctrl`, as served on `/metrics`.
pub fn render(ctrl: Arc<dyn Controller>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SprayCollector(ctrl)));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!("metrics encoding failed: {e}");
    }
    out
}

/// The running HTTP endpoint; dropping it stops it.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `GET /metrics` on `addr`.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn start(addr: SocketAddr, ctrl: Arc<dyn Controller>) -> Result<Self, MetricsError> {
        let server = tiny_http::Server::http(addr).map_err(|e| MetricsError {
            addr,
            message: e.to_string(),
        })?;
        let bound = server.server_addr().to_ip().unwrap_or(addr);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("spray-metrics".to_owned())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    let req = match server.recv_timeout(Duration::from_millis(200)) {
                        Ok(Some(r)) => r,
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!("metrics listener failed: {e}");
                            std::thread::sleep(Duration::from_millis(200));
                            continue;
                        }
                    };
                    let path = req.url().split('?').next().unwrap_or("");
                    let method = req.method().clone();
                    let head = method == tiny_http::Method::Head;
                    let resp = if (head || method == tiny_http::Method::Get) && path == "/metrics" {
                        let ct = tiny_http::Header::from_bytes(
                            &b"Content-Type"[..],
                            &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
                        )
                        .expect("a valid header");
                        // HEAD gets the headers GET would, without the body (tiny_http
                        // leaves the body out of a HEAD response itself).
                        tiny_http::Response::from_string(render(Arc::clone(&ctrl))).with_header(ct)
                    } else {
                        tiny_http::Response::from_string("spray: metrics are at /metrics\n")
                            .with_status_code(404)
                    };
                    let _ = req.respond(resp);
                }
            })
            .map_err(|e| MetricsError {
                addr,
                message: e.to_string(),
            })?;
        tracing::info!(listen = %bound, "metrics endpoint listening on /metrics");
        Ok(Self {
            addr: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// The address bound (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
