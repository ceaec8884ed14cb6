//! The double buffer's bookkeeping, apart from CUDA so it can be tested anywhere.
//!
//! Two accumulators live on the device. The kernels count into the *active* one, which a
//! control word in device memory names. A flush, in stream order:
//!
//! 1. on the serving stream: set the control word to the other accumulator, record event A;
//! 2. on the monitor's own stream: wait for A, copy the old accumulator into pinned host
//!    memory, zero it, record event B;
//! 3. on the host, later: poll B (never blocking); once complete, merge the host copy into
//!    the recorder.
//!
//! A second flush cannot start while one is pending: the accumulator it would switch back to
//! may not be zeroed yet, and the pinned copy is still unread. [`DoubleBuffer`] enforces this.

/// What [`DoubleBuffer::begin_flush`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begin {
    /// Switch the kernels to `activate` and drain `drain`.
    Flip {
        /// The accumulator to drain (the previously active one).
        drain: usize,
        /// The accumulator the kernels count into from now on.
        activate: usize,
    },
    /// A flush is still pending (its copy has not completed): poll first.
    Pending,
}

/// Which accumulator is active and which, if any, is being drained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DoubleBuffer {
    active: usize,
    draining: Option<usize>,
    flushes: u64,
}

impl DoubleBuffer {
    /// The accumulator the kernels count into.
    pub fn active(&self) -> usize {
        self.active
    }

    /// The accumulator being copied out, if a flush is pending.
    pub fn draining(&self) -> Option<usize> {
        self.draining
    }

    /// Flushes completed.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// Starts a flush: flips the active accumulator unless one is pending.
    pub fn begin_flush(&mut self) -> Begin {
        if self.draining.is_some() {
            return Begin::Pending;
        }
        let drain = self.active;
        self.active = 1 - drain;
        self.draining = Some(drain);
        Begin::Flip {
            drain,
            activate: self.active,
        }
    }

    /// The pending flush's copy and zeroing completed: the drained accumulator may be
    /// activated by the next flush. Returns it; `None` if no flush was pending.
    pub fn finish_flush(&mut self) -> Option<usize> {
        let d = self.draining.take()?;
        self.flushes += 1;
        Some(d)
    }

    /// The flip of a begun flush could not be issued (a CUDA error): undo it.
    pub fn abort_flush(&mut self) {
        if let Some(d) = self.draining.take() {
            self.active = d;
        }
    }
}

/// Counts steps and says when a periodic flush is due.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushSchedule {
    every: u32,
    since: u32,
}

impl FlushSchedule {
    /// A flush every `every` steps (`0`: only on demand).
    pub fn every(every: u32) -> FlushSchedule {
        FlushSchedule { every, since: 0 }
    }

    /// One step ended; true when a flush is due. A due flush that could not start (one was
    /// pending) stays due until [`flushed`](Self::flushed).
    pub fn step(&mut self) -> bool {
        self.since = self.since.saturating_add(1);
        self.every != 0 && self.since >= self.every
    }

    /// A flush started.
    pub fn flushed(&mut self) {
        self.since = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_alternate_and_never_reuse_an_undrained_buffer() {
        let mut d = DoubleBuffer::default();
        assert_eq!(d.active(), 0);
        assert_eq!(
            d.begin_flush(),
            Begin::Flip {
                drain: 0,
                activate: 1
            }
        );
        assert_eq!(d.active(), 1);
        assert_eq!(d.draining(), Some(0));
        // Buffer 0 is still being copied: no second flip.
        assert_eq!(d.begin_flush(), Begin::Pending);
        assert_eq!(d.active(), 1);
        assert_eq!(d.finish_flush(), Some(0));
        assert_eq!(d.finish_flush(), None);
        assert_eq!(
            d.begin_flush(),
            Begin::Flip {
                drain: 1,
                activate: 0
            }
        );
        assert_eq!(d.finish_flush(), Some(1));
        assert_eq!(d.flushes(), 2);
        assert_eq!(
            d.begin_flush(),
            Begin::Flip {
                drain: 0,
                activate: 1
            }
        );
        d.abort_flush();
        assert_eq!((d.active(), d.draining(), d.flushes()), (0, None, 2));
    }

    #[test]
    fn a_schedule_fires_every_n_steps_and_stays_due_until_flushed() {
        let mut s = FlushSchedule::every(3);
        assert_eq!([s.step(), s.step(), s.step()], [false, false, true]);
        assert!(s.step(), "still due: the flush did not start");
        s.flushed();
        assert_eq!([s.step(), s.step(), s.step()], [false, false, true]);
        let mut never = FlushSchedule::every(0);
        assert!((0..100).all(|_| !never.step()));
    }
}
