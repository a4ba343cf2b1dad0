//! The checker threads: a small pool that runs probes handed to it and returns results.
//!
//! Probes block (a UDP check waits for its timeout, an exec check for its process), so they
//! run on their own threads, never on the controller's or a worker's. The controller decides
//! what to check when ([`crate::state`] spreads checks with jitter so they do not all fire
//! together) and submits one job per due backend; at most one probe per backend is in flight.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::{probe, Evidence, ProbeError, Target};

/// A probe to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// The caller's key of the target.
    pub index: usize,
    /// What to check.
    pub target: Arc<Target>,
}

/// A probe's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The job's index.
    pub index: usize,
    /// When the probe started.
    pub started: Instant,
    /// When it finished.
    pub finished: Instant,
    /// What it found.
    pub result: Result<Evidence, ProbeError>,
}

/// A pool of checker threads; dropping it lets them finish their current probe and end.
#[derive(Debug)]
pub struct Checker {
    jobs: Option<Sender<Job>>,
    /// Kept to start more threads ([`Checker::grow`]).
    job_rx: Receiver<Job>,
    out_tx: Sender<Outcome>,
    outcomes: Receiver<Outcome>,
    threads: Vec<JoinHandle<()>>,
}

impl Checker {
    /// Starts `threads` (at least 1) checker threads.
    ///
    /// # Errors
    /// When the OS refuses a thread.
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let (jobs, job_rx) = crossbeam_channel::unbounded::<Job>();
        let (out_tx, outcomes) = crossbeam_channel::unbounded();
        let mut this = Self {
            jobs: Some(jobs),
            job_rx,
            out_tx,
            outcomes,
            threads: Vec::new(),
        };
        this.grow(threads.max(1))?;
        Ok(this)
    }

    /// Starts threads until there are `threads` (checks added at run time may need more).
    ///
    /// # Errors
    /// When the OS refuses a thread; the threads already running keep working.
    pub fn grow(&mut self, threads: usize) -> std::io::Result<()> {
        while self.threads.len() < threads {
            let (rx, tx) = (self.job_rx.clone(), self.out_tx.clone());
            let i = self.threads.len();
            self.threads.push(
                std::thread::Builder::new()
                    .name(format!("spray-check-{i}"))
                    .spawn(move || {
                        for job in rx {
                            let started = Instant::now();
                            let result = probe(&job.target);
                            let o = Outcome {
                                index: job.index,
                                started,
                                finished: Instant::now(),
                                result,
                            };
                            if tx.send(o).is_err() {
                                break;
                            }
                        }
                    })?,
            );
        }
        Ok(())
    }

    /// How many threads run.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Queues a probe.
    pub fn submit(&self, job: Job) {
        if let Some(j) = &self.jobs {
            // Fails only when every thread has ended, which `Drop` alone causes.
            let _ = j.send(job);
        }
    }

    /// Where outcomes arrive.
    pub fn outcomes(&self) -> &Receiver<Outcome> {
        &self.outcomes
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        // `jobs` is the only sender: dropping it ends every thread's loop.
        self.jobs = None;
        // Outcomes still queued are dropped with the receiver after the threads end; a
        // thread blocked in a probe ends within its timeout.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
