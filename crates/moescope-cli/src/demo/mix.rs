//! `--mix TAG=SHARE,...`: the language mix both demo modes generate, one meaning for both.
//!
//! Shares are relative weights: finite, not negative, adding up to more than 0. They are
//! normalized to sum to 1, so `en=9,he=1` and `en=0.9,he=0.1` are the same mix.

/// The mix as (tag, share) pairs in the order given; the shares sum to 1.
pub fn parse(pairs: &[String]) -> Result<Vec<(String, f64)>, String> {
    let mut mix: Vec<(String, f64)> = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let (tag, share) = pair
            .split_once('=')
            .ok_or_else(|| format!("--mix: {pair:?} is not TAG=SHARE"))?;
        let tag = tag.trim();
        if tag.is_empty() {
            return Err(format!("--mix: {pair:?} has no language tag"));
        }
        let share: f64 = share
            .trim()
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| format!("--mix: share {share:?} of {tag} is not a number ≥ 0"))?;
        if mix.iter().any(|(t, _)| t == tag) {
            return Err(format!("--mix: {tag} is given twice"));
        }
        mix.push((tag.to_owned(), share));
    }
    let total: f64 = mix.iter().map(|(_, s)| s).sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err("--mix: the shares must add up to more than 0".into());
    }
    for (_, s) in &mut mix {
        *s /= total;
    }
    Ok(mix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &str) -> Vec<String> {
        s.split(',').map(str::to_owned).collect()
    }

    #[test]
    fn weights_are_normalized() {
        let m = parse(&pairs("en=9,he=1")).unwrap();
        assert_eq!(m, vec![("en".to_owned(), 0.9), ("he".to_owned(), 0.1)]);
        let m = parse(&pairs("en=0.9,he=0.05,ja=0.05")).unwrap();
        assert!((m[0].1 - 0.9).abs() < 1e-12 && (m[2].1 - 0.05).abs() < 1e-12);
        // A zero share is allowed (the language is named but not generated).
        assert_eq!(parse(&pairs("en=1,he=0")).unwrap()[1].1, 0.0);
    }

    #[test]
    fn bad_mixes_are_refused_with_the_offending_pair() {
        for (mix, needle) in [
            ("en", "not TAG=SHARE"),
            ("=1", "no language tag"),
            ("en=-1", "not a number"),
            ("en=NaN", "not a number"),
            ("en=inf", "not a number"),
            ("en=x", "not a number"),
            ("en=0,he=0", "more than 0"),
            ("en=1,en=2", "twice"),
        ] {
            let err = parse(&pairs(mix)).unwrap_err();
            assert!(err.contains(needle), "{mix}: {err}");
        }
    }
}
