//! Language tags: normalization, validation and lock-free interning to small ids.
//!
//! Tags arrive with requests and are untrusted. Before a tag can grow anything it is
//! normalized (`_` becomes `-`, BCP 47 casing: `zh_hant_tw` → `zh-Hant-TW`), validated
//! (subtags of 1–8 ASCII letters or digits, a first subtag of 2–8 letters or a private-use
//! `x`, at most [`MAX_TAG_LEN`] bytes in all) and interned to a [`LangId`]. The number of
//! tracked languages is capped: once the cap is reached, new tags map to [`LangId::OTHER`],
//! so no client can grow memory or metric cardinality. Missing, empty or invalid tags map
//! to [`LangId::UND`] ("undetermined", as in BCP 47); invalid ones are also counted.
//!
//! Special tokens (padding, BOS/EOS, chat-template tokens) are excluded from every count by
//! tagging them [`LangId::EXCLUDED`], as the paper excludes them from its statistics.
//!
//! # No client can take the slots for good
//!
//! With an allowlist ([`LanguageRegistry::with_allowlist`], or the recorder builder's
//! `allowed_languages`) only listed tags get a slot. Without one, when a new tag finds every
//! slot taken, the recorder's upkeep gives back the slots of languages that were neither
//! interned nor recorded for a whole window (their counts have all left the window, and their
//! totals are dropped), and the next new tags take them. A freed id that a caller kept counts
//! nowhere: its staged counts are dropped at the next fold (as `unknown_language`). Intern
//! a tag per request (it is a lock-free lookup) rather than keeping ids across idle periods:
//! an id kept through a whole idle window and used again after its slot was taken by another
//! language would count for that language.
//!
//! # Concurrency
//!
//! [`LanguageRegistry::intern`] never takes a lock. A tag lives in a fixed slot made of
//! atomics; a writer claims a fresh slot with one `fetch_add` (or a freed one with a
//! compare-and-swap of its state word), writes the tag and publishes it by setting `READY` with
//! `Release`; readers only compare slots whose state they loaded with `Acquire`, and check
//! the slot's generation again after reading the tag. Two threads interning the same new tag at the same instant may both claim a
//! slot: the tag then owns two slots, which costs one slot of the cap and nothing else,
//! because snapshots merge slots by tag.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Longest accepted tag, in bytes (the BCP 47 recommendation for buffers).
pub const MAX_TAG_LEN: usize = 35;

/// Default number of tracked languages, besides `und` and `other`.
pub const DEFAULT_MAX_LANGUAGES: usize = 32;

/// Hard ceiling on tracked languages; ids are `u16` and the recorder sizes per-thread scratch
/// by the cap.
pub const MAX_LANGUAGES_LIMIT: usize = 1024;

const TAG_WORDS: usize = 5; // 40 bytes ≥ MAX_TAG_LEN

/// A small interned language id. Copy it freely; it is an index into the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LangId(u16);

impl LangId {
    /// Untagged or invalid tags ("undetermined").
    pub const UND: LangId = LangId(0);
    /// Valid tags past the cap on tracked languages.
    pub const OTHER: LangId = LangId(1);
    /// Special tokens: excluded from every count.
    pub const EXCLUDED: LangId = LangId(u16::MAX);

    /// The slot index of this id (`UND` is 0, `OTHER` is 1, tracked languages follow).
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The id of slot `index`, for callers that keep ids in their own tensors.
    pub const fn from_index(index: u16) -> LangId {
        LangId(index)
    }
}

/// A normalized tag held inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    len: u8,
    bytes: [u8; TAG_WORDS * 8],
}

