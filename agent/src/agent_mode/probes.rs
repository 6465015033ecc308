//! Probe settings with kubelet's defaults, and the threshold counting that turns single
//! outcomes into the result a container is judged by. Pure: the workers that run the
//! probes are in [`super::prober`].

use std::time::Duration;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Which probe: they differ in what a result does to the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Failure kills the container (restarted per restartPolicy).
    Liveness,
    /// Decides `ready`; never kills.
    Readiness,
    /// Gates the other two until it succeeds once; failure kills like liveness.
    Startup,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
            Kind::Startup => "startup",
        }
    }
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec(Vec<String>),
    Http { scheme: String, host: Option<String>, port: u16, path: String, headers: Vec<(String, String)> },
    Tcp { host: Option<String>, port: u16 },
    /// Parsed but not served here (gRPC probes): every run fails with this message.
    Unsupported(String),
}

/// One probe of one container, with kubelet's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: Kind,
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// The probe's own `terminationGracePeriodSeconds`, used for the kill it causes.
    pub termination_grace: Option<i64>,
}

/// One run's outcome. An `Error` (the container went away mid-exec, say) says nothing
/// about the container's health and is thrown away, as kubelet does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
    Error(String),
}

/// The container's probes, by kind, from its spec.
pub fn of_container(c: &k8s::Container) -> Result<Vec<Probe>, String> {
    let mut out = Vec::new();
    for (kind, spec) in [(Kind::Startup, &c.startup_probe), (Kind::Liveness, &c.liveness_probe), (Kind::Readiness, &c.readiness_probe)] {
        if let Some(spec) = spec {
            out.push(Probe::from_spec(kind, spec, c).map_err(|e| format!("{} probe of container {:?}: {e}", kind.name(), c.name))?);
        }
    }
    Ok(out)
}

impl Probe {
    /// Kubelet's defaults: period 10 s, timeout 1 s, thresholds 1 and 3; liveness and
    /// startup probes must have a success threshold of 1 (the API rejects anything else).
    pub fn from_spec(kind: Kind, p: &k8s::Probe, c: &k8s::Container) -> Result<Probe, String> {
        let secs = |v: Option<i32>, default: u64, min: u64| Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default).max(min));
        let count = |v: Option<i32>, default: u32| v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0).unwrap_or(default);
        let success_threshold = count(p.success_threshold, 1);
        if kind != Kind::Readiness && success_threshold != 1 {
            return Err(format!("successThreshold must be 1, not {success_threshold}"));
        }
        let action = if let Some(e) = &p.exec {
            let cmd = e.command.clone().unwrap_or_default();
            if cmd.is_empty() {
                return Err("exec needs a command".into());
            }
            Action::Exec(cmd)
        } else if let Some(h) = &p.http_get {
            let scheme = h.scheme.clone().unwrap_or_else(|| "HTTP".into()).to_ascii_uppercase();
            if scheme != "HTTP" && scheme != "HTTPS" {
                return Err(format!("httpGet scheme {scheme:?} is not HTTP or HTTPS"));
            }
            let path = h.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
            let path = if path.starts_with('/') { path } else { format!("/{path}") };
            Action::Http {
                scheme,
                host: h.host.clone().filter(|h| !h.is_empty()),
                port: port(&h.port, c)?,
                path,
                headers: h.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect(),
            }
        } else if let Some(t) = &p.tcp_socket {
            Action::Tcp { host: t.host.clone().filter(|h| !h.is_empty()), port: port(&t.port, c)? }
        } else if p.grpc.is_some() {
            Action::Unsupported("gRPC probes are not supported in agent mode".into())
        } else {
            return Err("no handler (exec, httpGet, tcpSocket or grpc)".into());
        };
        Ok(Probe {
            kind,
            action,
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold,
            failure_threshold: count(p.failure_threshold, 3),
            termination_grace: p.termination_grace_period_seconds,
        })
    }
}

