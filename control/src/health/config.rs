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

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{Check, Probe, DEFAULT_FALL, DEFAULT_INTERVAL, DEFAULT_RISE, DEFAULT_TIMEOUT};

/// Shortest interval between checks.
pub const MIN_INTERVAL_MS: i64 = 10;
/// Longest interval between checks (one hour).
pub const MAX_INTERVAL_MS: i64 = 3_600_000;
/// Largest `rise` or `fall`.
pub const MAX_RISE_FALL: i64 = 100;

/// A `check` table as written (part of the file model, [`crate::config::file`]).
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rise: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fall: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_reply: Option<Spanned<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo: Option<Spanned<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Spanned<Vec<String>>>,
}

/// One problem: where (span), which key, what.
pub type CheckProblem = (Option<Range<usize>>, String, String);

/// A type-specific key: its name, where it was given (if it was), the types it fits.
type KeyTypes<'a> = (&'a str, Option<Range<usize>>, &'a [Kind]);

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
    /// `type` was given but refused (already reported): no "missing type" on top.
    bad_kind: bool,
    interval: Option<(i64, String)>,
    timeout: Option<(i64, String)>,
    rise: Option<u32>,
    fall: Option<u32>,
    source: Option<(IpAddr, String, Range<usize>)>,
    port: Option<(u16, String)>,
    payload: Option<(Vec<u8>, String)>,
    expect: Option<(Vec<u8>, String)>,
    require_reply: Option<(bool, String)>,
    echo: Option<(bool, String)>,
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
            f.bad_kind = kind.is_none();
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
        f.echo = raw.echo.as_ref().map(|b| (*b.get_ref(), k("echo")));
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
            let wrong: [KeyTypes<'_>; 9] = [
                (
                    "port",
                    raw.port.as_ref().map(Spanned::span),
                    &[Kind::Udp, Kind::Tcp, Kind::Http],
                ),
                (
                    "payload",
                    raw.payload.as_ref().map(Spanned::span),
                    &[Kind::Udp],
                ),
                (
                    "expect",
                    raw.expect.as_ref().map(Spanned::span),
                    &[Kind::Udp],
                ),
                (
                    "require_reply",
                    raw.require_reply.as_ref().map(Spanned::span),
                    &[Kind::Udp],
                ),
                ("echo", raw.echo.as_ref().map(Spanned::span), &[Kind::Udp]),
                ("path", raw.path.as_ref().map(Spanned::span), &[Kind::Http]),
                ("host", raw.host.as_ref().map(Spanned::span), &[Kind::Http]),
                (
                    "expect_status",
                    raw.expect_status.as_ref().map(Spanned::span),
                    &[Kind::Http],
                ),
                (
                    "command",
                    raw.command.as_ref().map(Spanned::span),
                    &[Kind::Exec],
                ),
            ];
            for (name, span, kinds) in wrong {
                if span.is_some() && !kinds.contains(kind) {
                    let list: Vec<_> = kinds.iter().map(|k| k.name()).collect();
                    p.push((
                        span,
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
            bad_kind: self.bad_kind || (self.kind.is_none() && base.bad_kind),
            interval: self.interval.clone().or_else(|| base.interval.clone()),
            timeout: self.timeout.clone().or_else(|| base.timeout.clone()),
            rise: self.rise.or(base.rise),
            fall: self.fall.or(base.fall),
            source: self.source.clone().or_else(|| base.source.clone()),
            port: spec(same_type, &self.port, &base.port),
            payload: spec(same_type, &self.payload, &base.payload),
            expect: spec(same_type, &self.expect, &base.expect),
            require_reply: spec(same_type, &self.require_reply, &base.require_reply),
            echo: spec(same_type, &self.echo, &base.echo),
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
            None if self.bad_kind => return None,
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
            .map_or(DEFAULT_TIMEOUT.min(interval / 2), |(ms, _)| {
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
                    echo: self.echo.as_ref().map_or(!require_reply, |x| x.0),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError, Machine};
    use dataplane::service::{AdminState, BackendId};

    fn parse(src: &str) -> Result<Config, ConfigError> {
        Config::parse("spray.toml", src, &Machine { cores: vec![0] })
    }

    fn errors(src: &str) -> Vec<String> {
        let e = parse(src).expect_err("config should be refused");
        e.problems().iter().map(ToString::to_string).collect()
    }

    const BASE: &str = r#"
[services.syslog]
vip = "127.0.0.10:514"
fallback = "127.0.0.1:9999"
passive = true
backends = [
  { addr = "127.0.0.1:6514" },
  { addr = "127.0.0.1:6515", check = { type = "tcp", port = 22, rise = 5 } },
  { addr = "127.0.0.1:6516", check = { type = "none" }, drain = true },
  { addr = "127.0.0.1:6517", check = { interval_ms = 200, timeout_ms = 100, payload = "hi" } },
]

[services.syslog.check]
type = "udp"
interval_ms = 100
timeout_ms = 50
fall = 3
payload = "ping"
expect = "pong"
source = "127.0.0.1"
"#;

    #[test]
    fn the_readme_check_confirms_failures_fast_and_asks_the_host_to_echo() {
        let c = parse(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../docs/examples/syslog.toml"
            ))
            .unwrap(),
        )
        .unwrap();
        assert!(
            c.services.iter().all(|s| s.passive),
            "passive is on by default"
        );
        let chk = &c.checks[&BackendId(0)];
        // Half the interval, so that `fall` failures fit in docs/config.md's bound.
        assert_eq!(chk.timeout, Duration::from_millis(50));
        assert!(matches!(
            chk.probe,
            Probe::Udp {
                echo: true,
                require_reply: false,
                ..
            }
        ));
        let off = BASE.replace("expect = \"pong\"", "echo = false");
        let c = parse(&off).unwrap();
        assert!(matches!(
            c.checks[&BackendId(0)].probe,
            Probe::Udp {
                echo: false,
                require_reply: false,
                ..
            }
        ));
        let wrong = BASE.replace("port = 22,", "port = 22, echo = true,");
        let e = errors(&wrong);
        assert!(
            e[0].contains("echo: applies to check type udp only"),
            "{e:?}"
        );
    }

    #[test]
    fn service_defaults_and_backend_overrides() {
        let c = parse(BASE).unwrap();
        let s = &c.services[0];
        assert!(s.passive);
        let f = s.fallback.as_ref().unwrap();
        assert_eq!(f.addr, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(
            f.id,
            BackendId(4),
            "fallbacks are numbered after every backend"
        );
        assert_eq!(s.backends[2].admin, AdminState::Drained);
        let c0 = &c.checks[&BackendId(0)];
        assert_eq!(c0.interval, Duration::from_millis(100));
        assert_eq!(c0.timeout, Duration::from_millis(50));
        assert_eq!((c0.rise, c0.fall), (DEFAULT_RISE, 3));
        assert_eq!(c0.source, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            c0.probe,
            Probe::Udp {
                port: None,
                payload: b"ping".to_vec(),
                expect: Some(b"pong".to_vec()),
                require_reply: true,
                echo: false,
            }
        );
        // Another type: common keys inherited, udp keys not.
        let c1 = &c.checks[&BackendId(1)];
        assert_eq!(c1.probe, Probe::Tcp { port: Some(22) });
        assert_eq!((c1.rise, c1.fall, c1.interval), (5, 3, c0.interval));
        assert!(
            !c.checks.contains_key(&BackendId(2)),
            "type none is unchecked"
        );
        let c3 = &c.checks[&BackendId(3)];
        assert_eq!(c3.interval, Duration::from_millis(200));
        let Probe::Udp {
            payload, expect, ..
        } = &c3.probe
        else {
            panic!("udp expected")
        };
        assert_eq!(
            (payload.as_slice(), expect.as_deref()),
            (&b"hi"[..], Some(&b"pong"[..]))
        );
        c.snapshot(1).unwrap();
    }

    #[test]
    fn no_check_means_unchecked() {
        let c = parse(
            "[services.a]\nvip = \"127.0.0.1:9\"\nbackends = [{ addr = \"127.0.0.1:10\" }]\n",
        )
        .unwrap();
        assert!(c.checks.is_empty());
        assert!(c.services[0].fallback.is_none());
        assert!(c.services[0].passive, "on by default");
    }

    #[test]
    fn every_type_builds() {
        for (table, want) in [
            (
                "type = \"http\", path = \"/h\", expect_status = 204, host = \"x\"",
                "http",
            ),
            ("type = \"icmp\"", "icmp"),
            ("type = \"exec\", command = [\"/bin/true\"]", "exec"),
            ("type = \"udp\"", "udp"),
            ("type = \"tcp\"", "tcp"),
        ] {
            let src = format!(
                "[services.a]\nvip = \"127.0.0.1:9\"\nbackends = [{{ addr = \"127.0.0.1:10\" }}]\n\
                 [services.a.check]\n{}\n",
                table.replace(", ", "\n")
            );
            let c = parse(&src).unwrap_or_else(|e| panic!("{table}: {e}"));
            assert_eq!(c.checks[&BackendId(0)].probe.name(), want);
        }
    }

    #[test]
    fn problems_name_the_key() {
        let e = errors(&BASE.replace("fall = 3", "fall = 0"));
        assert_eq!(
            e,
            ["spray.toml:17: services.syslog.check.fall: 0 is out of range 1..=100"]
        );
        let e = errors(&BASE.replace("type = \"udp\"", "type = \"dns\""));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "spray.toml:14: services.syslog.check.type: unknown check type \"dns\""
            ),
            "{e:?}"
        );
        let e = errors(&BASE.replace("timeout_ms = 50", "timeout_ms = 500"));
        assert!(
            e.iter().any(|p| p.ends_with(
                "services.syslog.check.timeout_ms: 500 ms is longer than interval_ms (100 ms): \
                 one check of a backend at a time"
            )),
            "{e:?}"
        );
        let e = errors(&BASE.replace("port = 22", "port = 22, path = \"/\""));
        assert_eq!(
            e,
            [
                "spray.toml:8: services.syslog.backends[1].check.path: applies to check type http \
              only, not \"tcp\""
            ]
        );
        let e = errors(&BASE.replace("source = \"127.0.0.1\"", "source = \"::1\""));
        assert!(
            e[0].contains("services.syslog.check.source: ::1 cannot check 127.0.0.1:6514"),
            "{e:?}"
        );
        let e = errors(&BASE.replace("source = \"127.0.0.1\"", "source = \"localhost\""));
        assert!(e[0].contains("services.syslog.check.source: \"localhost\" is not an ip"));
        let e = errors(&BASE.replace("{ type = \"none\" }", "{ type = \"exec\" }"));
        assert!(
            e[0].ends_with(
                "services.syslog.backends[2].check.command: is missing: type \"exec\" \
                            needs command = [\"/path/to/check\", ...]"
            ),
            "{e:?}"
        );
        let e = errors(&BASE.replace("interval_ms = 100", "interval_ms = 1"));
        assert!(e[0].contains("services.syslog.check.interval_ms: 1 is out of range 10..=3600000"));
        let e = errors(&BASE.replace(
            "expect = \"pong\"",
            "expect = \"pong\"\nrequire_reply = false",
        ));
        assert!(
            e[0].contains("require_reply: cannot be false when expect is given"),
            "{e:?}"
        );
        let e = errors(&BASE.replace("payload = \"ping\"", "payload = \"ping\"\ninterval = 3"));
        assert!(
            e[0].contains("unknown field `interval` (did you mean `interval_ms`?)"),
            "{e:?}"
        );
        let e = errors(&BASE.replace("interval_ms = 100", "intervall_ms = 100"));
        assert!(
            e[0].contains("unknown field `intervall_ms` (did you mean `interval_ms`?)"),
            "{e:?}"
        );
    }

    #[test]
    fn a_backend_check_without_a_type_needs_the_service_one() {
        let e = errors(
            "[services.a]\nvip = \"127.0.0.1:9\"\nbackends = [{ addr = \"127.0.0.1:10\", \
             check = { rise = 2 } }]\n",
        );
        assert_eq!(
            e,
            ["spray.toml: services.a.backends[0].check.type: is missing: say which check to run \
              (udp, tcp, http, icmp, exec or none)"]
        );
    }

    #[test]
    fn fallback_problems() {
        let e = errors(&BASE.replace("127.0.0.1:9999", "127.0.0.1:6514"));
        assert_eq!(
            e,
            [
                "spray.toml:4: services.syslog.fallback: 127.0.0.1:6514 is already backends[0]: a \
              fallback must be another server"
            ]
        );
        let e = errors(&BASE.replace("127.0.0.1:9999", "[::1]:9999"));
        assert!(
            e[0].contains("services.syslog.fallback: [::1]:9999 is IPv6"),
            "{e:?}"
        );
        let e = errors(&BASE.replace("127.0.0.1:9999", "nowhere"));
        assert!(e[0].contains("services.syslog.fallback: \"nowhere\" is not an address:port"));
    }
}
