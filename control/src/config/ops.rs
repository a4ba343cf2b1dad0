//! `[control]` and `[metrics]`: where the control socket and the metrics endpoint listen.
//!
//! Kept beside the loader (`config/mod.rs`) as a child module so the operations keys stay
//! in one place and the shared file changes only by a field per table.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::Validator;

/// Default address of the metrics endpoint: loopback only.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9814";

/// `[control]`: the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSettings {
    /// Whether `spray run` opens the socket.
    pub enabled: bool,
    /// Socket path; `None` means [`default_socket_path`], whose failure is only a warning.
    pub socket: Option<PathBuf>,
    /// Peer uids allowed; `None` means the uid running spray, and root.
    pub allow_uids: Option<Vec<u32>>,
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: None,
            allow_uids: None,
        }
    }
}

impl ControlSettings {
    /// The socket path in force.
    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(default_socket_path)
    }

    /// The uids in force.
    pub fn allowed_uids(&self) -> Vec<u32> {
        self.allow_uids.clone().unwrap_or_else(|| {
            let me = current_uid();
            if me == 0 {
                vec![0]
            } else {
                vec![me, 0]
            }
        })
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Whether `spray run` serves metrics: off without a `[metrics]` table, on with one
    /// unless `enabled = false`.
    pub enabled: bool,
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: DEFAULT_METRICS_LISTEN.parse().expect("a valid address"),
        }
    }
}

/// The uid this process runs as.
pub fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Where the control socket is when the config does not say: `/run/spray/spray.sock` for
/// root, `$XDG_RUNTIME_DIR/spray.sock` or `/tmp/spray-UID.sock` for other users.
pub fn default_socket_path() -> PathBuf {
    let uid = current_uid();
    if uid == 0 {
        return PathBuf::from("/run/spray/spray.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("spray.sock"),
        _ => PathBuf::from(format!("/tmp/spray-{uid}.sock")),
    }
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_uids: Option<Vec<Spanned<i64>>>,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<Spanned<String>>,
}

impl Validator<'_> {
    pub(super) fn control(&mut self, raw: Option<&RawControl>) -> ControlSettings {
        let mut c = ControlSettings::default();
        let Some(raw) = raw else { return c };
        c.enabled = raw.enabled.unwrap_or(true);
        if let Some(s) = &raw.socket {
            if s.get_ref().is_empty() || !s.get_ref().starts_with('/') {
                self.report(
                    Some(s.span()),
                    "control.socket",
                    format!("{:?} is not an absolute path", s.get_ref()),
                );
            } else {
                c.socket = Some(PathBuf::from(s.get_ref()));
            }
        }
        if let Some(uids) = &raw.allow_uids {
            let mut v = Vec::with_capacity(uids.len());
            for (i, u) in uids.iter().enumerate() {
                match u32::try_from(*u.get_ref()) {
                    Ok(id) => v.push(id),
                    Err(_) => self.report(
                        Some(u.span()),
                        &format!("control.allow_uids[{i}]"),
                        format!("{} is out of range 0..={}", u.get_ref(), u32::MAX),
                    ),
                }
            }
            c.allow_uids = Some(v);
        }
        c
    }

    pub(super) fn metrics(&mut self, raw: Option<&RawMetrics>) -> MetricsSettings {
        let mut m = MetricsSettings::default();
        let Some(raw) = raw else { return m };
        m.enabled = raw.enabled.unwrap_or(true);
        if let Some(l) = &raw.listen {
            match l.get_ref().parse::<SocketAddr>() {
                Ok(a) => m.listen = a,
                Err(_) => self.report(
                    Some(l.span()),
                    "metrics.listen",
                    format!(
                        "{:?} is not an address:port (like 127.0.0.1:9814)",
                        l.get_ref()
                    ),
                ),
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Machine};

    const SVC: &str =
        "[services.a]\nvip = \"127.0.0.1:9\"\nbackends = [{ addr = \"127.0.0.1:10\" }]\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(
            "spray.toml",
            &format!("{extra}\n{SVC}"),
            &Machine { cores: vec![0] },
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_values() {
        let c = parse("").unwrap();
        assert!(c.control.enabled && c.control.socket.is_none() && c.control.allow_uids.is_none());
        assert!(!c.metrics.enabled);
        assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9814");
        assert!(c.control.allowed_uids().contains(&0));
        let c =
            parse("[metrics]\n[control]\nsocket = \"/tmp/x.sock\"\nallow_uids = [1000]\n").unwrap();
        assert!(c.metrics.enabled);
        assert_eq!(c.control.socket_path().to_str(), Some("/tmp/x.sock"));
        assert_eq!(c.control.allowed_uids(), [1000]);
        let c = parse("[metrics]\nenabled = false\nlisten = \"[::1]:9\"\n").unwrap();
        assert!(!c.metrics.enabled);
        assert_eq!(c.metrics.listen.to_string(), "[::1]:9");
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            parse("[control]\nsocket = \"run/s.sock\"").unwrap_err(),
            "spray.toml:2: control.socket: \"run/s.sock\" is not an absolute path"
        );
        assert_eq!(
            parse("[control]\nallow_uids = [-1]").unwrap_err(),
            "spray.toml:2: control.allow_uids[0]: -1 is out of range 0..=4294967295"
        );
        assert!(parse("[metrics]\nlisten = \"localhost\"")
            .unwrap_err()
            .starts_with("spray.toml:2: metrics.listen: \"localhost\" is not an address:port"));
        assert!(parse("[metrics]\nport = 1")
            .unwrap_err()
            .contains("unknown field `port`"));
    }
}
