//! The `check` tables of the config file: `[services.NAME.check]` (the service's default)
//! and a backend's `check = { ... }` (overrides, key by key).
//!
//! Merging: a backend's keys override the service's. The common keys (`interval_ms`,
//! `timeout_ms`, `rise`, `fall`, `source`) are always inherited; the type-specific ones
//! only while the backend's check has the service's type (a backend switching from `udp` to
//! `tcp` does not inherit a `payload`). `type = "none"` turns checking off (the backend
//! is always up). Each table is validated once, so a mistake in the service's table is
//! reported once, not once per backend; problems are returned to [`crate::config`], which
//! adds file and line.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Check, Probe, DEFAULT_FALL, DEFAULT_INTERVAL, DEFAULT_RISE, DEFAULT_TIMEOUT};

/// Shortest interval between checks.
pub const MIN_INTERVAL_MS: i64 = 10;
/// Longest interval between checks (one hour).
pub const MAX_INTERVAL_MS: i64 = 3_600_000;
/// Largest `rise` or `fall`.
pub const MAX_RISE_FALL: i64 = 100;

/// A `check` table as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    interval_ms: Option<Spanned<i64>>,
    timeout_ms: Option<Spanned<i64>>,
    rise: Option<Spanned<i64>>,
    fall: Option<Spanned<i64>>,
    source: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    payload: Option<Spanned<String>>,
    expect: Option<Spanned<String>>,
    require_reply: Option<Spanned<bool>>,
    path: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    expect_status: Option<Spanned<i64>>,
    command: Option<Spanned<Vec<String>>>,
}

/// One problem: where (span), which key, what.
pub type CheckProblem = (Option<Range<usize>>, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Udp,
    Tcp,
    Http,
    Icmp,
    Exec,
    None,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Http => "http",
            Self::Icmp => "icmp",
            Self::Exec => "exec",
            Self::None => "none",
        }
    }
}

/// A table's values, each validated on its own, with the key path it came from.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    kind: Option<(Kind, String)>,
    interval: Option<(i64, String)>,
    timeout: Option<(i64, String)>,
    rise: Option<u32>,
    fall: Option<u32>,
    source: Option<(IpAddr, String, Range<usize>)>,
    port: Option<(u16, String)>,
    payload: Option<(Vec<u8>, String)>,
    expect: Option<(Vec<u8>, String)>,
    require_reply: Option<(bool, String)>,
    path: Option<(String, String)>,
    host: Option<(String, String)>,
    expect_status: Option<(u16, String)>,
    command: Option<(Vec<String>, String)>,
}

fn int(
    p: &mut Vec<CheckProblem>,
    key: &str,
    v: &Option<Spanned<i64>>,
    lo: i64,
    hi: i64,
) -> Option<i64> {
    let v = v.as_ref()?;
    let x = *v.get_ref();
    if (lo..=hi).contains(&x) {
        Some(x)
    } else {
        p.push((
            Some(v.span()),
            key.to_owned(),
            format!("{x} is out of range {lo}..={hi}"),
        ));
        None
    }
}

fn no_newline(p: &mut Vec<CheckProblem>, key: &str, v: &Spanned<String>) -> bool {
    if v.get_ref().contains(['\r', '\n']) {
        p.push((
            Some(v.span()),
            key.to_owned(),
            "must not contain a line break".to_owned(),
        ));
        false
    } else {
        true
    }
}

