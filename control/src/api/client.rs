//! A client of the control socket, for `spray ctl` and the tests.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::ApiError;

/// Error from a call over the control socket.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nobody listens on the socket (or we may not open it).
    #[error("cannot connect to the control socket {path}: is spray running? (use --socket PATH)")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The connection failed or closed mid-request.
    #[error("control socket {path}: connection lost")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server answered something that is not a response.
    #[error("control socket {path}: unexpected response: {line}")]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// What came back.
        line: String,
    },
    /// The server refused the request.
    #[error("{}", .0.message)]
    Refused(ApiError),
}

/// One connection to the control socket.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects to `path`.
    ///
    /// # Errors
    /// [`CallError::Connect`].
    pub fn connect(path: &Path) -> Result<Self, CallError> {
        let connect = |source| CallError::Connect {
            path: path.to_owned(),
            source,
        };
        let s = UnixStream::connect(path).map_err(connect)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(connect)?;
        let writer = s.try_clone().map_err(connect)?;
        Ok(Self {
            path: path.to_owned(),
            reader: BufReader::new(s),
            writer,
            next_id: 1,
        })
    }

    /// Sends `line` as it is (plus a newline) and returns the response line, parsed.
    ///
    /// # Errors
    /// I/O errors, or a response that is not JSON.
    pub fn raw(&mut self, line: &[u8]) -> Result<Value, CallError> {
        let io = |source| CallError::Io {
            path: self.path.clone(),
            source,
        };
        self.writer.write_all(line).map_err(io)?;
        self.writer
            .write_all(b"\n")
            .map_err(|source| CallError::Io {
                path: self.path.clone(),
                source,
            })?;
        let mut resp = String::new();
        let n = self
            .reader
            .read_line(&mut resp)
            .map_err(|source| CallError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(CallError::Io {
                path: self.path.clone(),
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "closed without a response"),
            });
        }
        serde_json::from_str(&resp).map_err(|_| CallError::Protocol {
            path: self.path.clone(),
            line: resp.trim_end().to_owned(),
        })
    }

    /// Runs `cmd` with `args` and returns the `ok` value.
    ///
    /// # Errors
    /// [`CallError::Refused`] with the server's error, or a transport error.
    pub fn call(&mut self, cmd: &str, args: Value) -> Result<Value, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        let req = json!({ "id": id, "cmd": cmd, "args": args });
        let mut v = self.raw(req.to_string().as_bytes())?;
        if let Some(ok) = v.get_mut("ok") {
            return Ok(ok.take());
        }
        match v
            .get("error")
            .cloned()
            .map(serde_json::from_value::<ApiError>)
        {
            Some(Ok(e)) => Err(CallError::Refused(e)),
            _ => Err(CallError::Protocol {
                path: self.path.clone(),
                line: v.to_string(),
            }),
        }
    }
}
