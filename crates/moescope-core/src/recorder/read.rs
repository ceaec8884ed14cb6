//! The reader side: upkeep (fold the stripes, rotate the window), snapshots and totals.
//!
//! Readers share the recorder's reader mutex, which writers never touch. Folding claims each
//! stripe in turn (waiting for a writer to let go: the reader may wait, writers never do);
//! rotation follows the epoch protocol of [`crate::stage`].

use crate::sync::atomic::Ordering;
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use super::{LanguageTotals, ReaderState, RecordTimes, Recorder, RECORD_TIME_BUCKETS_SECONDS};
use crate::background::PeriodicThread;
use crate::batch::DropReason;
use crate::sampling::threshold_for_rate;
use crate::snapshot::{BucketCounts, LanguageCounts, Snapshot, WindowRange};

impl Recorder {
    /// Folds the stripes into the window and rotates it if a bucket boundary has passed.
    /// Call it every few seconds from a background thread ([`spawn_upkeep`](Self::spawn_upkeep)
    /// or an exporter's); [`snapshot`](Self::snapshot) calls it too. Counts recorded since
    /// the last upkeep land in the bucket that is current when it runs.
    pub fn upkeep(&self) {
        let now = self.clock.now_unix_ms();
        let mut st = self.lock();
        self.rotate_due(&mut st, now);
        self.fold_all(&mut st);
        self.recycle_idle(&mut st, now);
    }

    /// The sampled durations of `record` calls since the last call, and resets them.
    pub fn take_record_times(&self) -> RecordTimes {
        let mut h = self
            .record_times
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let secs = |ns: u64| ns as f64 / 1e9;
        let times = RecordTimes {
            samples: h.len(),
            sum_seconds: h.mean() * h.len() as f64 / 1e9,
            buckets: RECORD_TIME_BUCKETS_SECONDS
                .iter()
                .map(|&le| (le, h.count_between(0, (le * 1e9) as u64)))
                .collect(),
            p50_seconds: secs(h.value_at_quantile(0.5)),
            p90_seconds: secs(h.value_at_quantile(0.9)),
            p99_seconds: secs(h.value_at_quantile(0.99)),
            max_seconds: secs(h.max()),
        };
        h.reset();
        times
    }

    /// Totals since start per language tag (folding the stripes first): the source of the
    /// `_total` counters, which unlike the window never forget.
    pub fn totals(&self) -> BTreeMap<String, LanguageTotals> {
        let mut st = self.lock();
        self.fold_all(&mut st);
        let (l, e) = (self.layers, self.experts);
        let mut out: BTreeMap<String, LanguageTotals> = BTreeMap::new();
        for (id, tag) in self.registry.languages() {
            let Some((tokens, selections)) = st.ring.totals(id.index()) else {
                continue;
            };
            let t = out
                .entry(tag.as_str().to_owned())
                .or_insert_with(|| LanguageTotals {
                    tokens: 0.0,
                    layer_tokens: vec![0.0; l],
                    expert_selections: vec![vec![0.0; e]; l],
                });
            for (d, s) in t.layer_tokens.iter_mut().zip(tokens) {
                *d += s;
            }
            for (row, src) in t
                .expert_selections
                .iter_mut()
                .zip(selections.chunks_exact(e))
            {
                for (d, s) in row.iter_mut().zip(src) {
                    *d += s;
                }
            }
            t.tokens = t.layer_tokens.iter().copied().fold(0.0, f64::max);
        }
        out
    }

    /// When the current bucket began (Unix ms), as of the last upkeep.
    pub fn current_bucket_start_unix_ms(&self) -> u64 {
        let st = self.lock();
        st.ring.start_ms(st.ring.current())
    }

