//! The terminal view both demo modes show: one row per language, read from the latest
//! publication (the same numbers `/metrics` serves).

use std::io::{IsTerminal, Write};

use moescope_publish::{Metric, Round};

/// Prints one screen: `header` (the mode's status line), then per language its tokens per
/// second over the window, tokenization, middle- and deep-layer mean usage entropy, the
/// collapse score against `reference` and the collapse flag.
pub fn show(round: &Round, reference: &str, header: &str) {
    let out = render(round, reference, header, std::io::stdout().is_terminal());
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

fn render(round: &Round, reference: &str, header: &str, clear_screen: bool) -> String {
    let snap = &round.snapshot;
    let p = &round.publication;
    let model = p
        .samples_of(Metric::WindowTokens)
        .next()
        .map_or(snap.model.name.as_str(), |s| s.labels[0].as_str());
    let seconds = snap.window.map_or(1.0, |w| {
        (w.end_unix_ms.saturating_sub(w.start_unix_ms)).max(1) as f64 / 1000.0
    });
    let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
    let mut out = String::new();
    if clear_screen {
        out.push_str("\x1b[2J\x1b[H");
    }
    out.push_str(&format!("{header}  window={seconds:.0}s\n\n"));
    out.push_str(&format!(
        "{:<8} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9}\n",
        "lang", "tokens/s", "tok/char", "tok/word", "middle H", "deep H", "score", "COLLAPSE"
    ));
    let mut langs: Vec<(&str, f64)> = p
        .samples_of(Metric::WindowTokens)
        .map(|s| (s.labels[1].as_str(), s.value))
        .collect();
    langs.sort_by(|a, b| a.0.cmp(b.0));
    for (tag, tokens) in langs {
        let flag = match p.value(Metric::DeepCollapse, &[model, tag, reference]) {
            Some(v) if v >= 1.0 => "YES",
            Some(_) => "no",
            None => "-",
        };
        out.push_str(&format!(
            "{:<8} {:>9.1} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9}\n",
            tag,
            tokens / seconds,
            fmt(p.value(Metric::TokensPerChar, &[model, tag])),
            fmt(p.value(Metric::TokensPerWord, &[model, tag])),
            fmt(p.value(Metric::MiddleUsageEntropyBits, &[model, tag])),
            fmt(p.value(Metric::DeepUsageEntropyBits, &[model, tag])),
            fmt(p.value(Metric::DeepCollapseScoreBits, &[model, tag, reference])),
            flag
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use moescope_core::{Languages, ModelSpec, Recorder, RouterBatch};
    use moescope_publish::{Publisher, PublisherConfig};

    #[test]
    fn one_row_per_language_with_the_published_figures() {
        let spec = ModelSpec::new("tiny", 4, 1, vec![0, 1]).unwrap();
        let recorder = Arc::new(Recorder::new(spec).unwrap());
        let en = recorder.language("en");
        let he = recorder.language("he");
        // en: 4 tokens over 4 experts in both layers (2 bits); he: 2 tokens on expert 0.
        for depth in 0..2 {
            recorder
                .record(&RouterBatch::at_depth(
                    depth,
                    &[0u32, 1, 2, 3],
                    Languages::All(en),
                ))
                .unwrap();
            recorder
                .record(&RouterBatch::at_depth(
                    depth,
                    &[0u32, 0],
                    Languages::All(he),
                ))
                .unwrap();
        }
        recorder.record_text(he, 4, 1);
        let mut publisher = Publisher::new(recorder, PublisherConfig::default()).unwrap();
        let round = publisher.collect();
        let screen = render(&round, "en", "HEADER", false);
        let lines: Vec<&str> = screen.lines().collect();
        assert!(lines[0].starts_with("HEADER  window="), "{screen}");
        assert!(lines[2].starts_with("lang "), "{screen}");
        let he_row: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(he_row[0], "he");
        // 2 tokens (the largest per-layer count) over 4 characters and 1 word.
        assert_eq!(he_row[2], "0.500");
        assert_eq!(he_row[3], "2.000");
        // Middle and deep layers: usage entropy 0 bits.
        assert_eq!(he_row[5], "0.000");
        let en_row: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(en_row[0], "en");
        assert_eq!(en_row[5], "2.000");
        assert_eq!(en_row[2], "-"); // no text lengths recorded for en
    }
}
