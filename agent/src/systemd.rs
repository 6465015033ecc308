//! Readiness for systemd's `Type=notify`: kubelet is ordered after capstan.service, so
//! "started" must mean "the CRI socket answers", not "the process exists".

/// Tells systemd the daemon serves. Without `$NOTIFY_SOCKET` (not under systemd) it does
/// nothing; a failure to notify is logged, never fatal.
pub fn ready() {
    notify(&[sd_notify::NotifyState::Ready], "READY=1");
}

/// Tells systemd the daemon is shutting down on purpose.
pub fn stopping() {
    notify(&[sd_notify::NotifyState::Stopping], "STOPPING=1");
}

fn notify(states: &[sd_notify::NotifyState], what: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd ({what})");
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    /// The real wire: a datagram on the socket named by $NOTIFY_SOCKET.
    #[test]
    fn ready_and_stopping_reach_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        // SAFETY: this is the only test in the binary that touches $NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        super::ready();
        super::stopping();
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "READY=1");
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "STOPPING=1");
    }
}
