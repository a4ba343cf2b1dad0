//! The control protocol: one JSON request per line in, one JSON response per line out.
//!
//! ```text
//! -> {"id":1,"cmd":"set_weight","args":{"service":"syslog","backend":"198.18.1.1:514","weight":3}}
//! <- {"id":1,"ok":{"generation":4,"message":"set weight of backend ..."}}
//! <- {"id":1,"error":{"code":"bad_args","message":"set_weight: weight 70000 is out of range 0..=65535"}}
//! ```
//!
//! [`handle_line`] is the whole protocol minus the socket: it never panics and answers
//! every line, whatever its bytes, with exactly one response line. `id` is echoed as given
//! (any JSON value; `null` when the line is not a request object). Arguments are checked
//! for type and range here, against the table by the [`Controller`]. docs/control.md has
//! an example of each command.

use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, BackendRef, Change, Controller, ErrorCode, NewBackend, NewService, Who};

/// Longest request line, in bytes, newline excluded.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Every command, by wire name.
pub const COMMANDS: [&str; 14] = [
    "list",
    "stats",
    "events",
    "add_vip",
    "del_vip",
    "add_backend",
    "del_backend",
    "set_weight",
    "drain",
    "undrain",
    "enable",
    "disable",
    "reload",
    "version",
];