impl Fields {
    /// Validates the table `raw` found at key path `key` (like `services.a.check`).
    pub fn parse(key: &str, raw: &RawCheck, p: &mut Vec<CheckProblem>) -> Self {
        let k = |name: &str| format!("{key}.{name}");
        let mut f = Fields::default();
        if let Some(t) = &raw.kind {
            let kind = match t.get_ref().as_str() {
                "udp" => Some(Kind::Udp),
                "tcp" => Some(Kind::Tcp),
                "http" => Some(Kind::Http),
                "icmp" => Some(Kind::Icmp),
                "exec" => Some(Kind::Exec),
                "none" => Some(Kind::None),
                other => {
                    p.push((
                        Some(t.span()),
                        k("type"),
                        format!(
                            "unknown check type {other:?}: expected udp, tcp, http, icmp, exec \
                             or none"
                        ),
                    ));
                    None
                }
            };
            f.kind = kind.map(|x| (x, k("type")));
        }
        f.interval = int(
            p,
            &k("interval_ms"),
            &raw.interval_ms,
            MIN_INTERVAL_MS,
            MAX_INTERVAL_MS,
        )
        .map(|x| (x, k("interval_ms")));
        f.timeout = int(p, &k("timeout_ms"), &raw.timeout_ms, 1, MAX_INTERVAL_MS)
            .map(|x| (x, k("timeout_ms")));
        f.rise = int(p, &k("rise"), &raw.rise, 1, MAX_RISE_FALL).map(|x| x as u32);
        f.fall = int(p, &k("fall"), &raw.fall, 1, MAX_RISE_FALL).map(|x| x as u32);
        if let Some(s) = &raw.source {
            match s.get_ref().parse::<IpAddr>() {
                Ok(ip) => f.source = Some((ip, k("source"), s.span())),
                Err(_) => p.push((
                    Some(s.span()),
                    k("source"),
                    format!(
                        "{:?} is not an ip address (like 198.18.0.2 or 2001:db8::2)",
                        s.get_ref()
                    ),
                )),
            }
        }
        f.port = int(p, &k("port"), &raw.port, 1, 65535).map(|x| (x as u16, k("port")));
        f.payload = raw
            .payload
            .as_ref()
            .map(|s| (s.get_ref().as_bytes().to_vec(), k("payload")));
        f.expect = raw
            .expect
            .as_ref()
            .map(|s| (s.get_ref().as_bytes().to_vec(), k("expect")));
        f.require_reply = raw
            .require_reply
            .as_ref()
            .map(|b| (*b.get_ref(), k("require_reply")));
        if let Some(path) = &raw.path {
            if !path.get_ref().starts_with('/') || path.get_ref().contains(' ') {
                p.push((
                    Some(path.span()),
                    k("path"),
                    format!(
                        "{:?} is not a request path: it must start with / and have no spaces",
                        path.get_ref()
                    ),
                ));
            } else if no_newline(p, &k("path"), path) {
                f.path = Some((path.get_ref().clone(), k("path")));
            }
        }
        if let Some(h) = &raw.host {
            if no_newline(p, &k("host"), h) {
                f.host = Some((h.get_ref().clone(), k("host")));
            }
        }
        f.expect_status = int(p, &k("expect_status"), &raw.expect_status, 100, 599)
            .map(|x| (x as u16, k("expect_status")));
        if let Some(c) = &raw.command {
            if c.get_ref().first().map_or(true, String::is_empty) {
                p.push((
                    Some(c.span()),
                    k("command"),
                    "needs a program: command = [\"/path/to/check\", \"arg\", ...]".to_owned(),
                ));
            } else {
                f.command = Some((c.get_ref().clone(), k("command")));
            }
        }
        // Type-specific keys on a table of another type are mistakes, not silently ignored.
        if let Some((kind, _)) = &f.kind {
            let wrong: [(&str, bool, &[Kind]); 8] = [
                (
                    "port",
                    f.port.is_some(),
                    &[Kind::Udp, Kind::Tcp, Kind::Http],
                ),
                ("payload", f.payload.is_some(), &[Kind::Udp]),
                ("expect", f.expect.is_some(), &[Kind::Udp]),
                ("require_reply", f.require_reply.is_some(), &[Kind::Udp]),
                ("path", f.path.is_some(), &[Kind::Http]),
                ("host", f.host.is_some(), &[Kind::Http]),
                ("expect_status", f.expect_status.is_some(), &[Kind::Http]),
                ("command", f.command.is_some(), &[Kind::Exec]),
            ];
            for (name, given, kinds) in wrong {
                if given && !kinds.contains(kind) {
                    let list: Vec<_> = kinds.iter().map(|k| k.name()).collect();
                    p.push((
                        None,
                        k(name),
                        format!(
                            "applies to check type {} only, not {:?}",
                            list.join(", "),
                            kind.name()
                        ),
                    ));
                }
            }
        }
        f
    }

