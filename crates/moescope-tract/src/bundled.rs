//! The bundled tiny Qwen3-MoE model (packed input layout, byte-level tokens).

/// The bundled tiny Qwen3-MoE model (`models/tiny-qwen3-moe/model.onnx` in this crate's
/// source folder: the path is where the crate was built, so a binary copied elsewhere should
/// take a model path instead).
pub fn bundled_model_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join("tiny-qwen3-moe")
        .join("model.onnx")
}

/// The bundled model's Hugging Face style `config.json`.
pub fn bundled_config_path() -> std::path::PathBuf {
    bundled_model_path().with_file_name("config.json")
}

/// Byte-level tokenization (the bundled model's and the test fixtures'): one token per UTF-8
/// byte (vocabulary 256). English takes about one token per character, Hebrew two, Japanese
/// three.
pub fn byte_tokens(text: &str) -> Vec<i64> {
    text.bytes().map(i64::from).collect()
}
