//! Alert reliability: how often the shipped deep-layer collapse alert fires on healthy
//! traffic, and how long it takes to fire on a planted collapse.
//!
//! One [`Scenario`] is a replica serving `tokens_per_second` tokens on a Qwen3-30B-A3B-shaped
//! model (48 MoE layers, E = 128, top-8): a fraction `share` of them in the watched language
//! (`he`), the rest in the reference (`en`), recorded at `sampling_rate`. Every publication
//! interval (5 s, the publisher's default) the interval's routing counts are drawn and merged
//! into a real [`Recorder`] (30 × 10 s window, on a manual clock), and a real [`Publisher`]
//! computes the round: the window's collapse score and the collapse detector's flag with its
//! default settings (θ = 0.3 bits, 500 deep-layer tokens, raise and clear after 3 rounds). The
//! alert is then applied to the published series as Prometheus applies
//! `MoeRoutingDeepLayerCollapse` (dashboards/rules/alerts.yml): flag = 1 and at least 1,000
//! window tokens, held for the rule's `for:` ([`AlertRule::SHIPPED`]).
//!
//! # The traffic model
//! - The reference routes with usage entropy 6.0 bits in every layer (log2 E − 1). The watched
//!   language routes with 5.85 bits, except in the deep layers, where it has
//!   5.85 − `baseline_bits` when healthy and 5.85 − `baseline_bits` − `collapse_bits` after a
//!   planted collapse. `baseline_bits` is the collapse score a healthy language already has:
//!   unlike scripts show a few tenths of a bit with no collapse at all, so the sweep runs
//!   baselines of 0 and 0.25 bits.
//! - Tokens arrive as a Poisson process. Each interval's tokens per split half are
//!   Poisson(λ·Δt/2), and each expert's selections in each layer are Poisson(n·k·p_e) given
//!   them (a Poissonized multinomial). That is slightly noisier than k distinct experts per
//!   token, so false alarms are, if anything, overstated.
//! - Tokens of one request share a topic and, with it, experts: counts vary more than
//!   independent tokens' would. [`Scenario::clump_tokens`] = c models that as runs of c tokens
//!   routed alike (every count is c × Poisson(mean / c): c times the variance at the same
//!   mean); the sweep runs c = 1 and c = 32.
//! - Sampling at rate r keeps a fraction r of tokens; their counts are weighted by 1/r, as the
//!   recorder's fold weights sampled languages (r must be 1/w for a whole w).

use std::sync::Arc;
use std::time::Duration;

use moescope_core::rng::Rng;
use moescope_core::ManualClock;
use moescope_core::{BulkCounts, LangId, ModelSpec, Recorder, WindowConfig};
use moescope_publish::{Metric, Publisher, PublisherConfig};
use moescope_sim::{LanguageProfile, Simulator};
use moescope_stats::{deep_layers, sample_std, CollapseConfig};
use serde::Serialize;

/// The watched language's tag.
pub const LANG: &str = "he";
/// The reference's tag.
pub const REFERENCE: &str = "en";
/// The reference's usage entropy in every layer, in bits (log2 128 − 1).
pub const REFERENCE_BITS: f64 = 6.0;
/// The watched language's usage entropy outside the deep layers, in bits.
pub const LANG_BITS: f64 = 5.85;
/// Healthy traffic before a planted collapse (fills the 5-minute window and settles the
/// detector).
pub const WARM_UP: Duration = Duration::from_secs(600);

/// The alert's terms, as `MoeRoutingDeepLayerCollapse` states them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AlertRule {
    /// How long the condition must hold (`for:`).
    pub hold: Duration,
    /// The least window tokens of the language (`moe_routing_window_tokens >= …`).
    pub min_window_tokens: f64,
}

impl AlertRule {
    /// The rule shipped in dashboards/rules/alerts.yml.
    pub const SHIPPED: AlertRule = AlertRule {
        hold: Duration::from_secs(9 * 60),
        min_window_tokens: 1000.0,
    };
}

/// One replica's traffic and the watched language's routing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Scenario {
    /// Tokens per second served by the replica, every language together.
    pub tokens_per_second: f64,
    /// The watched language's fraction of them, in (0, 1).
    pub share: f64,
    /// The recorder's sampling rate for both languages: 1/w for a whole w ≥ 1.
    pub sampling_rate: f64,
    /// The watched language's healthy collapse score (deep layers this much lower), in bits.
    pub baseline_bits: f64,
    /// The baseline the publisher is configured with for it
    /// (`PublisherConfig::collapse_baselines`), in bits; 0: none.
    pub configured_baseline_bits: f64,
    /// Tokens per independent routing decision: 1 for independent tokens; c for tokens that
    /// come in runs of c routed alike (the variance of every count grows c-fold, as tokens of
    /// one request on one topic share experts).
    pub clump_tokens: u64,
}