/// A port by number, or by the name of one of the container's ports.
fn port(p: &IntOrString, c: &k8s::Container) -> Result<u16, String> {
    let number = match p {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) => c
                .ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(s.as_str()))
                .map(|cp| cp.container_port)
                .ok_or_else(|| format!("the container has no port named {s:?}"))?,
        },
    };
    u16::try_from(number).ok().filter(|n| *n > 0).ok_or_else(|| format!("{number} is not a port"))
}

/// Consecutive-outcome counting: a result changes only after `successThreshold`
/// successes or `failureThreshold` failures in a row.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    last: Option<bool>,
    run: u32,
}

impl Counter {
    /// Records one outcome (`true` = success); returns the new result once the run of
    /// equal outcomes reaches its threshold (and on every later equal outcome).
    pub fn observe(&mut self, ok: bool, success_threshold: u32, failure_threshold: u32) -> Option<bool> {
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let needed = if ok { success_threshold } else { failure_threshold };
        (self.run >= needed).then_some(ok)
    }
}

/// The container's probe-derived state, read by the status and the sync loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Results {
    /// Startup probe passed (true from the start without one).
    pub started: bool,
    /// Readiness probe passing (true from the start without one).
    pub ready: bool,
    /// Set when a liveness or startup probe failed its threshold: the container must be
    /// killed.
    pub kill: Option<Kill>,
}

/// A kill a probe asked for: why, and the probe's own grace period if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub message: String,
    pub grace: Option<i64>,
}

impl Results {
    /// Before any probe ran: kubelet's initial values (not started while a startup probe
    /// is pending, not ready while a readiness probe is).
    pub fn initial(probes: &[Probe]) -> Results {
        Results {
            started: !probes.iter().any(|p| p.kind == Kind::Startup),
            ready: !probes.iter().any(|p| p.kind == Kind::Readiness),
            kill: None,
        }
    }

    /// Applies a threshold-crossing result of `probe`. Returns whether anything changed.
    pub fn apply(&mut self, probe: &Probe, ok: bool, container: &str, message: &str) -> bool {
        let before = self.clone();
        let kind = probe.kind;
        match (kind, ok) {
            (Kind::Readiness, ok) => self.ready = ok,
            (Kind::Startup, true) => self.started = true,
            (Kind::Liveness, true) => {}
            (Kind::Liveness | Kind::Startup, false) => {
                if self.kill.is_none() {
                    let message = format!("Container {container} failed {} probe, will be restarted: {message}", kind.name());
                    self.kill = Some(Kill { message, grace: probe.termination_grace });
                }
            }
        }
        *self != before
    }

