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
    serde_json::from_value(v).map_err(|e| bad(cmd, crate::config::did_you_mean(&e.to_string())))
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
                None => crate::config::file::Method::Nat,
                Some(m) => crate::config::file::Method::from_name(m).ok_or_else(|| {
                    bad(
                        cmd,
                        format!("unknown mode {m:?}: expected nat, dr or tunnel"),
                    )
                })?,
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
                    "not a request: {} (expected {{\"id\":1,\"cmd\":\"list\",\"args\":{{}}}})",
                    crate::config::did_you_mean(&e.to_string())
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

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use crossbeam_channel::Receiver;
    use dataplane::service::Snapshot;

    use super::*;
    use crate::config::{Config, Machine};
    use crate::state::{Controller as StateController, Links, State};

    pub(crate) const CONFIG: &str = r#"
[services.syslog]
vip = "198.18.0.10:514"
scheduler = "wrr"
backends = [{ addr = "198.18.1.1:514", weight = 2 }, { addr = "198.18.1.2:514" }]

[services.dns]
vip = "198.18.0.11:53"
backends = [{ addr = "198.18.1.1:53" }]
"#;

    /// The controller of `spray run` over `src` (written to a temp file for reload) with no
    /// workers but one update channel, whose receiver is returned.
    pub(crate) fn controller(
        src: &str,
    ) -> (StateController, Receiver<Arc<Snapshot>>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spray.toml");
        std::fs::write(&path, src).unwrap();
        let machine = Machine { cores: vec![0] };
        let config = Config::load(&path, &machine).unwrap();
        let state = State::new(config, 1, std::time::Instant::now()).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let c = StateController::start(
            state,
            Links {
                updates: vec![tx],
                source: Some((path, machine)),
                ..Links::default()
            },
        )
        .unwrap();
        (c, rx, dir)
    }

    fn ask(c: &dyn Controller, line: &str) -> Value {
        let (resp, _) = handle_line(c, &Who::local("test"), line.as_bytes());
        assert!(!resp.contains('\n'), "{resp}");
        serde_json::from_str(&resp).unwrap()
    }

    fn error_of(v: &Value) -> (String, String) {
        let e = &v["error"];
        assert!(v.get("ok").is_none(), "{v}");
        (
            e["code"].as_str().unwrap().to_owned(),
            e["message"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn malformed_json_is_a_parse_error_with_null_id() {
        let (c, rx, _d) = controller(CONFIG);
        for line in [
            "{",
            "not json",
            "{\"id\":1,\"cmd\":\"list\"",
            "\u{0}\u{1}",
            "",
        ] {
            let v = ask(&c, line);
            assert_eq!(v["id"], Value::Null, "{line}");
            let (code, msg) = error_of(&v);
            assert_eq!(code, "parse_error", "{line}");
            assert!(msg.starts_with("malformed JSON: "), "{msg}");
        }
        let (resp, cmd) = handle_line(&c, &Who::local("test"), &[0xff, 0xfe, b'{']);
        assert!(resp.contains("parse_error") && cmd.is_none(), "{resp}");
        assert!(rx.try_recv().is_err(), "no snapshot for a bad line");
    }

    #[test]
    fn json_that_is_not_a_request_is_a_bad_request() {
        let (c, _rx, _d) = controller(CONFIG);
        for line in [
            "[1,2]",
            "42",
            "{\"id\":3}",
            "{\"id\":3,\"cmd\":7}",
            "{\"id\":3,\"cmd\":\"list\",\"extra\":1}",
        ] {
            let v = ask(&c, line);
            assert_eq!(error_of(&v).0, "bad_request", "{line}: {v}");
        }
        // The id is echoed even when the request is bad.
        assert_eq!(ask(&c, "{\"id\":3}")["id"], 3);
    }

    #[test]
    fn unknown_argument_and_request_fields_suggest_the_closest() {
        let (c, _rx, _d) = controller(CONFIG);
        let v = ask(
            &c,
            r#"{"id":1,"cmd":"drain","args":{"service":"syslog","backnd":"198.18.1.1:514"}}"#,
        );
        let (code, msg) = error_of(&v);
        assert_eq!(code, "bad_args");
        assert!(
            msg.starts_with(
                "drain: unknown field `backnd` (did you mean `backend`?), expected `service` or `backend`"
            ),
            "{msg}"
        );
        let v = ask(&c, r#"{"id":2,"cmd":"events","agrs":{}}"#);
        let (code, msg) = error_of(&v);
        assert_eq!(code, "bad_request");
        assert!(
            msg.starts_with("not a request: unknown field `agrs` (did you mean `args`?)"),
            "{msg}"
        );
        // Nothing close: no guess.
        let (_, msg) = error_of(&ask(
            &c,
            r#"{"id":3,"cmd":"drain","args":{"service":"syslog","backend":"198.18.1.1:514","force":true}}"#,
        ));
        assert!(!msg.contains("did you mean"), "{msg}");
    }

    #[test]
    fn unknown_command_names_the_known_ones() {
        let (c, _rx, _d) = controller(CONFIG);
        let v = ask(&c, r#"{"id":"a-7","cmd":"flush"}"#);
        assert_eq!(v["id"], "a-7");
        let (code, msg) = error_of(&v);
        assert_eq!(code, "unknown_cmd");
        assert!(
            msg.starts_with("unknown command \"flush\": expected one of list,"),
            "{msg}"
        );
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let (c, rx, _d) = controller(CONFIG);
        let cases = [
            (
                r#"{"id":1,"cmd":"set_weight","args":{"service":"syslog","backend":"198.18.1.1:514","weight":70000}}"#,
                "set_weight: weight 70000 is out of range 0..=65535",
            ),
            (
                r#"{"id":1,"cmd":"set_weight","args":{"service":"syslog","backend":"198.18.1.1:514","weight":-1}}"#,
                "set_weight: weight -1 is out of range 0..=65535",
            ),
            (
                r#"{"id":1,"cmd":"set_weight","args":{"service":"syslog","backend":"198.18.1.1","weight":1}}"#,
                "set_weight: backend \"198.18.1.1\" is not an address:port",
            ),
            (
                r#"{"id":1,"cmd":"set_weight","args":{"service":"syslog","weight":1}}"#,
                "set_weight: missing field `backend`",
            ),
            (
                r#"{"id":1,"cmd":"set_weight","args":{"service":"syslog","backend":"198.18.1.1:514","weight":"3"}}"#,
                "set_weight: invalid type: string \"3\"",
            ),
            (
                r#"{"id":1,"cmd":"drain","args":[1]}"#,
                "drain: args must be an object",
            ),
            (r#"{"id":1,"cmd":"drain"}"#, "drain: args must be an object"),
            (
                r#"{"id":1,"cmd":"add_vip","args":{"name":"x","vip":"198.18.0.12:0"}}"#,
                "add_vip: vip \"198.18.0.12:0\": port 0 is out of range 1..=65535",
            ),
            (
                r#"{"id":1,"cmd":"add_vip","args":{"name":"x","vip":"198.18.0.12:9","scheduler":"lc"}}"#,
                "add_vip: unknown scheduler \"lc\"",
            ),
            (
                r#"{"id":1,"cmd":"add_vip","args":{"name":"x","vip":"198.18.0.12:9","mode":"tun"}}"#,
                "add_vip: unknown mode \"tun\"",
            ),
            (
                r#"{"id":1,"cmd":"add_vip","args":{"name":"bad name","vip":"198.18.0.12:9"}}"#,
                "\"bad name\" is not a service name",
            ),
            (
                r#"{"id":1,"cmd":"add_backend","args":{"service":"syslog","addr":"[2001:db8::1]:514"}}"#,
                "are of different address families",
            ),
            (
                r#"{"id":1,"cmd":"events","args":{"since":"yesterday"}}"#,
                "events: invalid type",
            ),
            (
                r#"{"id":1,"cmd":"list","args":{"all":true}}"#,
                "list: unknown field `all`",
            ),
        ];
        for (line, want) in cases {
            let v = ask(&c, line);
            let (code, msg) = error_of(&v);
            assert_eq!(code, "bad_args", "{line}: {msg}");
            assert!(msg.contains(want), "{line}: {msg}");
        }
        assert!(rx.try_recv().is_err(), "a refused change publishes nothing");
        assert_eq!(c.list().generation, 1);
    }

    #[test]
    fn not_found_and_conflict() {
        let (c, _rx, _d) = controller(CONFIG);
        let v = ask(
            &c,
            r#"{"id":1,"cmd":"drain","args":{"service":"nope","backend":"198.18.1.1:514"}}"#,
        );
        assert_eq!(error_of(&v).0, "not_found");
        let v = ask(
            &c,
            r#"{"id":1,"cmd":"drain","args":{"service":"syslog","backend":"198.18.1.9:514"}}"#,
        );
        assert_eq!(
            error_of(&v),
            (
                "not_found".into(),
                "service syslog has no backend 198.18.1.9:514".into()
            )
        );
        let v = ask(
            &c,
            r#"{"id":1,"cmd":"add_vip","args":{"name":"syslog","vip":"198.18.0.12:9"}}"#,
        );
        assert_eq!(error_of(&v).0, "conflict");
        let v = ask(
            &c,
            r#"{"id":1,"cmd":"add_vip","args":{"name":"other","vip":"198.18.0.10:514"}}"#,
        );
        let (code, msg) = error_of(&v);
        assert_eq!(code, "conflict");
        assert_eq!(msg, "198.18.0.10:514 is already the vip of service syslog");
        let v = ask(
            &c,
            r#"{"id":1,"cmd":"add_backend","args":{"service":"198.18.0.10:514","addr":"198.18.1.1:514"}}"#,
        );
        assert_eq!(error_of(&v).0, "conflict");
    }

    #[test]
    fn changes_publish_a_snapshot_and_list_shows_them() {
        let (c, rx, _d) = controller(CONFIG);
        let v = ask(
            &c,
            r#"{"id":1,"cmd":"set_weight","args":{"service":"syslog","backend":"198.18.1.2:514","weight":7}}"#,
        );
        assert_eq!(v["ok"]["generation"], 2, "{v}");
        let snap = rx.try_recv().expect("a snapshot was sent");
        assert_eq!(snap.generation, 2);
        let (_, svc) = snap
            .lookup_addr(&"198.18.0.10:514".parse().unwrap())
            .unwrap();
        assert_eq!(svc.spec.backends[1].weight, 7);
        // The same again is a no-op: no new generation.
        let v = ask(
            &c,
            r#"{"id":2,"cmd":"set_weight","args":{"service":"syslog","backend":"198.18.1.2:514","weight":7}}"#,
        );
        assert_eq!(v["ok"]["generation"], 2);
        assert_eq!(v["ok"]["message"], "no change");
        assert!(rx.try_recv().is_err());
        // Drain, disable a backend, disable a service.
        ask(
            &c,
            r#"{"id":3,"cmd":"drain","args":{"service":"syslog","backend":"198.18.1.1:514"}}"#,
        );
        let snap = rx.try_recv().unwrap();
        let (_, svc) = snap
            .lookup_addr(&"198.18.0.10:514".parse().unwrap())
            .unwrap();
        assert_eq!(svc.spec.backends[0].effective_weight(), 0);
        ask(
            &c,
            r#"{"id":4,"cmd":"disable","args":{"service":"syslog","backend":"198.18.1.2:514"}}"#,
        );
        let snap = rx.try_recv().unwrap();
        let (_, svc) = snap
            .lookup_addr(&"198.18.0.10:514".parse().unwrap())
            .unwrap();
        assert_eq!(svc.spec.backends.len(), 1);
        ask(&c, r#"{"id":5,"cmd":"disable","args":{"service":"dns"}}"#);
        let snap = rx.try_recv().unwrap();
        assert!(snap
            .lookup_addr(&"198.18.0.11:53".parse().unwrap())
            .is_none());
        let v = ask(&c, r#"{"id":6,"cmd":"list"}"#);
        let list: crate::api::ServiceList = serde_json::from_value(v["ok"].clone()).unwrap();
        assert_eq!(list.generation, 5);
        let dns = &list.services[0];
        assert_eq!(
            (dns.name.as_str(), dns.admin),
            ("dns", crate::api::Admin::Disabled)
        );
        let sys = &list.services[1];
        assert_eq!(sys.backends[0].admin, crate::api::Admin::Drained);
        assert_eq!(sys.backends[0].effective_weight, 0);
        assert_eq!(sys.backends[1].admin, crate::api::Admin::Disabled);
        let v = ask(&c, r#"{"id":7,"cmd":"events","args":{"since":2}}"#);
        let events = v["ok"]["events"].as_array().unwrap();
        assert_eq!(events.len(), 2, "{v}");
        assert_eq!(events[0]["seq"], 3);
        assert!(events[1]["message"]
            .as_str()
            .unwrap()
            .contains("service dns: enabled -> disabled"));
        let v = ask(&c, r#"{"id":8,"cmd":"version"}"#);
        assert_eq!(v["ok"]["protocol"], 1);
        assert_eq!(v["ok"]["controller"], "health");
    }

    #[test]
    fn add_vip_and_add_backend_refuse_a_loop() {
        let (c, rx, _d) = controller(CONFIG);
        let v = ask(
            &c,
            r#"{"id":1,"cmd":"add_backend","args":{"service":"syslog","addr":"198.18.0.10:514"}}"#,
        );
        assert_eq!(v["error"]["code"], "conflict", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("service syslog.backends[2] 198.18.0.10:514 reaches the vip 198.18.0.10:514 of service syslog: a forwarding loop"),
            "{v}"
        );
        let v = ask(
            &c,
            r#"{"id":2,"cmd":"add_vip","args":{"name":"relay","vip":"198.18.0.12:53","backends":[{"addr":"198.18.0.11:53"}]}}"#,
        );
        assert_eq!(
            v["error"]["code"], "conflict",
            "a chain is refused too: {v}"
        );
        // The refused changes changed nothing.
        assert!(rx.try_recv().is_err());
        let v = ask(&c, r#"{"id":3,"cmd":"list"}"#);
        assert_eq!(v["ok"]["services"].as_array().unwrap().len(), 2, "{v}");
    }

    #[test]
    fn add_and_remove_keep_other_ids() {
        let (c, rx, _d) = controller(CONFIG);
        ask(
            &c,
            r#"{"id":1,"cmd":"add_vip","args":{"name":"ntp","vip":"198.18.0.12:123","scheduler":"wrr","backends":[{"addr":"198.18.1.5:123","weight":3}]}}"#,
        );
        let s1 = rx.try_recv().unwrap();
        let ids = |s: &Snapshot| -> Vec<(String, u16, Vec<u16>)> {
            s.services()
                .map(|v| {
                    (
                        v.spec.name.clone(),
                        v.spec.id.0,
                        v.spec.backends.iter().map(|b| b.id.0).collect(),
                    )
                })
                .collect()
        };
        // dns and syslog keep 0 and 1 and backends 0..3; ntp gets the next ids.
        assert_eq!(
            ids(&s1),
            [
                ("dns".into(), 0, vec![0]),
                ("syslog".into(), 1, vec![1, 2]),
                ("ntp".into(), 2, vec![3])
            ]
        );
        ask(
            &c,
            r#"{"id":2,"cmd":"del_backend","args":{"service":"syslog","backend":"198.18.1.1:514"}}"#,
        );
        ask(
            &c,
            r#"{"id":3,"cmd":"add_backend","args":{"service":"syslog","addr":"198.18.1.3:514","weight":0}}"#,
        );
        ask(&c, r#"{"id":4,"cmd":"del_vip","args":{"service":"dns"}}"#);
        let s = rx.try_iter().last().unwrap();
        assert_eq!(s.generation, 5);
        // Freed ids are not handed out again at once.
        assert_eq!(
            ids(&s),
            [("syslog".into(), 1, vec![2, 4]), ("ntp".into(), 2, vec![3])]
        );
    }

    #[test]
    fn reload_keeps_ids_and_marks_and_refuses_a_bad_file() {
        let (c, rx, dir) = controller(CONFIG);
        let path = dir.path().join("spray.toml");
        ask(
            &c,
            r#"{"id":1,"cmd":"drain","args":{"service":"syslog","backend":"198.18.1.2:514"}}"#,
        );
        rx.try_recv().unwrap();
        // syslog loses .1, gains .3, dns goes, a new "aaa" sorts first (it would take id 0
        // if ids were positions).
        let new = r#"
[services.aaa]
vip = "198.18.0.13:9"
backends = [{ addr = "198.18.1.9:9" }]

[services.syslog]
vip = "198.18.0.10:514"
scheduler = "wrr"
backends = [{ addr = "198.18.1.3:514" }, { addr = "198.18.1.2:514", weight = 4 }]

[runtime]
workers = 1
log = "debug"
"#;
        std::fs::write(&path, new).unwrap();
        let v = ask(&c, r#"{"id":2,"cmd":"reload"}"#);
        let ok = &v["ok"];
        assert_eq!(ok["generation"], 3, "{v}");
        assert_eq!(
            ok["summary"],
            "services: 1 added, 1 removed, 0 changed; backends: 2 added, 1 removed, 1 re-weighted"
        );
        assert_eq!(ok["restart_needed"], serde_json::json!(["runtime.log"]));
        let s = rx.try_recv().unwrap();
        let (id, svc) = s.lookup_addr(&"198.18.0.10:514".parse().unwrap()).unwrap();
        assert_eq!(id.0, 1);
        let b: Vec<_> = svc
            .spec
            .backends
            .iter()
            .map(|b| (b.addr.to_string(), b.id.0, b.weight, b.admin))
            .collect();
        use dataplane::service::AdminState;
        assert_eq!(
            b,
            [
                ("198.18.1.3:514".to_owned(), 4, 1, AdminState::Enabled),
                ("198.18.1.2:514".to_owned(), 2, 4, AdminState::Drained),
            ]
        );
        let (aaa, _) = s.lookup_addr(&"198.18.0.13:9".parse().unwrap()).unwrap();
        assert_eq!(aaa.0, 2);
        // A bad file is refused with its problems; nothing changes.
        std::fs::write(&path, new.replace("weight = 4", "weight = 70000")).unwrap();
        let v = ask(&c, r#"{"id":3,"cmd":"reload"}"#);
        let (code, msg) = error_of(&v);
        assert_eq!(code, "refused");
        assert!(
            msg.starts_with("reload refused, the running config stays: "),
            "{msg}"
        );
        assert!(
            msg.contains("services.syslog.backends[1].weight: 70000 is out of range 0..=65535"),
            "{msg}"
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(c.list().generation, 3);
        std::fs::remove_file(&path).unwrap();
        let (code, msg) = error_of(&ask(&c, r#"{"id":4,"cmd":"reload"}"#));
        assert_eq!(code, "refused");
        assert!(msg.contains("cannot read the config file"), "{msg}");
    }
}