impl Scenario {
    /// Tokens of the watched language a full window (5 minutes) holds on average, sampled
    /// and weighted (what `moe_routing_window_tokens` shows).
    pub fn window_tokens(&self) -> f64 {
        self.tokens_per_second * self.share * 300.0
    }

    /// Tokens of the watched language the recorder actually keeps per window.
    pub fn kept_window_tokens(&self) -> f64 {
        self.window_tokens() * self.sampling_rate
    }

    fn weight(&self) -> Result<u64, String> {
        let w = 1.0 / self.sampling_rate;
        if !(w.is_finite() && w >= 1.0 && (w - w.round()).abs() < 1e-9) {
            return Err(format!(
                "sampling rate {} is not 1/w for a whole w",
                self.sampling_rate
            ));
        }
        Ok(w.round() as u64)
    }
}

/// One publication round of a run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RoundObservation {
    /// Seconds since the run started.
    pub t_seconds: f64,
    /// The published collapse score of the watched language, if defined.
    pub score_bits: Option<f64>,
    /// The published flag.
    pub flag: bool,
    /// The published window tokens of the watched language.
    pub window_tokens: f64,
}

/// Runs `scenario` for `duration` of simulated time, with a collapse of `collapse_bits`
/// planted at `onset` (if any), and returns every round. Deterministic in `seed`.
///
/// # Errors
/// A scenario the model cannot represent (a deep-layer entropy below log2 k, a share outside
/// (0, 1), a sampling rate that is not 1/w), as text.
pub fn run(
    scenario: &Scenario,
    duration: Duration,
    collapse: Option<(Duration, f64)>,
    seed: u64,
) -> Result<Vec<RoundObservation>, String> {
    if !(scenario.share > 0.0 && scenario.share < 1.0) {
        return Err(format!("share {} is not in (0, 1)", scenario.share));
    }
    let weight = scenario.weight()?;
    let clump = scenario.clump_tokens.max(1);
    let spec = ModelSpec::preset("qwen3-30b-a3b").map_err(|e| e.to_string())?;
    let layers = spec.num_moe_layers();
    let experts = spec.num_experts as usize;
    let k = f64::from(spec.top_k);

    let healthy = usage(&spec, scenario, 0.0, seed)?;
    let collapsed = match collapse {
        Some((_, bits)) => Some(usage(&spec, scenario, bits, seed)?),
        None => None,
    };

    let clock = ManualClock::new(1_700_000_000_000);
    let recorder = Arc::new(
        Recorder::builder(spec.clone())
            .window(WindowConfig::default())
            .clock(clock.clone())
            .seed(seed)
            .build()
            .map_err(|e| e.to_string())?,
    );
    let mut config = PublisherConfig {
        reference: REFERENCE.to_owned(),
        ..PublisherConfig::default()
    };
    if scenario.configured_baseline_bits != 0.0 {
        config
            .collapse_baselines
            .insert(LANG.to_owned(), scenario.configured_baseline_bits);
    }
    let interval = config.interval;
    let mut publisher = Publisher::new(recorder.clone(), config).map_err(|e| e.to_string())?;
    let langs: [(LangId, f64); 2] = [
        (recorder.language(REFERENCE), 1.0 - scenario.share),
        (recorder.language(LANG), scenario.share),
    ];

    let mut rng = Rng::new(seed ^ 0xA1E7);
    let mut halves = vec![vec![0u64; experts]; 2];
    let mut out = Vec::new();
    let rounds = (duration.as_secs_f64() / interval.as_secs_f64()).ceil() as usize;
    for i in 0..rounds {
        let t = interval.as_secs_f64() * i as f64;
        let usage = match (&collapsed, collapse) {
            (Some(c), Some((onset, _))) if t >= onset.as_secs_f64() => c,
            _ => &healthy,
        };
        for (li, &(lang, share)) in langs.iter().enumerate() {
            let per_half = scenario.tokens_per_second
                * share
                * scenario.sampling_rate
                * interval.as_secs_f64()
                / 2.0;
            let mut draw = |mean: f64| clump * rng_poisson(&mut rng, mean / clump as f64);
            let tokens = [draw(per_half), draw(per_half)];
            for (d, p) in usage[li].iter().enumerate().take(layers) {
                for (h, counts) in halves.iter_mut().enumerate() {
                    let n = tokens[h] as f64 * k;
                    for (c, &pe) in counts.iter_mut().zip(p) {
                        *c = draw(n * pe) * weight;
                    }
                }
                let bulk = BulkCounts::new(
                    d,
                    lang,
                    [tokens[0] * weight, tokens[1] * weight],
                    [&halves[0], &halves[1]],
                );
                recorder.merge_counts(&bulk).map_err(|e| e.to_string())?;
            }
        }
        clock.advance_ms(interval.as_millis() as u64);
        let round = publisher.collect();
        let find = |metric: Metric, labels: &[&str]| {
            round
                .publication
                .samples
                .iter()
                .find(|s| s.metric == metric && s.labels.iter().skip(1).eq(labels.iter()))
                .map(|s| s.value)
        };
        out.push(RoundObservation {
            t_seconds: t + interval.as_secs_f64(),
            score_bits: find(Metric::DeepCollapseScoreBits, &[LANG, REFERENCE]),
            flag: find(Metric::DeepCollapse, &[LANG, REFERENCE]) == Some(1.0),
            window_tokens: find(Metric::WindowTokens, &[LANG]).unwrap_or(0.0),
        });
    }
    Ok(out)
}

