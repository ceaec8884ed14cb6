//! Hugging Face `config.json`: parsing never panics or aborts (no allocation sized by the
//! input before it is bounded), and an accepted config is a valid spec within the bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moescope_core::spec::MAX_LAYERS;
use moescope_core::ModelSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = ModelSpec::from_hf_config_str(text, "fuzz") {
        spec.validate().expect("an accepted config is a valid spec");
        assert!(spec.num_moe_layers() >= 1 && spec.num_moe_layers() <= MAX_LAYERS as usize);
        assert!(
            spec.top_k <= spec.num_experts,
            "top_k {} > experts {}",
            spec.top_k,
            spec.num_experts
        );
    }
});
