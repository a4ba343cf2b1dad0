//! systemd's readiness protocol (`sd_notify`): under `Type=notify`, systemd starts the units
//! ordered after Spray (keepalived, bird) only once Spray says READY, which it says when every
//! VIP is bound and the control socket answers. Outside systemd (no `NOTIFY_SOCKET`) every
//! call does nothing.

use sd_notify::NotifyState;

/// Every VIP is served and the control socket answers; `status` is what `systemctl status`
/// shows.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The process is shutting down: systemd stops waiting for it to stay up.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState]) {
    // A lost notification makes systemd time the start out, which it reports itself; the
    // dataplane runs on either way.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}
