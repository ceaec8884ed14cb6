//! Language tags: parsing normalizes idempotently; interning any sequence of strings never
//! panics, never hands out more ids than the registry's slots, and a tag interned twice in a
//! row gets the same id, which reads back as its normalized tag.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moescope_core::{LanguageRegistry, Tag};

const MAX_LANGUAGES: usize = 4;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let registry = LanguageRegistry::new(MAX_LANGUAGES);
    let mut ids = std::collections::BTreeSet::new();
    for raw in text.split('\n') {
        if let Ok(tag) = Tag::parse(raw) {
            let again = Tag::parse(tag.as_str()).expect("a normalized tag parses");
            assert_eq!(
                again.as_str(),
                tag.as_str(),
                "normalization is not idempotent"
            );
        }
        let id = registry.intern(raw);
        assert_eq!(
            registry.intern(raw),
            id,
            "{raw:?} interned twice got two ids"
        );
        let back = registry.tag(id).expect("an interned id has a tag");
        if let Ok(tag) = Tag::parse(raw) {
            // Its own slot, or `other` when the slots are taken; `und` for undetermined tags.
            let name = back.as_str();
            assert!(
                name == tag.as_str() || name == "other" || name == "und",
                "{raw:?} -> {tag:?} read back as {name:?}"
            );
        }
        ids.insert(format!("{id:?}"));
    }
    assert!(
        ids.len() <= MAX_LANGUAGES + 2,
        "{} ids for {MAX_LANGUAGES} slots",
        ids.len()
    );
});
