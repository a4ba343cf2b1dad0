//! The config file as written: one typed model of the TOML document, shared by everything
//! that reads or writes a config.
//!
//! * The loader ([`super::Config::parse`]) deserialises a file into [`RawConfig`] and
//!   validates that into a [`super::Config`].
//! * `spray import keepalived` ([`crate::import::keepalived`]) builds a [`RawConfig`] and
//!   serialises it with the toml crate ([`RawConfig::to_toml`]), so what it writes is what
//!   the loader reads, key for key.
//!
//! The names of schedulers ([`SchedulerKind`]'s `name` and `FromStr`) and of forwarding methods
//! ([`Method`]) are the same in the file, in the control socket's
//! `add_vip` and `list`, and in what the importer writes.
//!
//! Values stay as TOML gives them (strings for addresses and names, `i64` for numbers) and
//! each is wrapped in [`Spanned`], so the validator can say on which line a bad value is and
//! give its own message for an out-of-range number rather than a type error. A model built
//! in memory has no lines: its values are made with [`value`]. Serialising skips what is
//! not set, so a written file holds only the keys that were given.

use std::collections::BTreeMap;

use dataplane::service::Mode;
use serde::{Deserialize, Serialize};
use toml::Spanned;

#[cfg(doc)]
use dataplane::sched::SchedulerKind;

pub use super::dpdk::{RawDpdk, RawDpdkPort};
pub use super::ops::{RawControl, RawMetrics};
pub use super::tunnel::RawTunnel;
pub use crate::health::config::RawCheck;

/// A value built in memory rather than read from a file (it has no place in one).
pub fn value<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}

/// How a service, or one of its backends, forwards: `mode = "nat"` in the file and on the
/// control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Address and port translation ([`Mode::Nat`]).
    Nat,
    /// Direct routing: only the MAC changes ([`Mode::Dr`]).
    Dr,
    /// Direct server return through an IPIP or GUE tunnel: [`Mode::Dr`] with the backend's
    /// [`dataplane::service::Backend::tunnel`] set.
    Tunnel,
}

impl Method {
    /// Every method, in the order messages list them.
    pub const ALL: [Method; 3] = [Method::Nat, Method::Dr, Method::Tunnel];

    /// The name in the file and on the control socket.
    pub fn name(self) -> &'static str {
        match self {
            Method::Nat => "nat",
            Method::Dr => "dr",
            Method::Tunnel => "tunnel",
        }
    }

    /// The method a name stands for; `None` for an unknown name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The dataplane's rewrite of a service forwarding this way.
    pub fn mode(self) -> Mode {
        match self {
            Method::Nat => Mode::Nat,
            Method::Dr | Method::Tunnel => Mode::Dr,
        }
    }
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

impl RawConfig {
    /// The TOML document of this model, as the loader reads it.
    ///
    /// # Errors
    /// Only for a model TOML cannot express (not one the loader produced or the importer
    /// builds).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

/// The whole file: `[runtime]`, `[socket]`, `[dpdk]`, `[services.NAME]`, `[control]`,
/// `[metrics]`.
#[derive(Debug, Default, Deserialize, Clone, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default, skip_serializing_if = "is_default")]
    pub runtime: RawRuntime,
    #[serde(default, skip_serializing_if = "is_default")]
    pub socket: RawSocket,
    #[serde(default, skip_serializing_if = "is_default")]
    pub dpdk: RawDpdk,
    #[serde(default)]
    pub services: BTreeMap<String, Spanned<RawService>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<RawControl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<RawMetrics>,
}

/// `[runtime]` as written.
#[derive(Debug, Default, Deserialize, Clone, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataplane: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<Spanned<Vec<Spanned<i64>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<Spanned<String>>,
}

/// `[socket]` as written.
#[derive(Debug, Default, Deserialize, Clone, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSocket {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transparent: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_idle_secs: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcvbuf: Option<Spanned<i64>>,
}

/// `[services.NAME]` as written.
#[derive(Debug, Deserialize, Clone, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub vip: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backends: Option<Spanned<Vec<Spanned<RawBackend>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<Spanned<RawCheck>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passive: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Spanned<RawTunnel>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Spanned<Vec<Spanned<RawMirror>>>>,
}

/// One `[[services.NAME.mirror]]` table as written: a pool that gets a copy of every
/// datagram of its service.
#[derive(Debug, Deserialize, Clone, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<Spanned<String>>,
    pub backends: Spanned<Vec<Spanned<RawBackend>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<Spanned<RawCheck>>,
}

/// One entry of `services.NAME.backends` as written.
#[derive(Debug, Deserialize, Clone, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub addr: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<Spanned<RawCheck>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Machine};
    use crate::health::Probe;

    #[test]
    fn mode_names_go_both_ways() {
        for m in Method::ALL {
            assert_eq!(Method::from_name(m.name()), Some(m));
        }
        assert_eq!(Method::from_name("NAT"), None);
    }

    #[test]
    fn a_built_model_is_written_and_read_back_as_it_was() {
        // Quotes, backslashes and control characters in a string survive the round trip.
        let payload = "a\"\\\u{1}\u{0}z";
        let check = RawCheck {
            kind: Some(value("udp".to_owned())),
            payload: Some(value(payload.to_owned())),
            require_reply: Some(value(true)),
            ..RawCheck::default()
        };
        let service = RawService {
            vip: value("127.0.0.10:5514".to_owned()),
            protocol: None,
            scheduler: Some(value("rr".to_owned())),
            mode: None,
            backends: Some(value(vec![value(RawBackend {
                addr: value("127.0.0.1:6001".to_owned()),
                weight: Some(value(3)),
                mode: None,
                mac: None,
                check: Some(value(check)),
                drain: None,
            })])),
            check: None,
            fallback: None,
            passive: Some(false),
            tunnel: None,
            mirror: None,
        };
        let mut model = RawConfig::default();
        model.services.insert("a b".to_owned(), value(service));
        let text = model.to_toml().unwrap();
        assert!(
            !text.contains("[runtime]"),
            "unset sections are left out: {text}"
        );
        let back: RawConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, model);

        let c = Config::parse("t.toml", &text, &Machine { cores: vec![0] }).unwrap();
        let s = &c.services[0];
        assert_eq!((s.name.as_str(), s.backends[0].weight), ("a b", 3));
        let Probe::Udp { payload: p, .. } = &c.checks[&s.backends[0].id].probe else {
            panic!("not udp")
        };
        assert_eq!(p, payload.as_bytes());
    }
}
