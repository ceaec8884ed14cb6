#!/usr/bin/env python3
"""Generates the Grafana dashboards of dashboards/ (the JSON files are committed).

    python3 scripts/build_dashboards.py          # rewrites dashboards/*.json

Only the Python standard library. Edit this file, not the JSON, and run it again; the Rust
test crates/moescope-cli/tests/prometheus_e2e.rs checks the JSON's structure and runs every
panel expression against a live Prometheus.
"""
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39


class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self):
        self.x, self.y, self.row_h, self.next_id = 0, 0, 0, 1
        self.panels = []

    def _id(self):
        self.next_id += 1
        return self.next_id - 1

    def row(self, title):
        if self.x:
            self.y += self.row_h
        self.x, self.row_h = 0, 0
        self.panels.append({"type": "row", "title": title, "id": self._id(), "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def add(self, panel, w, h):
        if self.x + w > 24:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)


def target(expr, legend="", ref="A", instant=False, fmt="time_series"):
    t = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend or "__auto",
         "range": not instant, "instant": instant, "format": fmt}
    return t


def refs(targets):
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    return targets


DETAIL = (" Layer detail (opt-in): published for the languages and layers of "
          "PublisherConfig::layer_detail (demo: --layer-detail all).")


def timeseries(title, targets, unit="", description="", overrides=(), stack=False, minv=None,
               maxv=None):
    defaults = {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10 if stack else 0,
                                          "showPoints": "never", "spanNulls": False,
                                          "stacking": {"mode": "normal" if stack else "none"}}}
    if minv is not None:
        defaults["min"] = minv
    if maxv is not None:
        defaults["max"] = maxv
    return {"type": "timeseries", "title": title, "description": description, "datasource": DS,
            "targets": refs(targets),
            "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def dashed_red(name_regex, label=None):
    """An override drawing the series whose name matches as a dashed red reference line."""
    props = [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
             {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
             {"id": "custom.lineWidth", "value": 2}]
    return {"matcher": {"id": "byRegexp", "options": name_regex}, "properties": props}


def heatmap(title, targets, unit="", description="", scheme="RdYlGn", reverse=False, repeat=None):
    p = {"type": "heatmap", "title": title, "description": description, "datasource": DS,
         "targets": refs(targets),
         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
         "options": {"calculate": False, "cellGap": 1,
                     "color": {"mode": "scheme", "scheme": scheme, "reverse": reverse,
                               "exponent": 0.5, "steps": 64, "fill": "dark-orange",
                               "scale": "exponential"},
                     "yAxis": {"axisPlacement": "left", "reverse": False, "unit": ""},
                     "rowsFrame": {"layout": "auto"},
                     "legend": {"show": True}, "tooltip": {"mode": "single", "yHistogram": False},
                     "cellValues": {"unit": unit}, "showValue": "never"}}
    if repeat:
        p["repeat"] = repeat
        p["repeatDirection"] = "h"
        p["maxPerRow"] = 3
    return p


def stat(title, targets, unit="", description="", thresholds=None):
    steps = thresholds or [{"color": "green", "value": None}]
    return {"type": "stat", "title": title, "description": description, "datasource": DS,
            "targets": refs(targets),
            "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute",
                                                                      "steps": steps}},
                            "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "none", "textMode": "auto"}}


def state_timeline(title, targets, description=""):
    return {"type": "state-timeline", "title": title, "description": description,
            "datasource": DS, "targets": refs(targets),
            "fieldConfig": {"defaults": {
                "mappings": [{"type": "value", "options": {
                    "0": {"text": "healthy", "color": "green", "index": 0},
                    "1": {"text": "COLLAPSED", "color": "red", "index": 1}}}],
                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                              {"color": "red", "value": 1}]}},
                "overrides": []},
            "options": {"showValue": "never", "mergeValues": True, "rowHeight": 0.8,
                        "legend": {"showLegend": False}}}


def bargauge(title, targets, unit="", description=""):
    return {"type": "bargauge", "title": title, "description": description, "datasource": DS,
            "targets": refs(targets),
            "fieldConfig": {"defaults": {"unit": unit, "min": 0,
                                         "thresholds": {"mode": "absolute",
                                                        "steps": [{"color": "blue", "value": None}]}},
                            "overrides": []},
            "options": {"orientation": "horizontal", "displayMode": "basic",
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "showUnfilled": True}}