impl Tag {
    /// Normalizes and validates `raw`.
    ///
    /// # Errors
    /// [`TagError`] says what is wrong with the tag. An empty (or all-whitespace) tag is an
    /// error too ([`TagError::Empty`]); the registry maps it to `und` without counting it.
    pub fn parse(raw: &str) -> Result<Tag, TagError> {
        let raw = raw.trim_matches(|c: char| c.is_ascii_whitespace());
        if raw.is_empty() {
            return Err(TagError::Empty);
        }
        if raw.len() > MAX_TAG_LEN {
            return Err(TagError::TooLong { len: raw.len() });
        }
        let mut tag = Tag {
            len: raw.len() as u8,
            bytes: [0; TAG_WORDS * 8],
        };
        let src = raw.as_bytes();
        let mut start = 0;
        let mut index = 0;
        let mut after_singleton = false;
        while start <= src.len() {
            let end = src[start..]
                .iter()
                .position(|&b| b == b'-' || b == b'_')
                .map_or(src.len(), |p| start + p);
            let sub = &src[start..end];
            if sub.is_empty() || sub.len() > 8 {
                return Err(TagError::BadSubtag { index });
            }
            if let Some(&bad) = sub.iter().find(|b| !b.is_ascii_alphanumeric()) {
                return Err(TagError::BadCharacter { byte: bad });
            }
            let alpha = sub.iter().all(u8::is_ascii_alphabetic);
            if index == 0 && !(alpha && (sub.len() >= 2 || sub.eq_ignore_ascii_case(b"x"))) {
                return Err(TagError::BadSubtag { index });
            }
            for (i, &b) in sub.iter().enumerate() {
                let upper = if index == 0 || after_singleton {
                    false
                } else if sub.len() == 2 && alpha {
                    true // region
                } else {
                    sub.len() == 4 && alpha && i == 0 // script, title case
                };
                tag.bytes[start + i] = if upper {
                    b.to_ascii_uppercase()
                } else {
                    b.to_ascii_lowercase()
                };
            }
            if end < src.len() {
                tag.bytes[end] = b'-';
            }
            after_singleton |= sub.len() == 1;
            index += 1;
            start = end + 1;
        }
        Ok(tag)
    }

    /// The normalized tag.
    pub fn as_str(&self) -> &str {
        // Only ASCII letters, digits and '-' are ever written.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("und")
    }