/// The usage distributions per layer of the reference and the watched language, the deep
/// layers of the latter lowered by the scenario's baseline plus `collapse_bits`.
fn usage(
    spec: &ModelSpec,
    scenario: &Scenario,
    collapse_bits: f64,
    seed: u64,
) -> Result<[Vec<Vec<f64>>; 2], String> {
    let layers = spec.num_moe_layers();
    let deep = deep_layers(layers);
    let lang_bits = |d: usize| {
        if deep.contains(&d) {
            LANG_BITS - scenario.baseline_bits - collapse_bits
        } else {
            LANG_BITS
        }
    };
    let sim = Simulator::new(
        spec.clone(),
        vec![
            LanguageProfile::uniform_entropy(REFERENCE, 1.0 - scenario.share, REFERENCE_BITS),
            LanguageProfile::profile(LANG, scenario.share, layers, lang_bits),
        ],
        seed,
    )
    .map_err(|e| e.to_string())?;
    let per_layer = |tag: &str| -> Vec<Vec<f64>> {
        (0..layers)
            .map(|d| sim.usage_distribution(tag, d).unwrap_or(&[]).to_vec())
            .collect()
    };
    Ok([per_layer(REFERENCE), per_layer(LANG)])
}

/// The times (seconds since the run started) at which `rule` starts firing in `rounds`: the
/// condition (flag up, enough window tokens) has held without a break for `rule.hold`.
pub fn alert_firings(rounds: &[RoundObservation], rule: &AlertRule) -> Vec<f64> {
    let mut firings = Vec::new();
    let mut since: Option<f64> = None;
    let mut firing = false;
    for r in rounds {
        if r.flag && r.window_tokens >= rule.min_window_tokens {
            let start = *since.get_or_insert(r.t_seconds);
            if !firing && r.t_seconds - start >= rule.hold.as_secs_f64() {
                firing = true;
                firings.push(r.t_seconds);
            }
        } else {
            since = None;
            firing = false;
        }
    }
    firings
}

/// What the sweep runs: the traffic grid, how long, and the alert's terms.
#[derive(Clone, Debug, Serialize)]
pub struct SweepConfig {
    /// Tokens per second of the replica.
    pub tokens_per_second: f64,
    /// The watched language's shares of traffic.
    pub shares: Vec<f64>,
    /// Sampling rates (1/w).
    pub sampling_rates: Vec<f64>,
    /// (healthy collapse score of the watched language, the baseline configured for it), in
    /// bits.
    pub baselines_bits: Vec<(f64, f64)>,
    /// Tokens per independent routing decision ([`Scenario::clump_tokens`]).
    pub clumps: Vec<u64>,
    /// Planted collapse sizes, in bits.
    pub collapses_bits: Vec<f64>,
    /// Simulated hours of healthy traffic per healthy row.
    pub healthy_hours: f64,
    /// Planted collapses per detection row (each its own seed).
    pub onsets: usize,
    /// How long after the onset a collapse counts as missed.
    pub give_up: Duration,
    /// The alert's terms.
    pub rule: AlertRule,
    /// Seed of the first run.
    pub seed: u64,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            tokens_per_second: 2000.0,
            shares: vec![0.001, 0.01, 0.05],
            sampling_rates: vec![1.0, 0.1],
            baselines_bits: vec![(0.0, 0.0), (0.25, 0.0), (0.25, 0.25)],
            clumps: vec![1, 32],
            collapses_bits: vec![0.3, 0.5, 1.0],
            healthy_hours: 24.0,
            onsets: 5,
            give_up: Duration::from_secs(3600),
            rule: AlertRule::SHIPPED,
            seed: 1,
        }
    }
}

