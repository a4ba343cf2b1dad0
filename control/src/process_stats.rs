//! The `process_*` metrics of the Prometheus conventions, read from `/proc/self` at each
//! scrape (open descriptors matter here: socket mode holds one per client session).

use std::fs;

/// One reading; a field is `None` when `/proc` did not say.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit of open file descriptors.
    pub max_fds: Option<u64>,
    /// Resident memory, bytes.
    pub resident_bytes: Option<u64>,
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// Clock ticks per second of `/proc/*/stat` times.
fn ticks_per_second() -> Option<f64> {
    // SAFETY: sysconf has no preconditions; a negative result means "unknown".
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (t > 0).then_some(t as f64)
}

/// The value of `key` in a `/proc` "Key: value unit" file such as `status`.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
}

/// Fields 14 (utime), 15 (stime) and 22 (starttime) of `/proc/self/stat`, in ticks. The
/// command name (field 2) may hold spaces, so fields are counted after its closing `)`.
fn stat_times(stat: &str) -> Option<(u64, u64, u64)> {
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3.
    let at = |n: usize| f.get(n - 3).and_then(|v| v.parse().ok());
    Some((at(14)?, at(15)?, at(22)?))
}

impl ProcessStats {
    /// This process, now.
    pub fn read() -> Self {
        let open_fds = fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count().saturating_sub(1) as u64);
        let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let max_fds = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok());
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let resident_bytes = field(&status, "VmRSS:")
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024);
        let ticks = ticks_per_second();
        let times = fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| stat_times(&s));
        let boot = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| field(&s, "btime ").and_then(|v| v.parse::<f64>().ok()));
        let cpu_seconds = ticks.zip(times).map(|(t, (u, s, _))| (u + s) as f64 / t);
        let start_time_seconds = ticks
            .zip(times)
            .zip(boot)
            .map(|((t, (_, _, start)), boot)| boot + start as f64 / t);
        Self {
            open_fds,
            max_fds,
            resident_bytes,
            cpu_seconds,
            start_time_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line =
            "42 (spray ctl) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 9000 1000 10";
        assert_eq!(stat_times(line), Some((250, 75, 9000)));
    }

    #[test]
    fn this_process_is_read() {
        let before = ProcessStats::read();
        let extra: Vec<std::fs::File> = (0..5)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let after = ProcessStats::read();
        assert!(after.open_fds.unwrap() >= before.open_fds.unwrap() + 5);
        drop(extra);
        assert!(after.max_fds.unwrap() >= after.open_fds.unwrap());
        assert!(after.resident_bytes.unwrap() > 1 << 20);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = after.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }
}