/// Whether `cmd` changes the table (logged at info when applied).
pub fn is_change(cmd: &str) -> bool {
    !matches!(cmd, "list" | "stats" | "events" | "version")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    id: Value,
    cmd: String,
    #[serde(default)]
    args: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsArgs {
    #[serde(default)]
    since: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendArgs {
    addr: String,
    weight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddVipArgs {
    name: String,
    vip: String,
    scheduler: Option<String>,
    mode: Option<String>,
    #[serde(default)]
    backends: Vec<BackendArgs>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceArgs {
    service: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBackendArgs {
    service: String,
    addr: String,
    weight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetArgs {
    service: String,
    backend: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightArgs {
    service: String,
    backend: String,
    weight: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnableArgs {
    service: String,
    backend: Option<String>,
}

fn bad(cmd: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::BadArgs, format!("{cmd}: {message}"))
}

fn args<T: DeserializeOwned + Default>(cmd: &str, v: Value) -> Result<T, ApiError> {
    if v.is_null() {
        return Ok(T::default());
    }
    required(cmd, v)
}

fn required<T: DeserializeOwned>(cmd: &str, v: Value) -> Result<T, ApiError> {
    if !v.is_object() {
        return Err(bad(cmd, "args must be an object"));
    }
    serde_json::from_value(v).map_err(|e| bad(cmd, e))
}

fn addr(cmd: &str, what: &str, s: &str) -> Result<SocketAddr, ApiError> {
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => Err(bad(
            cmd,
            format!("{what} {s:?}: port 0 is out of range 1..=65535"),
        )),
        Ok(a) => Ok(a),
        Err(_) => Err(bad(
            cmd,
            format!(
                "{what} {s:?} is not an address:port (like 198.18.1.1:514 or [2001:db8::1]:514)"
            ),
        )),
    }
}

fn weight(cmd: &str, w: Option<i64>) -> Result<u16, ApiError> {
    match w {
        None => Ok(1),
        Some(w) => {
            u16::try_from(w).map_err(|_| bad(cmd, format!("weight {w} is out of range 0..=65535")))
        }
    }
}

fn target(cmd: &str, a: TargetArgs) -> Result<BackendRef, ApiError> {
    Ok(BackendRef {
        backend: addr(cmd, "backend", &a.backend)?,
        service: a.service,
    })
}

/// The [`Change`] a changing command asks for.
///
/// # Errors
/// `bad_args` when the arguments are missing, unknown, of the wrong type or out of range.
pub fn change(cmd: &str, a: Value) -> Result<Change, ApiError> {
    Ok(match cmd {
        "add_vip" => {
            let a: AddVipArgs = required(cmd, a)?;
            let scheduler = match a.scheduler.as_deref() {
                None => dataplane::sched::SchedulerKind::Rr,
                Some(s) => s.parse().map_err(|e| bad(cmd, e))?,
            };
            let mode = match a.mode.as_deref() {
                None | Some("nat") => dataplane::service::Mode::Nat,
                Some("dr") => dataplane::service::Mode::Dr,
                Some(m) => return Err(bad(cmd, format!("unknown mode {m:?}: expected nat or dr"))),
            };
            let mut backends = Vec::with_capacity(a.backends.len());
            for b in &a.backends {
                backends.push(NewBackend {
                    addr: addr(cmd, "backend", &b.addr)?,
                    weight: weight(cmd, b.weight)?,
                });
            }
            Change::AddVip(NewService {
                vip: addr(cmd, "vip", &a.vip)?,
                name: a.name,
                scheduler,
                mode,
                backends,
            })
        }
        "del_vip" => {
            let a: ServiceArgs = required(cmd, a)?;
            Change::DelVip { service: a.service }
        }
        "add_backend" => {
            let a: AddBackendArgs = required(cmd, a)?;
            Change::AddBackend {
                backend: NewBackend {
                    addr: addr(cmd, "backend", &a.addr)?,
                    weight: weight(cmd, a.weight)?,
                },
                service: a.service,
            }
        }
        "del_backend" => Change::DelBackend(target(cmd, required(cmd, a)?)?),
        "set_weight" => {
            let a: WeightArgs = required(cmd, a)?;
            let w = weight(cmd, Some(a.weight))?;
            Change::SetWeight {
                target: target(
                    cmd,
                    TargetArgs {
                        service: a.service,
                        backend: a.backend,
                    },
                )?,
                weight: w,
            }
        }
        "drain" => Change::Drain(target(cmd, required(cmd, a)?)?),
        "undrain" => Change::Undrain(target(cmd, required(cmd, a)?)?),
        "enable" | "disable" => {
            let a: EnableArgs = required(cmd, a)?;
            let backend = a
                .backend
                .as_deref()
                .map(|b| addr(cmd, "backend", b))
                .transpose()?;
            if cmd == "enable" {
                Change::Enable {
                    service: a.service,
                    backend,
                }
            } else {
                Change::Disable {
                    service: a.service,
                    backend,
                }
            }
        }
        other => {
            return Err(ApiError::new(
                ErrorCode::UnknownCmd,
                format!(
                    "unknown command {other:?}: expected one of {}",
                    COMMANDS.join(", ")
                ),
            ))
        }
    })
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

/// Runs one command against `ctrl`.
///
/// # Errors
/// What the command's checks or the controller refuse.
pub fn dispatch(ctrl: &dyn Controller, who: &Who, cmd: &str, a: Value) -> Result<Value, ApiError> {
    match cmd {
        "list" => {
            args::<NoArgs>(cmd, a)?;
            to_value(ctrl.list())
        }
        "stats" => {
            args::<NoArgs>(cmd, a)?;
            to_value(ctrl.stats())
        }
        "events" => {
            let a: EventsArgs = args(cmd, a)?;
            to_value(json!({ "events": ctrl.events(a.since) }))
        }
        "version" => {
            args::<NoArgs>(cmd, a)?;
            to_value(ctrl.version())
        }
        "reload" => {
            args::<NoArgs>(cmd, a)?;
            to_value(ctrl.reload(who)?)
        }
        _ => {
            let c = change(cmd, a)?;
            to_value(ctrl.apply(c, who)?)
        }
    }
}

/// A response line (without its newline).
pub fn response(id: &Value, r: &Result<Value, ApiError>) -> String {
    let v = match r {
        Ok(ok) => json!({ "id": id, "ok": ok }),
        Err(e) => json!({ "id": id, "error": e }),
    };
    v.to_string()
}

/// Answers one request line (without its newline) for peer `who`; returns the response
/// line and the command (when the line was a request), for logging.
pub fn handle_line(ctrl: &dyn Controller, who: &Who, line: &[u8]) -> (String, Option<String>) {
    let v: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            let e = ApiError::new(ErrorCode::ParseError, format!("malformed JSON: {e}"));
            return (response(&Value::Null, &Err(e)), None);
        }
    };
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    let req: Request = match serde_json::from_value(v) {
        Ok(r) => r,
        Err(e) => {
            let e = ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "not a request: {e} (expected {{\"id\":1,\"cmd\":\"list\",\"args\":{{}}}})"
                ),
            );
            return (response(&id, &Err(e)), None);
        }
    };
    let r = dispatch(ctrl, who, &req.cmd, req.args);
    match &r {
        Ok(_) if is_change(&req.cmd) => {
            tracing::info!(%who, cmd = %req.cmd, "control command applied")
        }
        Ok(_) => tracing::debug!(%who, cmd = %req.cmd, "control command"),
        Err(e) => {
            tracing::info!(%who, cmd = %req.cmd, code = ?e.code, "control command refused: {}", e.message)
        }
    }
    (response(&req.id, &r), Some(req.cmd))
}

/// The error line for a request longer than [`MAX_REQUEST`].
pub fn too_large() -> String {
    response(
        &Value::Null,
        &Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("request is longer than {MAX_REQUEST} bytes; it was skipped up to its newline"),
        )),
    )
}