    /// Whether `kind` runs now: liveness and readiness wait for the startup probe; the
    /// startup probe stops once it passed; nothing runs once a kill is due.
    pub fn runs(&self, kind: Kind) -> bool {
        self.kill.is_none()
            && match kind {
                Kind::Startup => !self.started,
                Kind::Liveness | Kind::Readiness => self.started,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(json: serde_json::Value) -> k8s::Container {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults_and_handlers_are_kubelets() {
        let c = container(serde_json::json!({"name": "c", "ports": [{"name": "web", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"port": "web", "path": "healthz", "httpHeaders": [{"name": "X-A", "value": "1"}]}},
            "readinessProbe": {"tcpSocket": {"port": 81}, "periodSeconds": 1, "successThreshold": 2, "failureThreshold": 1,
                               "initialDelaySeconds": 3, "timeoutSeconds": 2},
            "startupProbe": {"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 5}}));
        let probes = of_container(&c).unwrap();
        assert_eq!(probes.iter().map(|p| p.kind).collect::<Vec<_>>(), [Kind::Startup, Kind::Liveness, Kind::Readiness]);
        let live = &probes[1];
        assert_eq!(
            live.action,
            Action::Http { scheme: "HTTP".into(), host: None, port: 8080, path: "/healthz".into(), headers: vec![("X-A".into(), "1".into())] }
        );
        assert_eq!((live.period, live.timeout, live.success_threshold, live.failure_threshold), (Duration::from_secs(10), Duration::from_secs(1), 1, 3));
        assert_eq!(live.initial_delay, Duration::ZERO);
        let ready = &probes[2];
        assert_eq!(ready.action, Action::Tcp { host: None, port: 81 });
        assert_eq!((ready.period, ready.timeout, ready.success_threshold, ready.failure_threshold), (Duration::from_secs(1), Duration::from_secs(2), 2, 1));
        assert_eq!(ready.initial_delay, Duration::from_secs(3));
        assert_eq!(probes[0].termination_grace, Some(5));
    }

    #[test]
    fn bad_probes_are_refused_with_the_reason() {
        let c = container(serde_json::json!({"name": "c", "livenessProbe": {"tcpSocket": {"port": "nope"}}}));
        assert!(of_container(&c).unwrap_err().contains("no port named \"nope\""));
        let c = container(serde_json::json!({"name": "c", "livenessProbe": {"exec": {"command": ["true"]}, "successThreshold": 2}}));
        assert!(of_container(&c).unwrap_err().contains("successThreshold must be 1"));
        let c = container(serde_json::json!({"name": "c", "readinessProbe": {"periodSeconds": 1}}));
        assert!(of_container(&c).unwrap_err().contains("no handler"));
        let c = container(serde_json::json!({"name": "c", "readinessProbe": {"tcpSocket": {"port": 70000}}}));
        assert!(of_container(&c).is_err());
        let c = container(serde_json::json!({"name": "c", "readinessProbe": {"grpc": {"port": 9000}}}));
        assert!(matches!(of_container(&c).unwrap()[0].action, Action::Unsupported(_)));
    }

    #[test]
    fn thresholds_need_runs_of_equal_outcomes() {
        let mut c = Counter::default();
        // failureThreshold 3: two failures keep the old result, the third flips it.
        assert_eq!(c.observe(false, 1, 3), None);
        assert_eq!(c.observe(false, 1, 3), None);
        assert_eq!(c.observe(false, 1, 3), Some(false));
        assert_eq!(c.observe(false, 1, 3), Some(false));
        // A success in between restarts the count.
        let mut c = Counter::default();
        assert_eq!(c.observe(false, 1, 2), None);
        assert_eq!(c.observe(true, 1, 2), Some(true));
        assert_eq!(c.observe(false, 1, 2), None);
        assert_eq!(c.observe(false, 1, 2), Some(false));
        // successThreshold 2 for readiness.
        assert_eq!(c.observe(true, 2, 2), None);
        assert_eq!(c.observe(true, 2, 2), Some(true));
    }

    #[test]
    fn startup_gates_the_others_and_failures_ask_for_a_kill() {
        let c = container(serde_json::json!({"name": "c",
            "startupProbe": {"exec": {"command": ["true"]}}, "readinessProbe": {"exec": {"command": ["true"]}}}));
        let probes = of_container(&c).unwrap();
        let mut r = Results::initial(&probes);
        assert_eq!(r, Results { started: false, ready: false, kill: None });
        assert!(r.runs(Kind::Startup) && !r.runs(Kind::Readiness) && !r.runs(Kind::Liveness));
        let (startup, readiness) = (&probes[0], &probes[1]);
        let liveness = Probe { kind: Kind::Liveness, termination_grace: Some(7), ..startup.clone() };
        assert!(r.apply(startup, true, "c", ""));
        assert!(!r.runs(Kind::Startup) && r.runs(Kind::Readiness) && r.runs(Kind::Liveness));
        assert!(r.apply(readiness, true, "c", ""));
        assert!(!r.apply(readiness, true, "c", ""), "no change, no update");
        assert!(r.apply(&liveness, false, "c", "exit code 1"));
        let kill = r.kill.clone().unwrap();
        assert_eq!(kill.message, "Container c failed liveness probe, will be restarted: exit code 1");
        assert_eq!(kill.grace, Some(7));
        assert!(!r.runs(Kind::Liveness) && !r.runs(Kind::Readiness));
        // Without probes a container is started and ready at once.
        assert_eq!(Results::initial(&[]), Results { started: true, ready: true, kill: None });
    }
}
