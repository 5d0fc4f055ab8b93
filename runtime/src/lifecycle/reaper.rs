//! The timeout reaper: a background thread that applies each running sandbox's timeout policy (kill or
//! pause) once its end time or idle timeout has passed. It holds the manager weakly, so it ends with the
//! last handle to the manager, or when the manager shuts down.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::manager::{Inner, Manager};

/// Starts the reaper thread.
pub(crate) fn start(manager: Weak<Inner>, stop: Arc<(Mutex<bool>, Condvar)>, interval: Duration) {
    let spawned = std::thread::Builder::new()
        .name("stasis-reaper".into())
        .spawn(move || {
            loop {
                {
                    let (stopped, wake) = &*stop;
                    let guard = stopped.lock().unwrap_or_else(|e| e.into_inner());
                    let (guard, _) = wake
                        .wait_timeout(guard, interval)
                        .unwrap_or_else(|e| e.into_inner());
                    if *guard {
                        return;
                    }
                }
                let Some(inner) = manager.upgrade() else {
                    return;
                };
                Manager::from_inner(inner).reap();
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "could not start the timeout reaper; timeouts will not be applied");
    }
}