    /// Starts a background thread that calls [`upkeep`](Self::upkeep) every `every` until the
    /// returned handle is dropped. A serving binary without an exporter (which runs its own
    /// upkeep) should keep one alive, so that buckets rotate on time.
    ///
    /// # Errors
    /// The OS error if the thread cannot be spawned.
    pub fn spawn_upkeep(self: &Arc<Self>, every: Duration) -> std::io::Result<UpkeepThread> {
        let recorder = Arc::downgrade(self);
        PeriodicThread::spawn("moescope-upkeep", every, move || match recorder.upgrade() {
            Some(r) => {
                r.upkeep();
                true
            }
            None => false,
        })
    }

    /// Folds every stripe into the current bucket (waiting for writers to let go of each; the
    /// reader may wait, writers never do).
    fn fold_all(&self, st: &mut ReaderState) {
        let mut discarded = 0;
        for stripe in self.stripes.iter() {
            let claim = stripe.claim_waiting();
            let parity = (stripe.epoch.load(Ordering::Relaxed) & 1) as usize;
            // Liveness is read after the claim: a writer that staged into this stripe
            // interned its language before, so a new language is seen live here.
            discarded += st.ring.fold(&claim, &self.thresholds[parity], |li| {
                self.registry.is_live(li)
            });
        }
        if discarded > 0 {
            self.count_drop(DropReason::UnknownLanguage, discarded);
        }
    }

    /// Gives back the slots of languages idle for the whole window when new tags are waiting
    /// for one (see [`LanguageRegistry`](crate::LanguageRegistry)): not interned since the
    /// window began, and nothing of theirs left in it.
    fn recycle_idle(&self, st: &mut ReaderState, now: u64) {
        let span = self
            .window
            .bucket_ms
            .saturating_mul(self.window.buckets as u64 + 1);
        let Some(since) = now.checked_sub(span) else {
            return;
        };
        let freed = self
            .registry
            .free_idle(since, |id| st.ring.is_idle(id.index()));
        for id in freed {
            st.ring.forget(id.index());
        }
    }

    fn rotate_due(&self, st: &mut ReaderState, now: u64) {
        let bucket = self.window.bucket_ms;
        let behind = now.saturating_sub(st.next_boundary_ms) / bucket;
        let slots = self.window.ring_slots() as u64;
        if behind > slots {
            // Idle for longer than the window: the last `slots` rotations empty it anyway.
            st.next_boundary_ms += (behind - slots) * bucket;
        }
        // Several boundaries passed since the last upkeep: the buckets in between got no
        // upkeep, so they stay empty, and what the stripes hold goes to the last one closed
        // (still in the window) rather than to the bucket current at the previous upkeep.
        while now >= st.next_boundary_ms + bucket {
            st.ring.rotate(st.next_boundary_ms);
            st.next_boundary_ms += bucket;
        }
        if now >= st.next_boundary_ms {
            let boundary = st.next_boundary_ms;
            self.rotate(st, boundary);
            st.next_boundary_ms += bucket;
        }
    }

    /// Closes the current bucket at `boundary`. See [`crate::stage`] for the epoch protocol.
    fn rotate(&self, st: &mut ReaderState, boundary: u64) {
        // 1. Fold what the stripes hold, so the closing bucket's traffic is known.
        self.fold_all(st);
        // 2. Sampling thresholds of the next bucket, from the closing bucket's traffic.
        let closing = st.ring.current();
        let seconds = boundary.saturating_sub(st.ring.start_ms(closing)).max(1) as f64 / 1000.0;
        let next = &self.thresholds[((st.epoch + 1) & 1) as usize];
        let default = threshold_for_rate(self.sampling.default_rate().initial_rate());
        for t in next.iter() {
            t.store(default, Ordering::Relaxed);
        }
        for (id, tag) in self.registry.languages() {
            let offered = st.ring.weighted_tokens(closing, id.index()) / seconds;
            let rate = self.sampling.rate_for_tag(&tag).next_rate(offered);
            next[id.index()].store(threshold_for_rate(rate), Ordering::Relaxed);
        }
        // 3. Fold the rest of the closing epoch and move each stripe to the next one.
        let current = &self.thresholds[(st.epoch & 1) as usize];
        let mut discarded = 0;
        for stripe in self.stripes.iter() {
            let claim = stripe.claim_waiting();
            discarded += st
                .ring
                .fold(&claim, current, |li| self.registry.is_live(li));
            stripe.epoch.store(st.epoch + 1, Ordering::Relaxed); // published by the release
        }
        if discarded > 0 {
            self.count_drop(DropReason::UnknownLanguage, discarded);
        }
        // 4. Open the next bucket.
        st.ring.rotate(boundary);
        st.epoch += 1;
    }

