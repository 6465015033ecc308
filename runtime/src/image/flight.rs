//! Single-flight: callers asking for the same key while work is under way wait for that
//! work instead of starting their own. The work runs in a spawned task, so it finishes
//! (and its result is shared) even if the caller that started it goes away.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::{Error, Result};

type Flight<T> = Shared<BoxFuture<'static, Result<T, Arc<Error>>>>;

pub(crate) struct SingleFlight<T: Clone> {
    flights: Mutex<HashMap<String, Flight<T>>>,
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    pub fn new() -> Self {
        SingleFlight { flights: Mutex::new(HashMap::new()) }
    }

    /// Runs `work` for `key`, or joins the run already under way for it.
    pub async fn run<F>(&self, key: String, work: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            match flights.get(&key) {
                // A finished flight nobody collected is stale: start afresh.
                Some(f) if f.peek().is_none() => f.clone(),
                _ => {
                    let task = tokio::spawn(work);
                    let f = async move {
                        match task.await {
                            Ok(r) => r.map_err(Arc::new),
                            Err(e) => Err(Arc::new(Error::Internal(format!("background task failed: {e}")))),
                        }
                    }
                    .boxed()
                    .shared();
                    flights.insert(key.clone(), f.clone());
                    f
                }
            }
        };
        let result = flight.clone().await;
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights.get(&key).is_some_and(|f| f.peek().is_some()) {
            flights.remove(&key);
        }
        result.map_err(|e| duplicate(&e))
    }
}

/// A copy of a shared error for each waiter (`io::Error` is not `Clone`).
fn duplicate(e: &Error) -> Error {
    match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(m.clone()),
        Error::NotFound { kind, id } => Error::NotFound { kind, id: id.clone() },
        Error::AlreadyExists(m) => Error::AlreadyExists(m.clone()),
        Error::FailedPrecondition(m) => Error::FailedPrecondition(m.clone()),
        Error::Unauthenticated(m) => Error::Unauthenticated(m.clone()),
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        Error::DeadlineExceeded(m) => Error::DeadlineExceeded(m.clone()),
        Error::Io { context, path, source } => {
            Error::Io { context, path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
        }
        Error::Internal(m) => Error::Internal(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn same_key_runs_once_different_keys_in_parallel() {
        let flights = Arc::new(SingleFlight::<usize>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let started = std::time::Instant::now();
        let mut joins = Vec::new();
        for i in 0..6 {
            let (flights, runs) = (Arc::clone(&flights), Arc::clone(&runs));
            let key = if i < 4 { "a".to_string() } else { format!("b{i}") };
            joins.push(tokio::spawn(async move {
                flights
                    .run(key, async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok(7)
                    })
                    .await
            }));
        }
        for j in joins {
            assert_eq!(j.await.unwrap().unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3, "a once, b4 and b5 once each");
        assert!(started.elapsed() < Duration::from_millis(600), "ran in parallel");
        // Afterwards the key is free again.
        let again = flights.run("a".into(), async { Err::<usize, _>(Error::Unavailable("down".into())) }).await;
        assert!(matches!(again, Err(Error::Unavailable(m)) if m == "down"));
    }

    #[tokio::test]
    async fn work_survives_a_cancelled_caller() {
        let flights = Arc::new(SingleFlight::<u8>::new());
        let done = Arc::new(AtomicUsize::new(0));
        let d = Arc::clone(&done);
        let f = Arc::clone(&flights);
        let first = tokio::spawn(async move {
            f.run("k".into(), async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                d.fetch_add(1, Ordering::SeqCst);
                Ok(1)
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.abort();
        let second = flights.run("k".into(), async { Ok(2) }).await.unwrap();
        assert_eq!(second, 1, "joined the flight already under way");
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
