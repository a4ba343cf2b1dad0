//! The driver of a side-by-side run: trials, the loss-free rate search, latency and CPU,
//! and the failover timeline.
//!
//! Each trial starts one `spray-traffic sink` process per backend (in the backend's network
//! namespace, through `ip netns exec`, which execs the program so the child's PID is the
//! sink's), waits until each has bound its socket, runs `spray-traffic send` in the client
//! namespace, lets the queues drain, then stops the sinks with SIGTERM (they write their
//! reports on the way out) and merges the reports. Only processes it started are signalled,
//! by PID. An empty namespace name runs the program in the current namespace (tests).
//!
//! The loss-free rate is searched from the top: a saturation trial says what the path
//! forwards when overloaded; the next trial offers that rate, then the search bisects
//! between the best rate that lost less than the threshold and the lowest that lost more,
//! until they are within 5 % or the step budget is spent.

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::send::SendReport;
use super::sink::SinkReport;
use super::trial::{merge, Cpu, TrialResult};
use super::{monotonic_ns, Timeline};

/// Where the sinks and the sender run.
#[derive(Debug, Clone)]
pub struct Testbed {
    /// The `spray-traffic` executable.
    pub exe: PathBuf,
    /// Network namespace of the sender ("" = this one).
    pub client_ns: String,
    /// The balancer's VIP.
    pub target: SocketAddr,
    /// `(namespace, address)` of each backend's sink.
    pub sinks: Vec<(String, SocketAddr)>,
    /// Folder for the sinks' report files.
    pub work: PathBuf,
    /// Payload bytes per datagram.
    pub size: usize,
    /// Interface of the client namespace the sender writes raw frames to (`send --raw`);
    /// `None`: the UDP sender.
    pub raw: Option<String>,
}

/// How to measure one balancer.
#[derive(Debug, Clone)]
pub struct MeasureSettings {
    /// Balancer's name in the results.
    pub name: String,
    /// PIDs of the balancer's processes (their children are added); empty for nftables.
    pub cpu_pids: Vec<u32>,
    /// Seconds per trial of the rate search.
    pub seconds: f64,
    /// Datagrams per `sendmmsg` in the rate search.
    pub batch: usize,
    /// Loss under this percentage counts as loss-free.
    pub loss_threshold_percent: f64,
    /// Most trials after the saturation trial.
    pub max_steps: usize,
    /// Rate of the latency trial.
    pub latency_rate: u64,
    /// Seconds of the latency trial.
    pub latency_seconds: f64,
    /// Datagrams per `sendmmsg` in the latency trial.
    pub latency_batch: usize,
    /// Print one line per trial on standard error.
    pub progress: bool,
}

/// What one measurement of one balancer found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerRun {
    /// Balancer's name.
    pub name: String,
    /// The trial at full speed.
    pub saturation: TrialResult,
    /// The trials of the rate search, in order.
    pub steps: Vec<TrialResult>,
    /// Highest forwarded rate with loss under the threshold (0 when none was found).
    pub loss_free_per_sec: f64,
    /// The generator, not the balancer, set the loss-free rate (it could not offer more).
    pub sender_limited: bool,
    /// The trial at the fixed moderate rate.
    pub latency: TrialResult,
}

#[derive(Debug, Clone, Copy, Default)]
struct CpuSample {
    process_ticks: u64,
    softirq_ticks: u64,
    at_ns: u64,
}

/// `/proc` reports times in USER_HZ, which is 100 on every Linux ABI.
const TICKS_PER_SEC: f64 = 100.0;

fn proc_ticks(pid: u32) -> u64 {
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name (field 2) may hold spaces: count fields after its closing ')'.
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn with_children(pids: &[u32]) -> Vec<u32> {
    let mut all = pids.to_vec();
    for &p in pids {
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(c) = fs::read_to_string(t.path().join("children")) {
                all.extend(c.split_whitespace().filter_map(|v| v.parse::<u32>().ok()));
            }
        }
    }
    all.sort_unstable();
    all.dedup();
    all
}

