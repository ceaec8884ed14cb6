#!/usr/bin/env python3
"""Renders dashboards/collapse.png: a deep-layer collapse as the "MoE routing health" dashboard
shows it, from real data.

It starts `moescope demo --simulate` (Hebrew collapses, then recovers) and a real Prometheus
scraping it with dashboards/rules/*.yml loaded, waits through the scenario, reads the panels'
series back with Prometheus's query_range API (the same expressions as the dashboard's panels,
variables filled in), and draws them with matplotlib.

    cargo build -p moescope-cli            # or --release
    pip install matplotlib
    python3 scripts/render_collapse.py [--binary target/debug/moescope] [--out dashboards/collapse.png]

Needs `prometheus` on PATH (Debian: apt-get install prometheus). Takes about three minutes.
"""
import argparse
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = "olmoe-1b-7b"
COLLAPSE_AT, RECOVER_AT, END = 40, 130, 185


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port, path, **params):
    url = f"http://127.0.0.1:{port}{path}?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(ROOT / "target/debug/moescope"))
    ap.add_argument("--out", default=str(ROOT / "dashboards/collapse.png"))
    ap.add_argument("--alert-for", default="10s", help="`for:` of the collapse alert in this run")
    args = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="moescope-render-"))
    procs = []
    try:
        demo = subprocess.Popen(
            [args.binary, "demo", "--simulate", "--quiet", "--expert-selections",
             "--listen", "127.0.0.1:0", "--model", MODEL,
             "--collapse-at", str(COLLAPSE_AT), "--recover-at", str(RECOVER_AT),
             "--interval-ms", "1000", "--bucket-ms", "1000", "--buckets", "20",
             "--tokens-per-step", "128", "--duration", str(END + 60)],
            stdout=subprocess.PIPE, text=True)
        procs.append(demo)
        start = time.time()
        addr = re.search(r"metrics at http://(\S+)/metrics", demo.stdout.readline()).group(1)
        port = free_port()
        # The collapse alert's `for:` is 15m in production; shortened so it fires in this run.
        alerts, n = re.subn(r"(- alert: MoeRoutingDeepLayerCollapse\n(?:.*\n)*?\s+for: )\S+",
                            rf"\g<1>{args.alert_for}", (ROOT / "dashboards/rules/alerts.yml").read_text())
        assert n == 1
        (tmp / "alerts.yml").write_text(alerts)
        (tmp / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {tmp / 'alerts.yml'}\n"
            f"  - {ROOT / 'dashboards/rules/recording.yml'}\n"
            "scrape_configs:\n  - job_name: moescope\n    static_configs:\n"
            f"      - targets: ['{addr}']\n")
        procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "w")))
        while time.time() < start + END:
            print(f"\r{time.time() - start:5.0f}/{END} s", end="", file=sys.stderr, flush=True)
            time.sleep(5)
        print(file=sys.stderr)
        t1 = time.time()
        t0 = start + 5

        def series(expr):
            data = api(port, "/api/v1/query_range", query=expr, start=t0, end=t1, step=1)
            return [(s["metric"], [(float(t) - start, float(v)) for t, v in s["values"]])
                    for s in data["result"]]

        sel = f'model="{MODEL}"'
        score = series(f'moe_routing_deep_collapse_score_bits{{{sel}, reference="en"}}')
        theta = series(f'max(moe_routing_deep_collapse_threshold_bits{{{sel}}})')
        flag = series(f'moe_routing_deep_collapse{{{sel}, lang="he"}}')
        ent = series(f'moe_routing_usage_entropy_bits{{{sel}, lang="he"}}')
        deep = series(f'moe_routing_deep_usage_entropy_bits{{{sel}}}')
        mid = series(f'moe_routing_middle_usage_entropy_bits{{{sel}}}')
        log2e = series(f'log2(max(sum by (instance, lang, reference) (moe_routing_lsi_experts{{{sel}}})))')
        alert = series('ALERTS{alertname="MoeRoutingDeepLayerCollapse", alertstate="firing"}')
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    fig, axes = plt.subplots(3, 1, figsize=(10, 9.5), sharex=True,
                             gridspec_kw={"height_ratios": [1, 1.2, 1]})
    fig.patch.set_facecolor("#181b1f")
    for ax in axes:
        ax.set_facecolor("#111217")
        ax.tick_params(colors="#ccccdc")
        for s in ax.spines.values():
            s.set_color("#444")
        ax.grid(color="#2c3235", linewidth=0.6)
        ax.axvspan(COLLAPSE_AT, RECOVER_AT, color="#f2cc0c", alpha=0.06)

    def title(ax, text):
        ax.set_title(text, loc="left", color="#ccccdc", fontsize=11)

    ax = axes[0]
    colors = {"he": "#f2495c", "ja": "#5794f2", "en": "#73bf69"}
    for m, pts in score:
        ax.plot(*zip(*pts), color=colors.get(m["lang"], "#aaa"), lw=1.6,
                label=f'{m["lang"]} vs {m["reference"]}')
    for _, pts in theta:
        ax.plot(*zip(*pts), color="red", ls="--", lw=1.5, label="threshold θ")
    for _, pts in flag:
        on = [t for t, v in pts if v >= 1]
        if on:
            ax.axvspan(min(on), max(on), color="#f2495c", alpha=0.15, label="collapse flag (he)")
    for _, pts in alert:
        on = [t for t, _ in pts]
        if on:
            ax.plot([min(on), max(on)], [ax.get_ylim()[1] * 0.95] * 2, color="#ff7383", lw=4,
                    solid_capstyle="butt", label="MoeRoutingDeepLayerCollapse firing")
    title(ax, "Deep-layer collapse score vs threshold θ (bits)")
    ax.legend(loc="upper right", fontsize=8, facecolor="#181b1f", labelcolor="#ccccdc")

    ax = axes[1]
    layers = sorted({int(m["layer"]) for m, _ in ent})
    times = sorted({t for _, pts in ent for t, _ in pts})
    index = {t: i for i, t in enumerate(times)}
    import math
    grid = [[math.nan] * len(times) for _ in layers]
    for m, pts in ent:
        row = layers.index(int(m["layer"]))
        for t, v in pts:
            grid[row][index[t]] = v
    im = ax.imshow(grid, aspect="auto", origin="lower", cmap="RdYlGn",
                   extent=[times[0], times[-1], -0.5, len(layers) - 0.5])
    ax.set_yticks(range(len(layers)), [str(l) for l in layers], fontsize=7)
    ax.set_ylabel("MoE layer", color="#ccccdc")
    cax = ax.inset_axes([1.005, 0, 0.012, 1])  # keeps the panel as wide as the others
    cb = fig.colorbar(im, cax=cax)
    cb.ax.tick_params(colors="#ccccdc", labelsize=7)
    cb.set_label("bits", color="#ccccdc")
    title(ax, "Usage entropy, layer × time: he")

    ax = axes[2]
    for m, pts in deep:
        ax.plot(*zip(*pts), color=colors.get(m["lang"], "#aaa"), lw=1.6, label=f'{m["lang"]} deep')
    for m, pts in mid:
        ax.plot(*zip(*pts), color=colors.get(m["lang"], "#aaa"), lw=1, ls=":",
                label=f'{m["lang"]} middle')
    for _, pts in log2e:
        ax.plot(*zip(*pts), color="red", ls="--", lw=1.5, label="log2 E (maximum)")
    title(ax, "Deep vs middle layers: mean usage entropy (bits)")
    ax.legend(loc="lower left", fontsize=8, ncol=4, facecolor="#181b1f", labelcolor="#ccccdc")
    ax.set_xlabel("seconds since the demo started (he collapses at "
                  f"{COLLAPSE_AT} s, recovers at {RECOVER_AT} s)", color="#ccccdc")
    fig.suptitle(f"MoE routing health — {MODEL}, moescope demo --simulate, real Prometheus data",
                 color="#ccccdc", fontsize=12)
    fig.tight_layout(rect=[0, 0, 0.97, 1])
    fig.savefig(args.out, dpi=90, facecolor=fig.get_facecolor())
    print(f"wrote {args.out} ({os.path.getsize(args.out) // 1024} KiB)")


if __name__ == "__main__":
    main()
