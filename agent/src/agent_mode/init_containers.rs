//! The order of init containers, as kubelet runs them: one at a time, each to a clean
//! exit before the next starts and before any app container. A failed one is run again
//! (after its back-off) unless restartPolicy is Never, which fails the pod. A sidecar
//! (an init container with `restartPolicy: Always`) lets the next one start once it has
//! started, and keeps running beside the app containers. Pure: [`super::pod_sync`] acts
//! on the [`Step`].

/// What the runtime says about one init container's current instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No instance yet (or its start failed before it ran).
    NotStarted,
    /// Created or running; `started` once it runs and its startup probe (if any) passed.
    Running { started: bool },
    Exited { code: i32 },
}

/// One init container as the step decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Init {
    pub sidecar: bool,
    pub state: State,
    /// A sidecar that has started once no longer holds the sequence up, even while it
    /// is being restarted.
    pub started_once: bool,
}

/// What to do next for the pod's init containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Make init container `i` run: start it, or start it again after its back-off.
    Run(usize),
    /// One is running (or a sidecar is starting): wait for it.
    Wait,
    /// Init container `i` failed and restartPolicy is Never: the pod has failed.
    Failed(usize),
    /// Every regular one succeeded and every sidecar started: app containers may start.
    Done,
}

pub fn next(inits: &[Init], restart_policy: &str) -> Step {
    for (i, c) in inits.iter().enumerate() {
        let step = if c.sidecar {
            match c.state {
                State::Running { started: true } => None,
                _ if c.started_once => None,
                State::Running { started: false } => Some(Step::Wait),
                State::NotStarted | State::Exited { .. } => Some(Step::Run(i)),
            }
        } else {
            match c.state {
                State::Exited { code: 0 } => None,
                State::Exited { .. } if restart_policy == "Never" => Some(Step::Failed(i)),
                State::Exited { .. } | State::NotStarted => Some(Step::Run(i)),
                State::Running { .. } => Some(Step::Wait),
            }
        };
        if let Some(step) = step {
            return step;
        }
    }
    Step::Done
}

/// Indices of the init containers not yet done (the `Initialized` condition's message).
pub fn incomplete(inits: &[Init]) -> Vec<usize> {
    inits
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            if c.sidecar {
                !(c.started_once || c.state == State::Running { started: true })
            } else {
                c.state != State::Exited { code: 0 }
            }
        })
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regular(state: State) -> Init {
        Init { sidecar: false, state, started_once: false }
    }
    fn sidecar(state: State, started_once: bool) -> Init {
        Init { sidecar: true, state, started_once }
    }

    #[test]
    fn regular_init_containers_run_one_after_another() {
        let not = State::NotStarted;
        let running = State::Running { started: true };
        let ok = State::Exited { code: 0 };
        let failed = State::Exited { code: 3 };
        assert_eq!(next(&[], "Always"), Step::Done);
        assert_eq!(next(&[regular(not), regular(not)], "Always"), Step::Run(0));
        assert_eq!(next(&[regular(running), regular(not)], "Always"), Step::Wait);
        assert_eq!(next(&[regular(ok), regular(not)], "Always"), Step::Run(1));
        assert_eq!(next(&[regular(ok), regular(running)], "Always"), Step::Wait);
        assert_eq!(next(&[regular(ok), regular(ok)], "Never"), Step::Done);
        // A failure is run again, except under Never, which fails the pod.
        assert_eq!(next(&[regular(ok), regular(failed)], "OnFailure"), Step::Run(1));
        assert_eq!(next(&[regular(ok), regular(failed)], "Always"), Step::Run(1));
        assert_eq!(next(&[regular(failed), regular(not)], "Never"), Step::Failed(0));
        assert_eq!(incomplete(&[regular(ok), regular(failed), regular(not)]), [1, 2]);
    }

    #[test]
    fn sidecars_only_need_to_have_started() {
        let starting = State::Running { started: false };
        let running = State::Running { started: true };
        let not = State::NotStarted;
        assert_eq!(next(&[sidecar(not, false), regular(not)], "Never"), Step::Run(0));
        // Its startup probe has not passed yet: the next one waits.
        assert_eq!(next(&[sidecar(starting, false), regular(not)], "Never"), Step::Wait);
        assert_eq!(next(&[sidecar(running, true), regular(not)], "Never"), Step::Run(1));
        // Exited after it had started (restarted elsewhere): it does not hold the rest up,
        // and a sidecar's exit never fails the pod.
        assert_eq!(next(&[sidecar(State::Exited { code: 1 }, true), regular(State::Exited { code: 0 })], "Never"), Step::Done);
        assert_eq!(next(&[sidecar(State::Exited { code: 1 }, false)], "Never"), Step::Run(0));
        assert_eq!(incomplete(&[sidecar(starting, false), sidecar(State::Exited { code: 1 }, true)]), [0]);
    }
}