fn softirq_ticks() -> u64 {
    fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?.to_owned();
            // cpu user nice system idle iowait irq softirq ...
            line.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

fn sample(pids: &[u32]) -> CpuSample {
    CpuSample {
        process_ticks: with_children(pids).into_iter().map(proc_ticks).sum(),
        softirq_ticks: softirq_ticks(),
        at_ns: monotonic_ns(),
    }
}

fn cpu_between(a: CpuSample, b: CpuSample, has_process: bool, forwarded: u64) -> Cpu {
    let secs = (b.at_ns.saturating_sub(a.at_ns) as f64 / 1e9).max(1e-9);
    let proc_secs = b.process_ticks.saturating_sub(a.process_ticks) as f64 / TICKS_PER_SEC;
    Cpu {
        process_percent: has_process.then_some(100.0 * proc_secs / secs),
        process_us_per_datagram: (has_process && forwarded > 0)
            .then(|| 1e6 * proc_secs / forwarded as f64),
        softirq_percent: 100.0 * b.softirq_ticks.saturating_sub(a.softirq_ticks) as f64
            / TICKS_PER_SEC
            / secs,
    }
}

fn command(ns: &str, exe: &Path) -> Command {
    if ns.is_empty() {
        Command::new(exe)
    } else {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(exe);
        c
    }
}

/// A running sink process.
struct SinkProc {
    child: Child,
    out: PathBuf,
    label: String,
}

impl SinkProc {
    /// Stops it with SIGTERM and reads its report.
    fn finish(mut self) -> io::Result<(String, SinkReport)> {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let status = self.child.wait()?;
        let text = fs::read_to_string(&self.out).map_err(|e| {
            io::Error::other(format!(
                "sink {} ({status}) left no report {}: {e}",
                self.label,
                self.out.display()
            ))
        })?;
        let r = serde_json::from_str(&text).map_err(io::Error::other)?;
        let _ = fs::remove_file(&self.out);
        Ok((std::mem::take(&mut self.label), r))
    }
}

impl Drop for SinkProc {
    fn drop(&mut self) {
        // Reached only on an error path before `finish`: do not leave the sink behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Testbed {
    fn start_sink(&self, i: usize, timeline_ms: u64, max_secs: f64) -> io::Result<SinkProc> {
        let (ns, addr) = &self.sinks[i];
        let out = self
            .work
            .join(format!("sink-{i}-{}.json", std::process::id()));
        let _ = fs::remove_file(&out);
        let mut child = command(ns, &self.exe)
            .args(["sink", "--quiet", "--bind", &addr.to_string(), "--out"])
            .arg(&out)
            .args(["--max-seconds", &format!("{max_secs:.0}")])
            .args(["--timeline-ms", &timeline_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        // The sink says "listening" once its socket is bound.
        let mut line = String::new();
        if let Some(err) = child.stderr.take() {
            BufReader::new(err).read_line(&mut line)?;
        }
        let proc = SinkProc {
            child,
            out,
            label: addr.to_string(),
        };
        if !line.contains("listening") {
            return Err(io::Error::other(format!(
                "sink {addr} in namespace {ns:?} did not start: {}",
                line.trim()
            )));
        }
        Ok(proc)
    }

    fn run_sender(
        &self,
        rate: u64,
        batch: usize,
        secs: f64,
        timeline_ms: u64,
    ) -> io::Result<SendReport> {
        let out = command(&self.client_ns, &self.exe)
            .args([
                "send",
                "--quiet",
                "--json",
                "--target",
                &self.target.to_string(),
            ])
            .args(["--rate", &rate.to_string(), "--batch", &batch.to_string()])
            .args([
                "--seconds",
                &format!("{secs}"),
                "--size",
                &self.size.to_string(),
            ])
            .args(["--timeline-ms", &timeline_ms.to_string()])
            .args(
                self.raw
                    .as_ref()
                    .map(|i| ["--raw", i.as_str()])
                    .into_iter()
                    .flatten(),
            )
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "sender failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        serde_json::from_slice(&out.stdout).map_err(io::Error::other)
    }

    /// Runs one trial at `rate` (0: saturation) with CPU sampled over the sending time.
    ///
    /// # Errors
    /// When a sink or the sender cannot start or report.
    pub fn trial(
        &self,
        rate: u64,
        batch: usize,
        secs: f64,
        cpu_pids: Option<&[u32]>,
    ) -> io::Result<TrialResult> {
        let sinks = (0..self.sinks.len())
            .map(|i| self.start_sink(i, 0, secs + 60.0))
            .collect::<io::Result<Vec<_>>>()?;
        let pids = cpu_pids.unwrap_or(&[]);
        let before = sample(pids);
        let send = self.run_sender(rate, batch, secs, 0)?;
        let after = sample(pids);
        thread::sleep(Duration::from_millis(300));
        let reports = sinks
            .into_iter()
            .map(SinkProc::finish)
            .collect::<io::Result<Vec<_>>>()?;
        let mut r = merge(&send, &reports);
        r.cpu = Some(cpu_between(before, after, cpu_pids.is_some(), r.unique));
        Ok(r)
    }
}

fn line(name: &str, what: &str, r: &TrialResult) -> String {
    let rate = if r.rate == 0 {
        "max".to_owned()
    } else {
        r.rate.to_string()
    };
    format!(
        "{name}: {what:<10} asked {rate:>8}  offered {:>9.0}/s  forwarded {:>9.0}/s  loss {:>7.3} %  p99 {:>8.1} us  per backend {:?}",
        r.offered_per_sec,
        r.forwarded_per_sec,
        r.loss_percent,
        r.latency.p99_us,
        r.per_backend.iter().map(|b| b.received).collect::<Vec<_>>()
    )
}

/// Measures one balancer: saturation, loss-free rate search, latency at a fixed rate.
///
/// # Errors
/// When a trial fails.
pub fn measure(tb: &Testbed, s: &MeasureSettings) -> io::Result<PeerRun> {
    let pids = (!s.cpu_pids.is_empty()).then_some(s.cpu_pids.as_slice());
    let ok = |r: &TrialResult| r.sent > 0 && r.loss_percent < s.loss_threshold_percent;
    let say = |what: &str, r: &TrialResult| {
        if s.progress {
            eprintln!("{}", line(&s.name, what, r));
        }
    };
    let sat = tb.trial(0, s.batch, s.seconds, pids)?;
    say("saturation", &sat);
    let mut run = PeerRun {
        name: s.name.clone(),
        ..PeerRun::default()
    };
    if ok(&sat) {
        run.loss_free_per_sec = sat.forwarded_per_sec;
        run.sender_limited = true;
    } else {
        let mut best = 0.0f64; // best passing offered rate
        let mut lowest_fail = sat.offered_per_sec.max(1.0);
        let mut rate = sat.forwarded_per_sec.max(1000.0);
        for _ in 0..s.max_steps {
            let r = tb.trial(rate.round() as u64, s.batch, s.seconds, pids)?;
            say("search", &r);
            if ok(&r) {
                best = best.max(r.offered_per_sec);
                run.loss_free_per_sec = run.loss_free_per_sec.max(r.forwarded_per_sec);
                if r.offered_per_sec < 0.95 * rate {
                    // The generator could not offer more: the search ends here.
                    run.sender_limited = true;
                    run.steps.push(r);
                    break;
                }
            } else {
                lowest_fail = lowest_fail.min(rate);
            }
            run.steps.push(r);
            if best > 0.0 && lowest_fail / best < 1.05 {
                break;
            }
            rate = if best == 0.0 {
                rate / 2.0
            } else {
                // Above a passing rate, step up by at most 30 %: the saturation trial's
                // offered rate is often far above what the balancer can take.
                ((best + lowest_fail) / 2.0).min(best * 1.3)
            };
        }
    }
    run.saturation = sat;
    let lat = tb.trial(s.latency_rate, s.latency_batch, s.latency_seconds, pids)?;
    say("latency", &lat);
    run.latency = lat;
    Ok(run)
}

/// Settings of a failover run.
#[derive(Debug, Clone)]
pub struct FailoverSettings {
    /// Offered datagrams/s.
    pub rate: u64,
    /// Seconds the sender sends.
    pub seconds: f64,
    /// Seconds after the start when a backend's sink is stopped.
    pub kill_after: f64,
    /// Index of the backend whose sink is stopped.
    pub kill_index: usize,
    /// Seconds between starting the sinks and starting the sender.
    pub settle: f64,
    /// Timeline interval in milliseconds.
    pub bucket_ms: u64,
    /// Datagrams per `sendmmsg`.
    pub batch: usize,
}

/// What a failover run recorded: counts per interval, aligned on `CLOCK_MONOTONIC`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailoverRun {
    /// Balancer's name.
    pub name: String,
    /// Offered datagrams/s.
    pub rate: u64,
    /// Interval in milliseconds.
    pub bucket_ms: u64,
    /// `CLOCK_MONOTONIC` of interval 0 (the sender's first).
    pub start_ns: u64,
    /// When the sink was stopped, in seconds from `start_ns`.
    pub kill_at_secs: f64,
    /// Which backend (index into `backends`).
    pub killed: usize,
    /// Datagrams the sender sent per interval.
    pub sent: Vec<u64>,
    /// Labels of the backends.
    pub backends: Vec<String>,
    /// Datagrams each backend received per interval.
    pub received: Vec<Vec<u64>>,
    /// Datagrams lost per interval: sent minus received by all backends.
    pub lost: Vec<u64>,
    /// Overall merged result (loss, per-backend totals).
    pub total: TrialResult,
}

fn align(t: &Timeline, start_ns: u64, n: usize) -> Vec<u64> {
    let mut v = vec![0u64; n];
    if t.bucket_ns == 0 {
        return v;
    }
    for (i, &c) in t.counts.iter().enumerate() {
        let at = t.start_ns + i as u64 * t.bucket_ns;
        if at < start_ns {
            v[0] += c;
            continue;
        }
        let k = ((at - start_ns) / t.bucket_ns) as usize;
        if let Some(slot) = v.get_mut(k) {
            *slot += c;
        } else if let Some(last) = v.last_mut() {
            *last += c;
        }
    }
    v
}

/// Runs the sender at a fixed rate and stops one backend's sink part-way through, recording
/// per-backend receive timelines: what a balancer does when a backend dies.
///
/// # Errors
/// When a sink or the sender cannot start or report.
pub fn failover(tb: &Testbed, name: &str, s: &FailoverSettings) -> io::Result<FailoverRun> {
    let mut sinks = (0..tb.sinks.len())
        .map(|i| tb.start_sink(i, s.bucket_ms, s.seconds + 60.0))
        .collect::<io::Result<Vec<_>>>()?
        .into_iter()
        .map(Some)
        .collect::<Vec<_>>();
    let kill_index = s.kill_index.min(sinks.len().saturating_sub(1));
    thread::sleep(Duration::from_secs_f64(s.settle));
    let (send, killed_report, kill_ns) = thread::scope(|scope| {
        let sender = scope.spawn(|| tb.run_sender(s.rate, s.batch, s.seconds, s.bucket_ms));
        thread::sleep(Duration::from_secs_f64(s.kill_after));
        let kill_ns = monotonic_ns();
        let killed = sinks[kill_index].take().map(SinkProc::finish);
        let send = sender
            .join()
            .map_err(|_| io::Error::other("sender thread panicked"))?;
        Ok::<_, io::Error>((send, killed, kill_ns))
    })?;
    let send = send?;
    thread::sleep(Duration::from_millis(300));
    let mut killed_report = killed_report.transpose()?;
    let mut reports = Vec::new();
    for (i, p) in sinks.into_iter().enumerate() {
        if i == kill_index {
            reports.push(killed_report.take().unwrap_or_default());
        } else if let Some(p) = p {
            reports.push(p.finish()?);
        }
    }
    let st = send.timeline.clone().unwrap_or_default();
    let start_ns = st.start_ns;
    let n = st.counts.len().max(1);
    let sent = align(&st, start_ns, n);
    let received: Vec<Vec<u64>> = reports
        .iter()
        .map(|(_, r)| align(&r.timeline.clone().unwrap_or_default(), start_ns, n))
        .collect();
    let lost = (0..n)
        .map(|k| sent[k].saturating_sub(received.iter().map(|r| r[k]).sum()))
        .collect();
    Ok(FailoverRun {
        name: name.to_owned(),
        rate: s.rate,
        bucket_ms: s.bucket_ms,
        start_ns,
        kill_at_secs: kill_ns.saturating_sub(start_ns) as f64 / 1e9,
        killed: kill_index,
        sent,
        backends: reports.iter().map(|(l, _)| l.clone()).collect(),
        received,
        lost,
        total: merge(&send, &reports),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_of_this_process_parses() {
        // Burn a little CPU so the count is not 0 on a fast machine.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(proc_ticks(std::process::id()) > 0);
        assert!(softirq_ticks() > 0 || fs::read_to_string("/proc/stat").is_err());
        assert!(with_children(&[std::process::id()]).contains(&std::process::id()));
    }

    #[test]
    fn timelines_align_on_the_sender_start() {
        let t = Timeline {
            bucket_ns: 100,
            start_ns: 900,
            counts: vec![1, 2, 3, 4],
        };
        assert_eq!(align(&t, 1000, 3), [3, 3, 4]);
    }
}