def datasource_var():
    return {"name": "datasource", "label": "Data source", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
            "options": []}


def query_var(name, label, query, multi=False, all_value=None, sort=1):
    v = {"name": name, "label": label, "type": "query", "datasource": DS,
         "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
         "refresh": 2, "sort": sort, "multi": multi, "includeAll": all_value is not None,
         "current": {}, "hide": 0, "options": [], "regex": ""}
    if all_value is not None:
        v["allValue"] = all_value
    return v


def dashboard(uid, title, description, variables, panels, tags):
    return {"uid": uid, "title": title, "description": description, "tags": tags,
            "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True,
            "graphTooltip": 1, "timezone": "", "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"}, "timepicker": {},
            "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
            "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana",
                                                                   "uid": "-- Grafana --"},
                                      "enable": True, "hide": True,
                                      "iconColor": "rgba(0, 211, 255, 1)",
                                      "name": "Annotations & Alerts", "type": "dashboard"}]},
            "links": [], "templating": {"list": variables}, "panels": panels}


# --- MoE routing health (one model, per replica) -------------------------------------------------

S = 'model="$model", instance=~"$instance"'
LOG2E = (f'log2(max(sum by (instance, lang, reference) (moe_routing_lsi_experts{{{S}}})))')


def health():
    L = Layout()
    L.row("Deep-layer collapse")
    L.add(stat("Languages flagged as collapsed",
               [target(f"count(moe_routing_deep_collapse{{{S}}} == 1) or vector(0)", "flagged")],
               description="Languages (and replicas) whose collapse detector is up now.",
               thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}]), 4, 7)
    L.add(timeseries(
        "Deep-layer collapse score vs threshold θ",
        [target(f'moe_routing_deep_collapse_score_bits{{{S}, lang=~"$lang", reference="$reference"}}',
                "{{lang}} vs {{reference}} · {{instance}}"),
         target(f"max(moe_routing_deep_collapse_threshold_bits{{{S}}})", "threshold θ")],
        unit="bits", overrides=[dashed_red("threshold.*")],
        description="C = mean over deep layers of the entropy gap to the reference minus its "
                    "mean over middle layers. Collapsed above θ (with enough tokens and C above "
                    "its spread across buckets)."), 12, 7)
    L.add(state_timeline(
        "Collapse flag (with hysteresis)",
        [target(f'moe_routing_deep_collapse{{{S}, lang=~"$lang", reference="$reference"}}',
                "{{lang}} · {{instance}}")],
        description="moe_routing_deep_collapse: raised after 3 rounds above θ, cleared after 3 "
                    "rounds below θ/2."), 8, 7)

    L.row("Usage entropy per layer")
    L.add(timeseries(
        "Usage entropy per layer ($lang) and log2 E",
        [target(f'moe_routing_usage_entropy_bits{{{S}, lang=~"$lang"}}',
                "{{lang}} layer {{layer}} · {{instance}}"),
         target(LOG2E, "log2 E (maximum)")],
        unit="bits", minv=0, overrides=[dashed_red("log2 E.*")],
        description="Usage entropy of each MoE layer. log2 E (uniform load) is derived from "
                    "the LSI class counts, which always add up to E."), 12, 9)
    L.add(timeseries(
        "Deep vs middle layers: mean usage entropy",
        [target(f'moe_routing_deep_usage_entropy_bits{{{S}, lang=~"$lang"}}',
                "{{lang}} deep · {{instance}}"),
         target(f'moe_routing_middle_usage_entropy_bits{{{S}, lang=~"$lang"}}',
                "{{lang}} middle · {{instance}}"),
         target(LOG2E, "log2 E (maximum)")],
        unit="bits", minv=0, overrides=[dashed_red("log2 E.*")],
        description="The collapse signature: the deep mean falls away from the middle mean."),
        12, 9)
    L.add(heatmap(
        "Usage entropy, layer × time: $lang",
        [target(f'min by (layer) (moe_routing_usage_entropy_bits{{{S}, lang=~"$lang"}})',
                "{{layer}}")],
        unit="bits", repeat="lang",
        description="One row per MoE layer (the lowest value across the selected replicas); "
                    "collapsed deep layers turn red."), 8, 9)

    L.row("Entropy gap to the reference")
    L.add(timeseries(
        "Entropy gap per layer ($reference − lang)",
        [target(f'moe_routing_entropy_gap_bits{{{S}, lang=~"$lang", reference="$reference"}}',
                "{{lang}} layer {{layer}} · {{instance}}")],
        unit="bits",
        description="H(reference) − H(lang) per layer: positive when the language is more "
                    "concentrated than the reference (the paper's Figure 1b)."
                    + DETAIL), 12, 8)
    L.add(heatmap(
        "Entropy gap, layer × time: $lang",
        [target(f'max by (layer) (moe_routing_entropy_gap_bits{{{S}, lang=~"$lang", '
                f'reference="$reference"}})', "{{layer}}")],
        unit="bits", reverse=True, repeat="lang",
        description="One row per MoE layer (the largest gap across the selected replicas)."
                    + DETAIL),
        12, 8)

    L.row("Concentration")
    L.add(timeseries(
        "Gini coefficient per layer",
        [target(f'moe_routing_gini{{{S}, lang=~"$lang"}}', "{{lang}} layer {{layer}} · {{instance}}")],
        minv=0, maxv=1, description="0 = equal load; rises in collapsed deep layers." + DETAIL),
        12, 8)
    L.add(timeseries(
        "Active experts per layer",
        [target(f'moe_routing_active_experts{{{S}, lang=~"$lang"}}',
                "{{lang}} layer {{layer}} · {{instance}}")],
        minv=0, description="Experts with at least a tenth of a uniform share." + DETAIL), 12, 8)

    L.row("Similarity to the reference (layer $layer) and noise floors")
    L.add(timeseries(
        "Cosine similarity at layer $layer vs split-half noise floor",
        [target(f'moe_routing_cosine_similarity{{{S}, lang=~"$lang", reference="$reference", '
                f'layer="$layer"}}', "{{lang}} vs {{reference}} · {{instance}}"),
         target(f'moe_routing_split_half_cosine_similarity{{{S}, lang=~"$lang", layer="$layer"}}',
                "split-half floor {{lang}} · {{instance}}")],
        minv=0, maxv=1, overrides=[{"matcher": {"id": "byRegexp", "options": "split-half.*"},
                                    "properties": [{"id": "custom.lineStyle",
                                                    "value": {"fill": "dash", "dash": [10, 10]}}]}],
        description="A gap to the reference smaller than the split-half gap (dashed: the same "
                    "language against itself) is noise." + DETAIL), 8, 8)
    L.add(timeseries(
        "Jensen–Shannon divergence at layer $layer",
        [target(f'moe_routing_js_divergence_bits{{{S}, lang=~"$lang", reference="$reference", '
                f'layer="$layer"}}', "{{lang}} vs {{reference}} · {{instance}}")],
        unit="bits", minv=0, maxv=1,
        description="Base-2 JSD of the usage vectors, in [0, 1]. Its split-half noise floor is "
                    "not published live (moescope analyze gives it offline); compare with the "
                    "split-half cosine beside it." + DETAIL), 8, 8)
    L.add(timeseries(
        "Split-half cosine per layer (noise floor)",
        [target(f'moe_routing_split_half_cosine_similarity{{{S}, lang=~"$lang"}}',
                "{{lang}} layer {{layer}} · {{instance}}")],
        minv=0, maxv=1, description="Cosine between two random halves of a language's "
                                    "traffic: ≈ 1 when the window holds enough tokens."
                                    + DETAIL), 8, 8)
    L.add(heatmap(
        "Cosine similarity to $reference, layer × time: $lang",
        [target(f'min by (layer) (moe_routing_cosine_similarity{{{S}, lang=~"$lang", '
                f'reference="$reference"}})', "{{layer}}")],
        repeat="lang", description="The paper's U shape: lowest at the first and last layers."
                                   + DETAIL),
        12, 8)
    L.add(heatmap(
        "JS divergence per language pair (largest over the pair layers)",
        [target(f'max by (lang_a, lang_b) (moe_routing_pair_js_divergence_bits{{{S}}})',
                "{{lang_a}} – {{lang_b}}")],
        unit="bits", reverse=True,
        description="Rows: every ordered pair of the busiest languages (6 by default), over time "
                    "(both orders, so each pair's row reads from either language); the largest "
                    "JSD over the pair layers (the deep layers by default, "
                    "PublisherConfig::pair_layers). "
                    "`moescope analyze --all-pairs` gives every pair and layer offline."), 12, 8)
    L.add(heatmap(
        "JS divergence to $reference, layer × time: $lang",
        [target(f'max by (layer) (moe_routing_js_divergence_bits{{{S}, lang=~"$lang", '
                f'reference="$reference"}})', "{{layer}}")],
        unit="bits", reverse=True, repeat="lang", description=DETAIL.strip()), 12, 8)

    L.row("Language specificity (LSI)")
    L.add(bargauge(
        "LSI classes now ($lang vs $reference)",
        [target(f'max by (lang, class) (moe_routing_lsi_experts{{{S}, lang=~"$lang", '
                f'reference="$reference"}})', "{{lang}} {{class}}", instant=True)],
        description="Experts by class, LSI averaged over layers (τ = 0.2): lang_specific, "
                    "reference_specific, shared."), 8, 8)
    L.add(timeseries(
        "LSI class counts over time",
        [target(f'moe_routing_lsi_experts{{{S}, lang=~"$lang", reference="$reference"}}',
                "{{lang}} {{class}} · {{instance}}")],
        minv=0, description="Shared experts falling = rising isolation "
                            "(alert MoeRoutingLanguageIsolationRising)."), 16, 8)

    L.row("Traffic")
    L.add(timeseries(
        "Tokens per second per language",
        [target(f"sum by (lang) (rate(moe_routing_tokens_total{{{S}}}[$__rate_interval]))",
                "{{lang}}")],
        unit="short", stack=True, description="Content tokens recorded (sampling-weighted)."),
        12, 8)
    L.add(timeseries(
        "Tokens in the rolling window",
        [target(f"moe_routing_window_tokens{{{S}}}", "{{lang}} · {{instance}}"),
         target("1000", "alert minimum (1000)")],
        unit="short", overrides=[dashed_red("alert minimum.*")],
        description="The collapse alert needs at least 1000 tokens of the language in the "
                    "window; the detector 500 per deep layer."), 12, 8)

    L.row("The monitor itself")
    L.add(timeseries(
        "Monitor overhead: record call and publication",
        [target(f"moe_routing_monitor_record_seconds{{{S}}}", "record p{{quantile}} · {{instance}}"),
         target(f"moe_routing_monitor_upkeep_seconds{{{S}}}", "upkeep · {{instance}}")],
        unit="s"), 8, 8)
    L.add(timeseries(
        "Dropped tokens per second by reason",
        [target(f"sum by (reason) (rate(moe_routing_dropped_total{{{S}}}[$__rate_interval]))",
                "{{reason}}")],
        unit="short", stack=True, description="Alert MoeRoutingDropsRising above 1 % of tokens."),
        8, 8)
    L.add(timeseries(
        "Publication age and window fill",
        [target(f"time() - moe_routing_monitor_last_publish_timestamp_seconds{{{S}}}",
                "seconds since last publication · {{instance}}"),
         target(f"moe_routing_monitor_window_fill_ratio{{{S}}}", "window fill · {{instance}}")],
        description="Alert MoeRoutingMonitorStale past 60 s."), 8, 8)
    L.add(timeseries(
        "Language tags over the cap, invalid tags (per second)",
        [target(f"rate(moe_routing_monitor_languages_over_cap_total{{{S}}}[$__rate_interval])",
                "over cap · {{instance}}"),
         target(f"rate(moe_routing_monitor_invalid_tags_total{{{S}}}[$__rate_interval])",
                "invalid · {{instance}}")],
        unit="short"), 24, 6)

    variables = [
        datasource_var(),
        query_var("model", "Model", "label_values(moe_routing_window_tokens, model)"),
        query_var("instance", "Instance",
                  'label_values(moe_routing_window_tokens{model="$model"}, instance)',
                  multi=True, all_value=".+"),
        query_var("lang", "Language",
                  'label_values(moe_routing_window_tokens{model="$model", instance=~"$instance"}, lang)',
                  multi=True, all_value=".+"),
        query_var("reference", "Reference",
                  'label_values(moe_routing_deep_collapse_score_bits{model="$model"}, reference)'),
        query_var("layer", "Layer (JSD, cosine)",
                  'label_values(moe_routing_usage_entropy_bits{model="$model"}, layer)', sort=3),
    ]
    return dashboard("moescope-routing-health", "MoE routing health",
                     "Per-language routing health of one MoE model (moescope): usage entropy per "
                     "layer, the deep-layer collapse score, similarity to the reference, LSI, "
                     "traffic and the monitor's own cost.", variables, L.panels,
                     ["moescope", "moe"])