/// False alarms of one healthy scenario.
#[derive(Clone, Debug, Serialize)]
pub struct HealthyRow {
    /// The scenario.
    pub scenario: Scenario,
    /// Simulated hours (after the warm-up).
    pub hours: f64,
    /// Times the alert started firing.
    pub firings: usize,
    /// Firings per day.
    pub false_alarms_per_day: f64,
    /// Fraction of rounds with the detector's flag up.
    pub flag_up_fraction: f64,
    /// Mean of the published collapse score over the rounds that have one.
    pub score_mean_bits: Option<f64>,
    /// Its standard deviation.
    pub score_std_bits: Option<f64>,
    /// Its largest value.
    pub score_max_bits: Option<f64>,
}

/// Detection of one planted collapse size.
#[derive(Clone, Debug, Serialize)]
pub struct DetectionRow {
    /// The scenario.
    pub scenario: Scenario,
    /// The planted collapse, in bits.
    pub collapse_bits: f64,
    /// Collapses planted.
    pub onsets: usize,
    /// Minutes from the onset to the detector's flag, per detected collapse (sorted).
    pub flag_minutes: Vec<f64>,
    /// Minutes from the onset to the alert firing, per detected collapse (sorted).
    pub alert_minutes: Vec<f64>,
    /// Collapses the alert missed within `give_up`.
    pub missed: usize,
}

/// The sweep's result.
#[derive(Clone, Debug, Serialize)]
pub struct Sweep {
    /// What ran.
    pub config: SweepConfig,
    /// Healthy traffic: false alarms.
    pub healthy: Vec<HealthyRow>,
    /// Planted collapses (baseline 0): detection delays.
    pub detection: Vec<DetectionRow>,
}

/// Runs the whole grid: every (share, rate, baseline) on healthy traffic, every
/// (share, rate, collapse) planted on a language with baseline 0.
///
/// # Errors
/// As [`run`].
pub fn sweep(config: &SweepConfig) -> Result<Sweep, String> {
    let mut healthy = Vec::new();
    let mut detection = Vec::new();
    let mut seed = config.seed;
    for &clump_tokens in &config.clumps {
        for &share in &config.shares {
            for &sampling_rate in &config.sampling_rates {
                let scenario = Scenario {
                    tokens_per_second: config.tokens_per_second,
                    share,
                    sampling_rate,
                    baseline_bits: 0.0,
                    configured_baseline_bits: 0.0,
                    clump_tokens,
                };
                for &(baseline_bits, configured_baseline_bits) in &config.baselines_bits {
                    let scenario = Scenario {
                        baseline_bits,
                        configured_baseline_bits,
                        ..scenario
                    };
                    seed += 1;
                    healthy.push(healthy_row(config, scenario, seed)?);
                }
                for &collapse_bits in &config.collapses_bits {
                    seed += 1;
                    detection.push(detection_row(config, scenario, collapse_bits, seed)?);
                }
            }
        }
    }
    Ok(Sweep {
        config: config.clone(),
        healthy,
        detection,
    })
}

fn healthy_row(config: &SweepConfig, scenario: Scenario, seed: u64) -> Result<HealthyRow, String> {
    let hours = Duration::from_secs_f64(config.healthy_hours * 3600.0);
    let rounds = run(&scenario, WARM_UP + hours, None, seed)?;
    let after: Vec<_> = rounds
        .into_iter()
        .filter(|r| r.t_seconds > WARM_UP.as_secs_f64())
        .collect();
    let firings = alert_firings(&after, &config.rule).len();
    let scores: Vec<f64> = after.iter().filter_map(|r| r.score_bits).collect();
    let mean = (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64);
    let std = sample_std(&scores);
    Ok(HealthyRow {
        scenario,
        hours: config.healthy_hours,
        firings,
        false_alarms_per_day: firings as f64 * 24.0 / config.healthy_hours,
        flag_up_fraction: after.iter().filter(|r| r.flag).count() as f64
            / after.len().max(1) as f64,
        score_mean_bits: mean,
        score_std_bits: std,
        score_max_bits: scores.iter().copied().reduce(f64::max),
    })
}

