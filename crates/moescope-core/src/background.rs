//! The background-thread pattern every periodic job of moescope shares (the recorder's upkeep,
//! an exporter's publisher): a named thread that runs a job every interval until its handle is
//! dropped.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// A thread running a job every interval; dropping the handle stops it: the thread returns
/// after the run in progress, if any, and the drop waits for that.
#[derive(Debug)]
pub struct PeriodicThread {
    stop: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl PeriodicThread {
    /// Starts thread `name`, which calls `job` every `every` (the first call after one
    /// interval) until the handle is dropped or `job` returns `false`.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use moescope_core::background::PeriodicThread;
    ///
    /// let runs = Arc::new(AtomicU32::new(0));
    /// let counter = runs.clone();
    /// let thread = PeriodicThread::spawn("ticker", Duration::from_millis(1), move || {
    ///     counter.fetch_add(1, Ordering::Relaxed) < 2 // three runs, then stop
    /// })?;
    /// while runs.load(Ordering::Relaxed) < 3 {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// drop(thread);
    /// assert_eq!(runs.load(Ordering::Relaxed), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// The OS error if the thread cannot be spawned.
    pub fn spawn(
        name: &str,
        every: Duration,
        mut job: impl FnMut() -> bool + Send + 'static,
    ) -> std::io::Result<PeriodicThread> {
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || loop {
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {
                        if !job() {
                            return;
                        }
                    }
                    // Stopped (the handle was dropped, or said so).
                    _ => return,
                }
            })?;
        Ok(PeriodicThread {
            stop: Some(stop),
            handle: Some(handle),
        })
    }
}

impl Drop for PeriodicThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