    /// The rolling window merged into one [`Snapshot`] (folding and rotating first). Languages
    /// with no tokens in the window are left out. Split halves are included.
    pub fn snapshot(&self) -> Snapshot {
        self.read(None)
    }

    /// Like [`snapshot`](Self::snapshot), with each bucket's counts in `buckets` (oldest first)
    /// for the spread of a metric across buckets. Larger: one set of counts per bucket.
    pub fn snapshot_with_buckets(&self) -> Snapshot {
        self.read(Some(None))
    }

    /// Like [`snapshot_with_buckets`](Self::snapshot_with_buckets), with only the buckets that
    /// began after `after_start_unix_ms` in `buckets` (the current, still open bucket is
    /// always among them). A reader that keeps per-bucket results computes each closed bucket
    /// once: pass the start of the newest closed bucket it has seen.
    pub fn snapshot_with_buckets_after(&self, after_start_unix_ms: u64) -> Snapshot {
        self.read(Some(Some(after_start_unix_ms)))
    }

    /// `buckets`: `None` for no buckets, `Some(None)` for all of them, `Some(Some(t))` for
    /// those that began after `t` (and the current one).
    fn read(&self, buckets: Option<Option<u64>>) -> Snapshot {
        let now = self.clock.now_unix_ms();
        let mut st = self.lock();
        self.rotate_due(&mut st, now);
        self.fold_all(&mut st);
        let tags = self.registry.languages();
        let mut snap = Snapshot::new(self.spec.clone());
        // The window: its running sums, one read per language.
        for (id, tag) in &tags {
            if let Some(counts) = st.ring.read_window(id.index()) {
                merge(&mut snap.languages, tag.as_str(), counts);
            }
        }
        for counts in snap.languages.values_mut() {
            counts.tokens = counts.layers.iter().map(|l| l.tokens).fold(0.0, f64::max);
        }
        let current = st.ring.current();
        let start = st.ring.order.front().map(|&s| st.ring.start_ms(s));
        // Buckets, when asked for: each read on its own.
        if let Some(after) = buckets {
            for &slot in &st.ring.order {
                let window = WindowRange {
                    start_unix_ms: st.ring.start_ms(slot),
                    end_unix_ms: if slot == current {
                        now
                    } else {
                        st.ring.end_ms(slot)
                    },
                };
                if after.is_some_and(|t| slot != current && window.start_unix_ms <= t) {
                    continue;
                }
                let mut langs = BTreeMap::new();
                for (id, tag) in &tags {
                    if let Some(mut counts) = st.ring.read_bucket(slot, id.index()) {
                        counts.halves = None;
                        merge(&mut langs, tag.as_str(), counts);
                    }
                }
                snap.buckets.push(BucketCounts {
                    window,
                    languages: langs,
                });
            }
        }
        snap.window = Some(WindowRange {
            start_unix_ms: start.unwrap_or(now),
            end_unix_ms: now,
        });
        snap
    }
}

/// Adds `counts` under `tag` (language slots that share a tag are merged).
fn merge(langs: &mut BTreeMap<String, LanguageCounts>, tag: &str, counts: LanguageCounts) {
    match langs.get_mut(tag) {
        Some(existing) => existing.add_scaled(&counts, 1.0),
        None => {
            langs.insert(tag.to_owned(), counts);
        }
    }
}

/// The background upkeep thread of [`Recorder::spawn_upkeep`]; dropping it stops the thread.
pub type UpkeepThread = PeriodicThread;