fn detection_row(
    config: &SweepConfig,
    scenario: Scenario,
    collapse_bits: f64,
    seed: u64,
) -> Result<DetectionRow, String> {
    let mut row = DetectionRow {
        scenario,
        collapse_bits,
        onsets: config.onsets,
        flag_minutes: Vec::new(),
        alert_minutes: Vec::new(),
        missed: 0,
    };
    let onset = WARM_UP.as_secs_f64();
    for i in 0..config.onsets {
        let rounds = run(
            &scenario,
            WARM_UP + config.give_up,
            Some((WARM_UP, collapse_bits)),
            seed.wrapping_mul(1000).wrapping_add(i as u64),
        )?;
        let after: Vec<_> = rounds.into_iter().filter(|r| r.t_seconds > onset).collect();
        if let Some(r) = after.iter().find(|r| r.flag) {
            row.flag_minutes.push((r.t_seconds - onset) / 60.0);
        }
        match alert_firings(&after, &config.rule).first() {
            Some(t) => row.alert_minutes.push((t - onset) / 60.0),
            None => row.missed += 1,
        }
    }
    row.flag_minutes.sort_by(f64::total_cmp);
    row.alert_minutes.sort_by(f64::total_cmp);
    Ok(row)
}

/// A Poisson(`mean`) draw: multiplication of uniforms for small means, Hörmann's transformed
/// rejection (PTRS) from 10 on. `mean` ≤ 0 or not finite gives 0.
pub fn rng_poisson(rng: &mut Rng, mean: f64) -> u64 {
    if !(mean > 0.0 && mean.is_finite()) {
        return 0;
    }
    if mean < 10.0 {
        let limit = (-mean).exp();
        let mut k = 0u64;
        let mut p = rng.next_f64();
        while p > limit {
            k += 1;
            p *= rng.next_f64();
        }
        return k;
    }
    // W. Hörmann, "The transformed rejection method for generating Poisson random
    // variables", Insurance: Mathematics and Economics 12 (1993).
    let slam = mean.sqrt();
    let loglam = mean.ln();
    let b = 0.931 + 2.53 * slam;
    let a = -0.059 + 0.02483 * b;
    let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
    let vr = 0.9277 - 3.6224 / (b - 2.0);
    loop {
        let u = rng.next_f64() - 0.5;
        let v = rng.next_f64();
        let us = 0.5 - u.abs();
        let k = ((2.0 * a / us + b) * u + mean + 0.43).floor();
        if us >= 0.07 && v <= vr {
            return k as u64;
        }
        if k < 0.0 || (us < 0.013 && v > us) {
            continue;
        }
        if v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln()
            <= -mean + k * loglam - ln_factorial(k)
        {
            return k as u64;
        }
    }
}

/// ln k! for a whole k ≥ 0: exact below 10, Stirling's series (error < 1e-10) from there.
fn ln_factorial(k: f64) -> f64 {
    if k < 10.0 {
        let mut f = 1.0f64;
        let mut i = 2.0;
        while i <= k {
            f *= i;
            i += 1.0;
        }
        return f.ln();
    }
    let k2 = k * k;
    k * k.ln() - k + 0.5 * (2.0 * std::f64::consts::PI * k).ln() + 1.0 / (12.0 * k)
        - 1.0 / (360.0 * k * k2)
        + 1.0 / (1260.0 * k * k2 * k2)
}