    /// The backend's fields `self` over the service's `base`.
    pub fn over(&self, base: &Fields) -> Fields {
        let same_type = match (&self.kind, &base.kind) {
            (None, _) => true,
            (Some((a, _)), Some((b, _))) => a == b,
            (Some(_), None) => false,
        };
        fn spec<T: Clone>(same_type: bool, mine: &Option<T>, theirs: &Option<T>) -> Option<T> {
            mine.clone()
                .or_else(|| same_type.then(|| theirs.clone()).flatten())
        }
        Fields {
            kind: self.kind.clone().or_else(|| base.kind.clone()),
            interval: self.interval.clone().or_else(|| base.interval.clone()),
            timeout: self.timeout.clone().or_else(|| base.timeout.clone()),
            rise: self.rise.or(base.rise),
            fall: self.fall.or(base.fall),
            source: self.source.clone().or_else(|| base.source.clone()),
            port: spec(same_type, &self.port, &base.port),
            payload: spec(same_type, &self.payload, &base.payload),
            expect: spec(same_type, &self.expect, &base.expect),
            require_reply: spec(same_type, &self.require_reply, &base.require_reply),
            path: spec(same_type, &self.path, &base.path),
            host: spec(same_type, &self.host, &base.host),
            expect_status: spec(same_type, &self.expect_status, &base.expect_status),
            command: spec(same_type, &self.command, &base.command),
        }
    }

    /// The check of backend `addr`, whose table is at `key`; `None` for `type = "none"`
    /// (or no table at all). Cross-key problems are reported under `key`.
    pub fn build(&self, key: &str, addr: SocketAddr, p: &mut Vec<CheckProblem>) -> Option<Check> {
        let kind = match &self.kind {
            Some((k, _)) => *k,
            None => {
                p.push((
                    None,
                    format!("{key}.type"),
                    "is missing: say which check to run (udp, tcp, http, icmp, exec or none)"
                        .to_owned(),
                ));
                return None;
            }
        };
        let interval = self.interval.as_ref().map_or(DEFAULT_INTERVAL, |(ms, _)| {
            Duration::from_millis(*ms as u64)
        });
        let timeout = self
            .timeout
            .as_ref()
            .map_or(DEFAULT_TIMEOUT.min(interval), |(ms, _)| {
                Duration::from_millis(*ms as u64)
            });
        if timeout > interval {
            let tkey = self.timeout.as_ref().map_or(key, |(_, k)| k.as_str());
            p.push((
                None,
                tkey.to_owned(),
                format!(
                    "{} ms is longer than interval_ms ({} ms): one check of a backend at a time",
                    timeout.as_millis(),
                    interval.as_millis()
                ),
            ));
        }
        if let Some((ip, skey, span)) = &self.source {
            if ip.is_ipv4() != addr.is_ipv4() {
                p.push((
                    Some(span.clone()),
                    skey.clone(),
                    format!("{ip} cannot check {addr}: the address families differ"),
                ));
            }
        }
        let probe = match kind {
            Kind::None => return None,
            Kind::Udp => {
                let require_reply = match (&self.require_reply, &self.expect) {
                    (Some((false, k)), Some(_)) => {
                        p.push((
                            None,
                            k.clone(),
                            "cannot be false when expect is given".to_owned(),
                        ));
                        false
                    }
                    (Some((r, _)), _) => *r,
                    (None, e) => e.is_some(),
                };
                Probe::Udp {
                    port: self.port.as_ref().map(|x| x.0),
                    payload: self
                        .payload
                        .as_ref()
                        .map(|x| x.0.clone())
                        .unwrap_or_default(),
                    expect: self.expect.as_ref().map(|x| x.0.clone()),
                    require_reply,
                }
            }
            Kind::Tcp => Probe::Tcp {
                port: self.port.as_ref().map(|x| x.0),
            },
            Kind::Http => Probe::Http {
                port: self.port.as_ref().map(|x| x.0),
                path: self
                    .path
                    .as_ref()
                    .map_or_else(|| "/".to_owned(), |x| x.0.clone()),
                host: self.host.as_ref().map(|x| x.0.clone()),
                expect_status: self.expect_status.as_ref().map_or(200, |x| x.0),
            },
            Kind::Icmp => Probe::Icmp,
            Kind::Exec => match &self.command {
                Some((c, _)) => Probe::Exec { command: c.clone() },
                None => {
                    p.push((
                        None,
                        format!("{key}.command"),
                        "is missing: type \"exec\" needs command = [\"/path/to/check\", ...]"
                            .to_owned(),
                    ));
                    return None;
                }
            },
        };
        Some(Check {
            probe,
            interval,
            timeout,
            rise: self.rise.unwrap_or(DEFAULT_RISE),
            fall: self.fall.unwrap_or(DEFAULT_FALL),
            source: self.source.as_ref().map(|x| x.0),
        })
    }
}