    fn words(&self) -> [u64; TAG_WORDS] {
        let mut words = [0u64; TAG_WORDS];
        for (w, chunk) in words.iter_mut().zip(self.bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
        words
    }

    fn from_words(words: [u64; TAG_WORDS]) -> Tag {
        let mut tag = Tag {
            len: 0,
            bytes: [0; TAG_WORDS * 8],
        };
        for (chunk, w) in tag.bytes.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        tag.len = tag
            .bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(MAX_TAG_LEN) as u8;
        tag
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({:?})", self.as_str())
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a language tag was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// The tag is empty or whitespace.
    #[error("language tag is empty")]
    Empty,
    /// The tag is longer than [`MAX_TAG_LEN`] bytes.
    #[error("language tag is {len} bytes long; at most {MAX_TAG_LEN} are accepted")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A byte other than an ASCII letter, digit, `-` or `_`.
    #[error("language tag contains byte 0x{byte:02x}; only ASCII letters, digits, '-' and '_' are accepted")]
    BadCharacter {
        /// The offending byte.
        byte: u8,
    },
    /// A subtag that is empty, longer than 8 characters, or (the first) not 2–8 letters.
    #[error("language tag subtag {index} is malformed (subtags are 1-8 letters or digits; the first is 2-8 letters)")]
    BadSubtag {
        /// Zero-based position of the subtag.
        index: usize,
    },
}

/// A slot's state word: who may read its tag, and when the tag was last interned.
///
/// | bits | meaning |
/// |---|---|
/// | 0..48 | last intern, Unix ms (mod 2^48) |
/// | 48..62 | generation: bumped each time the slot is claimed for a tag |
/// | 62 | `READY`: the tag words are written and the slot is findable |
/// | 63 | `CLAIMING`: a thread is writing the tag words |
///
/// A slot is free when neither flag is set. Every transition is a compare-and-swap on the
/// whole word, so an intern that refreshes the activity and a reader that frees an idle slot
/// cannot both succeed from the same state.
mod state {
    pub const ACTIVITY: u64 = (1 << 48) - 1;
    pub const GENERATION: u64 = ((1 << 14) - 1) << 48;
    pub const READY: u64 = 1 << 62;
    pub const CLAIMING: u64 = 1 << 63;

    pub fn activity(st: u64) -> u64 {
        st & ACTIVITY
    }

    pub fn next_generation(st: u64) -> u64 {
        (st & GENERATION).wrapping_add(1 << 48) & GENERATION
    }
}

struct TagSlot {
    /// See [`state`]. Set to `READY` last, with `Release`, once `words` hold the tag.
    state: AtomicU64,
    words: [AtomicU64; TAG_WORDS],
}

impl TagSlot {
    fn new() -> TagSlot {
        TagSlot {
            state: AtomicU64::new(0),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The tag words and the state they were read under, if the slot is ready.
    fn load(&self) -> Option<([u64; TAG_WORDS], u64)> {
        let st = self.state.load(Ordering::Acquire);
        if st & state::READY == 0 {
            return None;
        }
        let words = std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed));
        // A slot freed and claimed again while we read has another generation: retry later.
        let again = self.state.load(Ordering::Acquire);
        (again & (state::READY | state::GENERATION) == st & (state::READY | state::GENERATION))
            .then_some((words, st))
    }
}

/// Interns untrusted language tags to [`LangId`]s, with a cap on how many are tracked.
///
/// Optionally with an allowlist ([`LanguageRegistry::with_allowlist`]): only listed tags get a
/// slot of their own, every other valid tag counts as `other`. Without one, a registry whose
/// slots are all taken can give back the slots of languages that went idle
/// (`free_idle`, which the recorder's upkeep calls), so no client can take every
/// slot for the life of the process.
pub struct LanguageRegistry {
    max_languages: usize,
    /// `max_languages + 2` slots: `und`, `other`, then tracked tags in claim order.
    slots: Box<[TagSlot]>,
    /// Tracked slots claimed so far; may run past `max_languages` (claims past it fail).
    claimed: AtomicUsize,
    /// Normalized tags that may get a slot; `None`: any valid tag.
    allowlist: Option<Box<[[u64; TAG_WORDS]]>>,
    /// Set when a new tag found every slot taken; cleared when [`free_idle`](Self::free_idle)
    /// frees a slot.
    pressure: AtomicBool,
    invalid_tags: AtomicU64,
    over_cap_tags: AtomicU64,
    not_allowed_tags: AtomicU64,
    recycled: AtomicU64,
}

impl LanguageRegistry {
    /// A registry tracking at most `max_languages` tags besides `und` and `other`
    /// (clamped to 1..=[`MAX_LANGUAGES_LIMIT`]).
    pub fn new(max_languages: usize) -> LanguageRegistry {
        let max_languages = max_languages.clamp(1, MAX_LANGUAGES_LIMIT);
        let slots: Box<[TagSlot]> = (0..max_languages + 2).map(|_| TagSlot::new()).collect();
        for (slot, name) in slots.iter().zip(["und", "other"]) {
            let words = Tag::parse(name).map(|t| t.words()).unwrap_or_default();
            for (w, v) in slot.words.iter().zip(words) {
                w.store(v, Ordering::Relaxed);
            }
            slot.state.store(state::READY, Ordering::Release);
        }
        LanguageRegistry {
            max_languages,
            slots,
            claimed: AtomicUsize::new(0),
            allowlist: None,
            pressure: AtomicBool::new(false),
            invalid_tags: AtomicU64::new(0),
            over_cap_tags: AtomicU64::new(0),
            not_allowed_tags: AtomicU64::new(0),
            recycled: AtomicU64::new(0),
        }
    }

    /// Only these tags (normalized on the way in) get a slot of their own; every other valid
    /// tag counts as `other` ([`not_allowed_tags`](Self::not_allowed_tags)). The cap still
    /// applies. `und` and `other` are always there.
    ///
    /// ```
    /// use moescope_core::{LangId, LanguageRegistry};
    /// let reg = LanguageRegistry::new(32).with_allowlist(["en", "HE", "ja"])?;
    /// assert_eq!(reg.intern("he").index(), 2);
    /// assert_eq!(reg.intern("xx-attack"), LangId::OTHER);
    /// assert_eq!(reg.not_allowed_tags(), 1);
    /// # Ok::<(), moescope_core::TagError>(())
    /// ```
    ///
    /// # Errors
    /// The [`TagError`] of the first listed tag that is not a valid language tag.
    pub fn with_allowlist<S: AsRef<str>>(
        mut self,
        tags: impl IntoIterator<Item = S>,
    ) -> Result<LanguageRegistry, TagError> {
        let list = tags
            .into_iter()
            .map(|t| Tag::parse(t.as_ref()).map(|t| t.words()))
            .collect::<Result<Vec<_>, _>>()?;
        self.allowlist = Some(list.into_boxed_slice());
        Ok(self)
    }

    /// The cap on tracked languages.
    pub fn max_languages(&self) -> usize {
        self.max_languages
    }

    /// Number of id slots (`und`, `other` and the tracked ones): ids are below this.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The id of `raw`, interning it if it is new. Never fails, never blocks, never panics:
    /// an empty or missing tag gives `und`; an invalid one gives `und` and is counted
    /// ([`invalid_tags`](Self::invalid_tags)); a new tag past the cap gives `other` and is
    /// counted ([`over_cap_tags`](Self::over_cap_tags)), as does a tag not on the allowlist
    /// ([`not_allowed_tags`](Self::not_allowed_tags)).
    pub fn intern(&self, raw: &str) -> LangId {
        self.intern_with(raw, 0, |_, _| {})
    }

    /// Like [`intern`](Self::intern) at time `now_ms` (the activity that keeps a slot from
    /// being freed), calling `on_new(id, tag)` once for a newly claimed slot, before the slot
    /// becomes visible to other threads.
    pub(crate) fn intern_with(
        &self,
        raw: &str,
        now_ms: u64,
        on_new: impl FnOnce(LangId, &Tag),
    ) -> LangId {
        let tag = match Tag::parse(raw) {
            Ok(tag) => tag,
            Err(TagError::Empty) => return LangId::UND,
            Err(_) => {
                self.invalid_tags.fetch_add(1, Ordering::Relaxed);
                return LangId::UND;
            }
        };
        let words = tag.words();
        if let Some(id) = self.find_and_touch(&words, now_ms) {
            return id;
        }
        if let Some(list) = &self.allowlist {
            if !list.contains(&words) {
                self.not_allowed_tags.fetch_add(1, Ordering::Relaxed);
                return LangId::OTHER;
            }
        }
        let now = now_ms & state::ACTIVITY;
        let claim = self.claimed.fetch_add(1, Ordering::Relaxed);
        if claim < self.max_languages {
            let id = LangId((claim + 2) as u16);
            let slot = &self.slots[id.index()];
            for (w, v) in slot.words.iter().zip(words) {
                w.store(v, Ordering::Relaxed);
            }
            on_new(id, &tag);
            let generation = state::next_generation(slot.state.load(Ordering::Relaxed));
            slot.state
                .store(generation | state::READY | now, Ordering::Release);
            return id;
        }
        // Keep the counter from wrapping under a flood of new tags.
        self.claimed.store(self.max_languages, Ordering::Relaxed);
        // Every slot was claimed once: take a slot that was freed, if any.
        for i in 2..self.slots.len() {
            let slot = &self.slots[i];
            let st = slot.state.load(Ordering::Relaxed);
            if st & (state::READY | state::CLAIMING) != 0 {
                continue;
            }
            let generation = state::next_generation(st);
            if slot
                .state
                .compare_exchange(
                    st,
                    generation | state::CLAIMING,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue;
            }
            let id = LangId(i as u16);
            for (w, v) in slot.words.iter().zip(words) {
                w.store(v, Ordering::Relaxed);
            }
            on_new(id, &tag);
            slot.state
                .store(generation | state::READY | now, Ordering::Release);
            return id;
        }
        self.pressure.store(true, Ordering::Relaxed);
        self.over_cap_tags.fetch_add(1, Ordering::Relaxed);
        LangId::OTHER
    }

    /// Whether slot `index` holds a language now (interned, not freed).
    #[inline]
    pub(crate) fn is_live(&self, index: usize) -> bool {
        self.slots
            .get(index)
            .is_some_and(|s| s.state.load(Ordering::Acquire) & state::READY != 0)
    }

    /// Ids below this have been issued (claimed slots; `und` and `other` always).
    #[inline]
    pub(crate) fn issued(&self) -> usize {
        2 + self.claimed.load(Ordering::Relaxed).min(self.max_languages)
    }

    /// The id of an already interned tag, without interning. `None` for unknown or invalid tags.
    pub fn get(&self, raw: &str) -> Option<LangId> {
        let tag = Tag::parse(raw).ok()?;
        self.find(&tag.words()).map(|(id, _)| id)
    }

    fn find(&self, words: &[u64; TAG_WORDS]) -> Option<(LangId, u64)> {
        let tracked = self.claimed.load(Ordering::Relaxed).min(self.max_languages);
        // `und` and `other` are found like any tag, so "und" maps to UND.
        (0..tracked + 2).find_map(|i| match self.slots[i].load() {
            Some((w, st)) if &w == words => Some((LangId(i as u16), st)),
            _ => None,
        })
    }

    /// [`find`](Self::find), recording the intern's time on the slot (at most once a second,
    /// with a compare-and-swap that fails if the slot is being freed: then it looks again).
    fn find_and_touch(&self, words: &[u64; TAG_WORDS], now_ms: u64) -> Option<LangId> {
        let now = now_ms & state::ACTIVITY;
        for _ in 0..4 {
            let (id, st) = self.find(words)?;
            if id.index() < 2 || now_ms == 0 || now.saturating_sub(state::activity(st)) < 1_000 {
                return Some(id);
            }
            let fresh = (st & !state::ACTIVITY) | now;
            if self.slots[id.index()]
                .state
                .compare_exchange(st, fresh, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Some(id);
            }
        }
        // Contended four times: the slot is in use, so it is not being freed.
        self.find(words).map(|(id, _)| id)
    }

    /// Frees the slots of languages not interned since `idle_since_ms` and for which
    /// `is_idle(id)` (the recorder: no counts of it left in its window), but only when a new
    /// tag recently found every slot taken. Returns the freed ids; their tags are gone, so a
    /// later intern of the same tag claims a slot again. Called by the recorder's upkeep.
    pub(crate) fn free_idle(
        &self,
        idle_since_ms: u64,
        mut is_idle: impl FnMut(LangId) -> bool,
    ) -> Vec<LangId> {
        if !self.pressure.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let cutoff = idle_since_ms & state::ACTIVITY;
        let mut freed = Vec::new();
        for i in 2..self.slots.len() {
            let slot = &self.slots[i];
            let st = slot.state.load(Ordering::Acquire);
            let id = LangId(i as u16);
            if st & state::READY == 0 || state::activity(st) >= cutoff || !is_idle(id) {
                continue;
            }
            // Keeps the generation; fails if an intern touched the slot meanwhile.
            if slot
                .state
                .compare_exchange(
                    st,
                    st & state::GENERATION,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                self.recycled.fetch_add(1, Ordering::Relaxed);
                freed.push(id);
            }
        }
        if !freed.is_empty() {
            // Until a later tag finds every slot taken again.
            self.pressure.store(false, Ordering::Relaxed);
        }
        freed
    }

    /// The normalized tag of `id`; `None` for an id that is not (yet) interned, freed, or
    /// `EXCLUDED`.
    pub fn tag(&self, id: LangId) -> Option<Tag> {
        self.slots
            .get(id.index())?
            .load()
            .map(|(words, _)| Tag::from_words(words))
    }

    /// Every interned id with its tag, `und` and `other` first. A tag interned twice by a race
    /// appears twice, with two ids.
    pub fn languages(&self) -> Vec<(LangId, Tag)> {
        (0..self.slots.len())
            .filter_map(|i| {
                let id = LangId(i as u16);
                self.tag(id).map(|t| (id, t))
            })
            .collect()
    }

    /// Invalid tags seen so far (each mapped to `und`).
    pub fn invalid_tags(&self) -> u64 {
        self.invalid_tags.load(Ordering::Relaxed)
    }

    /// New tags seen while every slot was taken (each mapped to `other`).
    pub fn over_cap_tags(&self) -> u64 {
        self.over_cap_tags.load(Ordering::Relaxed)
    }

    /// Valid tags not on the allowlist (each mapped to `other`).
    pub fn not_allowed_tags(&self) -> u64 {
        self.not_allowed_tags.load(Ordering::Relaxed)
    }

    /// Slots given back by languages that went idle, so far.
    pub fn recycled_slots(&self) -> u64 {
        self.recycled.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for LanguageRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LanguageRegistry")
            .field("max_languages", &self.max_languages)
            .field("languages", &self.languages())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_underscores() {
        let cases = [
            ("EN", "en"),
            ("en_us", "en-US"),
            ("zh_hant_tw", "zh-Hant-TW"),
            ("  he  ", "he"),
            ("sr-latn-rs", "sr-Latn-RS"),
            ("x-Klingon", "x-klingon"),
            ("en-x-ab", "en-x-ab"),
            ("es-419", "es-419"),
            ("HE-il", "he-IL"),
        ];
        for (raw, want) in cases {
            assert_eq!(Tag::parse(raw).unwrap().as_str(), want, "{raw}");
        }
    }

    #[test]
    fn rejects_bad_tags() {
        assert_eq!(Tag::parse(""), Err(TagError::Empty));
        assert_eq!(Tag::parse("   "), Err(TagError::Empty));
        assert_eq!(Tag::parse("e"), Err(TagError::BadSubtag { index: 0 }));
        assert_eq!(Tag::parse("12"), Err(TagError::BadSubtag { index: 0 }));
        assert_eq!(Tag::parse("en--us"), Err(TagError::BadSubtag { index: 1 }));
        assert_eq!(Tag::parse("en-"), Err(TagError::BadSubtag { index: 1 }));
        assert_eq!(
            Tag::parse("en-abcdefghi"),
            Err(TagError::BadSubtag { index: 1 })
        );
        assert_eq!(
            Tag::parse("en;drop"),
            Err(TagError::BadCharacter { byte: b';' })
        );
        assert_eq!(
            Tag::parse("he\u{05d0}"),
            Err(TagError::BadCharacter { byte: 0xd7 })
        );
        let long = "ab-".repeat(12) + "ab"; // 38 bytes
        assert_eq!(Tag::parse(&long), Err(TagError::TooLong { len: 38 }));
        let max = "abcdefgh-abcdefgh-abcdefgh-abcdefg"; // 34 bytes
        assert!(Tag::parse(&format!("{max}a")).is_ok()); // exactly 35
    }

    #[test]
    fn interns_to_stable_ids() {
        let reg = LanguageRegistry::new(4);
        let en = reg.intern("en");
        let he = reg.intern("he");
        assert_eq!(en, LangId(2));
        assert_eq!(he, LangId(3));
        assert_eq!(reg.intern("EN"), en);
        assert_eq!(reg.get("En"), Some(en));
        assert_eq!(reg.get("ja"), None);
        assert_eq!(reg.intern(""), LangId::UND);
        assert_eq!(reg.intern("und"), LangId::UND);
        assert_eq!(reg.intern("other"), LangId::OTHER);
        assert_eq!(reg.tag(he).unwrap().as_str(), "he");
        assert_eq!(reg.tag(LangId::EXCLUDED), None);
        assert_eq!(reg.invalid_tags(), 0);
    }

    #[test]
    fn cap_sends_new_tags_to_other_and_invalid_to_und() {
        let reg = LanguageRegistry::new(2);
        assert_eq!(reg.intern("en"), LangId(2));
        assert_eq!(reg.intern("he"), LangId(3));
        assert_eq!(reg.intern("ja"), LangId::OTHER);
        assert_eq!(reg.intern("fr"), LangId::OTHER);
        assert_eq!(reg.intern("he"), LangId(3));
        assert_eq!(reg.over_cap_tags(), 2);
        assert_eq!(reg.intern("not a tag!"), LangId::UND);
        assert_eq!(reg.invalid_tags(), 1);
        assert_eq!(reg.languages().len(), 4);
    }

    #[test]
    fn ten_thousand_random_tags_stay_within_the_cap() {
        let reg = LanguageRegistry::new(DEFAULT_MAX_LANGUAGES);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let tag: String = (0..3 + x % 5)
                .map(|i| (b'a' + ((x >> (i * 5)) % 26) as u8) as char)
                .collect();
            let id = reg.intern(&tag);
            assert!(id.index() < reg.slot_count());
        }
        assert_eq!(reg.languages().len(), DEFAULT_MAX_LANGUAGES + 2);
        assert!(reg.over_cap_tags() > 9_000);
    }

    #[test]
    fn concurrent_interning_agrees_on_tags() {
        let reg = LanguageRegistry::new(16);
        let tags = ["en", "he", "ja", "fr", "de", "ar"];
        let ids: Vec<Vec<LangId>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| tags.iter().map(|t| reg.intern(t)).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for per_thread in &ids {
            for (id, tag) in per_thread.iter().zip(tags) {
                assert_eq!(reg.tag(*id).unwrap().as_str(), tag);
            }
        }
    }
}