# --- MoE routing fleet (recording rules) ---------------------------------------------------------

H = "model_layer_lang:moe_routing_usage_entropy_bits:rate5m"


def fleet():
    L = Layout()
    L.row("Fleet")
    L.add(stat("Replicas publishing", [target('model:moe_routing_replicas:count{model="$model"}',
                                              "replicas")]), 6, 5)
    L.add(stat("Languages flagged on some replica",
               [target('count(model_lang_reference:moe_routing_deep_collapse:sum{model="$model"} > 0)'
                       " or vector(0)", "languages")],
               thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}]), 6, 5)
    L.add(timeseries(
        "Replicas flagging deep-layer collapse",
        [target('model_lang_reference:moe_routing_deep_collapse:sum{model="$model", lang=~"$lang"}',
                "{{lang}} vs {{reference}}")],
        minv=0), 12, 5)

    L.row("Fleet usage entropy (from summed per-expert counters)")
    L.add(timeseries(
        "Fleet usage entropy per layer ($lang) and log2 E",
        [target(f'{H}{{model="$model", lang=~"$lang"}}', "{{lang}} layer {{layer}}"),
         target('log2(max(model_layer:moe_routing_experts:count{model="$model"}))',
                "log2 E (maximum)")],
        unit="bits", minv=0, overrides=[dashed_red("log2 E.*")],
        description="H = −Σ p log2 p over the fleet's summed selection rates (recording rules "
                    "in dashboards/rules/recording.yml); never an average of replica entropies."),
        12, 9)
    L.add(timeseries(
        "Fleet entropy gap per layer ($reference − lang)",
        [target(f'{H}{{model="$model", lang="$reference"}} - ignoring (lang) group_right () '
                f'{H}{{model="$model", lang=~"$lang"}}', "{{lang}} layer {{layer}}")],
        unit="bits"), 12, 9)
    L.add(heatmap(
        "Fleet usage entropy, layer × time: $lang",
        [target(f'{H}{{model="$model", lang=~"$lang"}}', "{{layer}}")],
        unit="bits", repeat="lang"), 8, 9)

    L.row("Fleet concentration and load")
    L.add(timeseries(
        "Fleet active experts per layer",
        [target(f'model_layer_lang:moe_routing_active_experts:rate5m{{model="$model", lang=~"$lang"}}',
                "{{lang}} layer {{layer}}")], minv=0), 12, 8)
    L.add(bargauge(
        "Busiest experts at layer $layer (fleet share)",
        [target('topk by (lang) (8, model_layer_lang_expert:moe_routing_expert_share:ratio_rate5m'
                '{model="$model", layer="$layer", lang=~"$lang"})', "{{lang}} expert {{expert}}",
                instant=True)],
        unit="percentunit"), 12, 8)

    L.row("Fleet traffic and drops")
    L.add(timeseries(
        "Fleet tokens per second per language",
        [target('model_lang:moe_routing_tokens:rate5m{model="$model"}', "{{lang}}")],
        unit="short", stack=True), 12, 8)
    L.add(timeseries(
        "Fleet dropped tokens per second by reason",
        [target('model_reason:moe_routing_dropped:rate5m{model="$model"}', "{{reason}}")],
        unit="short", stack=True), 12, 8)

    variables = [
        datasource_var(),
        query_var("model", "Model", "label_values(model_lang:moe_routing_tokens:rate5m, model)"),
        query_var("lang", "Language", f'label_values({H}{{model="$model"}}, lang)',
                  multi=True, all_value=".+"),
        query_var("reference", "Reference", f'label_values({H}{{model="$model"}}, lang)'),
        query_var("layer", "Layer", f'label_values({H}{{model="$model"}}, layer)', sort=3),
    ]
    return dashboard("moescope-routing-fleet", "MoE routing fleet",
                     "Fleet-wide routing health from the recording rules (per-expert counters "
                     "summed across replicas, then entropy).", variables, L.panels,
                     ["moescope", "moe"])


if __name__ == "__main__":
    for name, d in (("moe-routing-health.json", health()), ("moe-routing-fleet.json", fleet())):
        path = ROOT / "dashboards" / name
        path.write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")
