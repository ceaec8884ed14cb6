//! The recorder's window written to disk: once on demand ([`Recorder::write_snapshot`]), or
//! every interval into a folder that keeps the newest files ([`Recorder::spawn_snapshot_files`]),
//! so that yesterday's window can be compared with today's (`moescope diff`) after the fact.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::SnapshotError;
use crate::background::PeriodicThread;
use crate::recorder::Recorder;

/// File names the periodic writer uses: `moescope-snapshot-<end of window, Unix ms>.json`,
/// zero-padded, so names sort by time.
const PREFIX: &str = "moescope-snapshot-";
const SUFFIX: &str = ".json";

impl Recorder {
    /// Writes the window's snapshot ([`Recorder::snapshot`]) to `path`, atomically (a reader
    /// never sees half a file).
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the path. Never panics.
    pub fn write_snapshot(&self, path: impl AsRef<Path>) -> Result<(), SnapshotError> {
        self.snapshot().write_json(path)
    }

    /// Starts a thread that writes the window's snapshot into `dir` every `every`, as
    /// `moescope-snapshot-<end of window, Unix ms>.json`, and deletes the oldest such files
    /// beyond the newest `keep` (at least 1). A failed write is counted and kept
    /// ([`SnapshotFiles::failures`], [`SnapshotFiles::last_error`]); the thread goes on.
    /// Dropping the handle stops it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use moescope_core::{Languages, ModelSpec, Recorder, RouterBatch};
    ///
    /// let recorder = Arc::new(Recorder::new(ModelSpec::new("tiny", 4, 1, vec![0])?)?);
    /// let en = recorder.language("en");
    /// recorder.record(&RouterBatch::at_depth(0, &[1u32, 2], Languages::All(en)))?;
    /// let dir = std::env::temp_dir().join(format!("moescope-doc-{}", std::process::id()));
    /// let files = recorder.spawn_snapshot_files(&dir, Duration::from_millis(5), 2)?;
    /// while files.written() < 3 {
    ///     std::thread::sleep(Duration::from_millis(5));
    /// }
    /// drop(files);
    /// let kept = std::fs::read_dir(&dir)?.count();
    /// assert_eq!(kept, 2);
    /// std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// The OS error if `dir` cannot be created or the thread cannot be spawned.
    pub fn spawn_snapshot_files(
        self: &Arc<Self>,
        dir: impl Into<PathBuf>,
        every: Duration,
        keep: usize,
    ) -> io::Result<SnapshotFiles> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let state = Arc::new(FilesState::default());
        let recorder = Arc::downgrade(self);
        let shared = state.clone();
        let keep = keep.max(1);
        let thread = PeriodicThread::spawn("moescope-snapshots", every, move || {
            let Some(recorder) = recorder.upgrade() else {
                return false;
            };
            match write_and_rotate(&recorder, &dir, keep) {
                Ok(()) => {
                    shared.written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    shared.failures.fetch_add(1, Ordering::Relaxed);
                    *shared
                        .last_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                }
            }
            true
        })?;
        Ok(SnapshotFiles {
            _thread: thread,
            state,
        })
    }
}

#[derive(Default)]
struct FilesState {
    written: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The periodic snapshot writer of [`Recorder::spawn_snapshot_files`]; dropping it stops the
/// thread.
pub struct SnapshotFiles {
    _thread: PeriodicThread,
    state: Arc<FilesState>,
}

impl SnapshotFiles {
    /// Snapshots written so far.
    pub fn written(&self) -> u64 {
        self.state.written.load(Ordering::Relaxed)
    }

    /// Writes (or deletions of old files) that failed so far.
    pub fn failures(&self) -> u64 {
        self.state.failures.load(Ordering::Relaxed)
    }

    /// The last failure's message, if any.
    pub fn last_error(&self) -> Option<String> {
        self.state
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl std::fmt::Debug for SnapshotFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotFiles")
            .field("written", &self.written())
            .field("failures", &self.failures())
            .finish_non_exhaustive()
    }
}

fn write_and_rotate(recorder: &Recorder, dir: &Path, keep: usize) -> Result<(), SnapshotError> {
    let snapshot = recorder.snapshot();
    let end = snapshot.window.map_or(0, |w| w.end_unix_ms);
    let path = dir.join(format!("{PREFIX}{end:020}{SUFFIX}"));
    snapshot.write_json(&path)?;
    let io_err = |source| SnapshotError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io_err)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for name in &names[..excess] {
        std::fs::remove_file(dir.join(name)).map_err(io_err)?;
    }
    Ok(())
}
