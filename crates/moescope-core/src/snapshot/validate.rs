//! [`Snapshot::validate`]: the invariants every snapshot reader checks, with errors that name
//! the offending field by its JSON path.

use std::collections::BTreeMap;

use super::{invalid, LanguageCounts, LayerCounts, Snapshot, SnapshotError, WindowRange};
use crate::lang::{Tag, MAX_TAG_LEN};
use crate::spec::{ModelSpec, SpecError};

impl Snapshot {
    /// Checks the invariants listed in the [module docs](crate::snapshot).
    ///
    /// # Errors
    /// The first broken invariant, as [`SnapshotError::Invalid`] naming the field by its JSON
    /// path. Never panics.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        self.model.validate().map_err(|e| match e {
            SpecError::Invalid { field, reason } => invalid(format!("model.{field}"), reason),
            other => invalid("model", other.to_string()),
        })?;
        if let Some(window) = &self.window {
            check_window("window", window)?;
        }
        check_languages("languages", &self.languages, &self.model)?;
        let mut previous: Option<&WindowRange> = None;
        for (i, bucket) in self.buckets.iter().enumerate() {
            let prefix = format!("buckets[{i}]");
            check_window(&format!("{prefix}.window"), &bucket.window)?;
            if let Some(prev) = previous {
                if bucket.window.start_unix_ms < prev.start_unix_ms {
                    return Err(invalid(
                        format!("{prefix}.window.start_unix_ms"),
                        format!(
                            "buckets must be ordered oldest first, but {} is before \
                             buckets[{}].window.start_unix_ms ({})",
                            bucket.window.start_unix_ms,
                            i - 1,
                            prev.start_unix_ms
                        ),
                    ));
                }
            }
            previous = Some(&bucket.window);
            check_languages(
                &format!("{prefix}.languages"),
                &bucket.languages,
                &self.model,
            )?;
        }
        Ok(())
    }
}

fn check_window(field: &str, window: &WindowRange) -> Result<(), SnapshotError> {
    if window.start_unix_ms > window.end_unix_ms {
        return Err(invalid(
            field,
            format!(
                "start_unix_ms ({}) is after end_unix_ms ({})",
                window.start_unix_ms, window.end_unix_ms
            ),
        ));
    }
    Ok(())
}

/// Whether `key` is an acceptable language key: a language tag as the recorder writes it, i.e.
/// one that [`Tag::parse`] accepts and that is already in its normalized form (`en`, `zh-Hant-TW`,
/// `und`, `other`). One rule for live tags and snapshot keys.
pub fn is_valid_language_key(key: &str) -> bool {
    Tag::parse(key).is_ok_and(|tag| tag.as_str() == key)
}

fn check_languages(
    prefix: &str,
    languages: &BTreeMap<String, LanguageCounts>,
    model: &ModelSpec,
) -> Result<(), SnapshotError> {
    for (key, counts) in languages {
        if !is_valid_language_key(key) {
            let reason = match Tag::parse(key) {
                Ok(tag) => format!(
                    "language key {key:?} is not a normalized tag: write {:?}",
                    tag.as_str()
                ),
                Err(e) => format!(
                    "language key {key:?} is not a language tag (subtags of 1 to 8 ASCII \
                     letters or digits joined by '-', at most {MAX_TAG_LEN} bytes): {e}"
                ),
            };
            return Err(invalid(prefix, reason));
        }
        check_language(&format!("{prefix}.{key}"), counts, model)?;
    }
    Ok(())
}

fn check_number(field: impl FnOnce() -> String, value: f64) -> Result<(), SnapshotError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(
            field(),
            format!("must be a finite number >= 0, found {value}"),
        ))
    }
}

fn check_numbers(field: &str, values: &[f64], num_experts: u32) -> Result<(), SnapshotError> {
    if values.len() != num_experts as usize {
        return Err(invalid(
            field,
            format!(
                "expected {num_experts} numbers (model.num_experts), found {}",
                values.len()
            ),
        ));
    }
    for (i, &v) in values.iter().enumerate() {
        check_number(|| format!("{field}[{i}]"), v)?;
    }
    Ok(())
}

fn check_language(
    prefix: &str,
    counts: &LanguageCounts,
    model: &ModelSpec,
) -> Result<(), SnapshotError> {
    check_number(|| format!("{prefix}.tokens"), counts.tokens)?;
    if let Some(chars) = counts.chars {
        check_number(|| format!("{prefix}.chars"), chars)?;
    }
    if let Some(words) = counts.words {
        check_number(|| format!("{prefix}.words"), words)?;
    }
    check_layers(&format!("{prefix}.layers"), &counts.layers, model)?;
    if let Some(halves) = &counts.halves {
        for (h, half) in halves.iter().enumerate() {
            check_layers(&format!("{prefix}.halves[{h}].layers"), &half.layers, model)?;
        }
    }
    Ok(())
}

fn check_layers(
    prefix: &str,
    layers: &[LayerCounts],
    model: &ModelSpec,
) -> Result<(), SnapshotError> {
    if layers.len() != model.moe_layers.len() {
        return Err(invalid(
            prefix,
            format!(
                "expected {} entries (one per model.layers), found {}",
                model.moe_layers.len(),
                layers.len()
            ),
        ));
    }
    for (i, layer) in layers.iter().enumerate() {
        let path = format!("{prefix}[{i}]");
        check_number(|| format!("{path}.tokens"), layer.tokens)?;
        check_numbers(
            &format!("{path}.expert_tokens"),
            &layer.expert_tokens,
            model.num_experts,
        )?;
        if let Some(prob_sum) = &layer.prob_sum {
            check_numbers(&format!("{path}.prob_sum"), prob_sum, model.num_experts)?;
        }
        check_number(|| format!("{path}.prob_tokens"), layer.prob_tokens)?;
        if let Some(v) = layer.selection_entropy_sum_bits {
            check_number(|| format!("{path}.selection_entropy_sum_bits"), v)?;
        }
        if let Some(v) = layer.topk_weight_sum {
            check_number(|| format!("{path}.topk_weight_sum"), v)?;
        }
    }
    Ok(())
}