/// The default collapse detector settings the sweep runs with (the publisher's).
pub fn detector() -> CollapseConfig {
    CollapseConfig::DEFAULT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_draws_have_the_mean_and_variance() {
        let mut rng = Rng::new(7);
        for mean in [0.3, 4.0, 12.0, 250.0, 40_000.0] {
            let n = 40_000;
            let xs: Vec<f64> = (0..n).map(|_| rng_poisson(&mut rng, mean) as f64).collect();
            let m = xs.iter().sum::<f64>() / n as f64;
            let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64;
            // The sample mean's standard error is sqrt(mean/n); the variance's about
            // mean·sqrt(2/n) (plus the fourth-cumulant term, small here).
            let se = (mean / n as f64).sqrt();
            assert!((m - mean).abs() < 5.0 * se, "mean {mean}: got {m}");
            assert!(
                (v - mean).abs() < 6.0 * mean * (2.0 / n as f64).sqrt() + 0.05,
                "mean {mean}: variance {v}"
            );
        }
        assert_eq!(rng_poisson(&mut rng, 0.0), 0);
        assert_eq!(rng_poisson(&mut rng, f64::NAN), 0);
    }

    #[test]
    fn ln_factorial_matches_the_product() {
        for k in 0..40u32 {
            let exact: f64 = (2..=k).map(|i| f64::from(i).ln()).sum();
            assert!((ln_factorial(f64::from(k)) - exact).abs() < 1e-9, "k = {k}");
        }
    }

    #[test]
    fn firings_need_the_whole_hold() {
        let rule = AlertRule {
            hold: Duration::from_secs(20),
            min_window_tokens: 10.0,
        };
        let r = |t: f64, flag: bool, tokens: f64| RoundObservation {
            t_seconds: t,
            score_bits: None,
            flag,
            window_tokens: tokens,
        };
        // Up from 5 s; a gap at 20 s (too few tokens) restarts the hold; up again from 25 s,
        // firing at 45 s; stays firing; down at 55, up at 60 and held to 80.
        let rounds = [
            r(5.0, true, 20.0),
            r(10.0, true, 20.0),
            r(15.0, true, 20.0),
            r(20.0, true, 5.0),
            r(25.0, true, 20.0),
            r(30.0, true, 20.0),
            r(45.0, true, 20.0),
            r(50.0, true, 20.0),
            r(55.0, false, 20.0),
            r(60.0, true, 20.0),
            r(80.0, true, 20.0),
        ];
        assert_eq!(alert_firings(&rounds, &rule), vec![45.0, 80.0]);
    }

    #[test]
    fn the_shipped_rule_is_the_one_in_the_rules_file() {
        let rules = include_str!("../../../dashboards/rules/alerts.yml");
        let alert = rules
            .split("- alert: ")
            .find(|s| s.starts_with("MoeRoutingDeepLayerCollapse"))
            .expect("the collapse alert");
        let hold = format!("for: {}m", AlertRule::SHIPPED.hold.as_secs() / 60);
        assert!(alert.contains(&hold), "{hold} not in the rule");
        let tokens = format!(
            "moe_routing_window_tokens >= {}",
            AlertRule::SHIPPED.min_window_tokens
        );
        assert!(alert.contains(&tokens), "{tokens} not in the rule");
    }

    #[test]
    fn a_planted_collapse_fires_and_healthy_traffic_does_not() {
        // 5 % of 2,000 tokens/s, every token: 30,000 tokens per window.
        let s = Scenario {
            tokens_per_second: 2000.0,
            share: 0.05,
            sampling_rate: 1.0,
            baseline_bits: 0.0,
            configured_baseline_bits: 0.0,
            clump_tokens: 1,
        };
        let onset = Duration::from_secs(300);
        let rounds = run(
            &s,
            Duration::from_secs(300 + 20 * 60),
            Some((onset, 1.0)),
            3,
        )
        .unwrap();
        let before: Vec<_> = rounds.iter().filter(|r| r.t_seconds <= 300.0).collect();
        assert!(before.iter().all(|r| !r.flag));
        // Once the window has only collapsed traffic, the score is the planted 1 bit.
        let last = rounds.last().unwrap();
        assert!((last.score_bits.unwrap() - 1.0).abs() < 0.05, "{last:?}");
        let fired = alert_firings(&rounds, &AlertRule::SHIPPED);
        assert_eq!(fired.len(), 1);
        let delay = fired[0] - 300.0;
        // The flag needs a window score above θ (a little over 1/3 of the window) and three
        // rounds; then the hold.
        let hold = AlertRule::SHIPPED.hold.as_secs_f64();
        assert!(delay > hold && delay < hold + 300.0, "delay {delay}");
        let healthy = run(&s, Duration::from_secs(20 * 60), None, 4).unwrap();
        assert!(healthy.iter().all(|r| !r.flag));
        assert!(healthy[100..]
            .iter()
            .all(|r| r.score_bits.unwrap().abs() < 0.05));
    }
}
