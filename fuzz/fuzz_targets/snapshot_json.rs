//! Snapshot JSON: parsing never panics or aborts, and whatever parses writes back to JSON that
//! parses to the same snapshot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moescope_core::Snapshot;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(snapshot) = Snapshot::from_json_str(text) {
        let json = snapshot.to_json_string();
        let again = Snapshot::from_json_str(&json)
            .unwrap_or_else(|e| panic!("a parsed snapshot's own JSON does not parse: {e}\n{json}"));
        assert_eq!(
            again.to_json_string(),
            json,
            "JSON round trip changed the snapshot"
        );
    }
});
