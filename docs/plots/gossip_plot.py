#!/usr/bin/env python3
"""Plot `gladius-sim --scenario gossip --json` reports: reliability, RMR
and median latency against the crash fraction, the tree against flooding.

    python3 docs/plots/gossip_plot.py OUT.svg REPORT.json...

Each report is the last stdout line of a run (or a file ending with it).
Only runs without loss are plotted; runs are grouped by node count. Uses
the standard library only and writes a self-contained SVG.
"""

import json
import math
import sys

W, H = 300, 220  # one panel
ML, MR, MT, MB = 56, 12, 30, 42
COLOURS = {"plumtree": "#0969da", "flood": "#d4600f"}
DASHES = {1000: "", 10000: "5 3"}


def load(paths):
    """(nodes, protocol) -> sorted [(crash %, batch)]."""
    series = {}
    for path in paths:
        with open(path) as f:
            lines = [l for l in f.read().splitlines() if l.strip().startswith("{")]
        report = json.loads(lines[-1])
        if report.get("loss", 0) > 0 or report.get("scenario") != "gossip":
            continue
        crash = 100.0 * report.get("crash_fraction", 0.0)
        for i, batch in enumerate(report["batches"]):
            # Later batches of a run ran on the survivors of the crash.
            c = crash if i == 0 else 100.0 * batch.get("crashed", 0) / report["nodes"]
            key = (report["nodes"], batch["protocol"])
            series.setdefault(key, []).append((c, batch))
    for v in series.values():
        v.sort(key=lambda p: p[0])
    return series


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;")


def panel(x0, title, ylabel, series, value, ymin, ymax, log=False, ticks=None):
    out = [f'<g transform="translate({x0},0)">']
    pw, ph = W - ML - MR, H - MT - MB

    def sx(c):
        return ML + pw * c / 30.0

    def sy(v):
        if log:
            v = max(v, ymin)
            f = (math.log10(v) - math.log10(ymin)) / (math.log10(ymax) - math.log10(ymin))
        else:
            f = (v - ymin) / (ymax - ymin)
        return MT + ph * (1 - f)

    out.append(f'<text x="{ML + pw / 2}" y="16" text-anchor="middle" class="title">{esc(title)}</text>')
    out.append(f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" class="frame"/>')
    for c in (0, 10, 20, 30):
        out.append(f'<line x1="{sx(c)}" x2="{sx(c)}" y1="{MT}" y2="{MT + ph}" class="grid"/>')
        out.append(f'<text x="{sx(c)}" y="{MT + ph + 14}" text-anchor="middle">{c} %</text>')
    out.append(f'<text x="{ML + pw / 2}" y="{H - 8}" text-anchor="middle">nodes crashed</text>')
    for t in ticks:
        out.append(f'<line x1="{ML}" x2="{ML + pw}" y1="{sy(t)}" y2="{sy(t)}" class="grid"/>')
        label = f"{t:g}"
        out.append(f'<text x="{ML - 4}" y="{sy(t) + 3}" text-anchor="end">{label}</text>')
    out.append(
        f'<text transform="translate(12,{MT + ph / 2}) rotate(-90)" text-anchor="middle">{esc(ylabel)}</text>'
    )
    for (nodes, proto), pts in sorted(series.items()):
        xy = [(sx(c), sy(value(b))) for c, b in pts]
        style = f'stroke="{COLOURS[proto]}"'
        if DASHES.get(nodes):
            style += f' stroke-dasharray="{DASHES[nodes]}"'
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        out.append(f'<polyline points="{path}" fill="none" stroke-width="2" {style}/>')
        for x, y in xy:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLOURS[proto]}"/>')
    out.append("</g>")
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    series = load(sys.argv[2:])
    rmr_max = max(b["rmr"] for pts in series.values() for _, b in pts)
    rmr_top = 10 ** math.ceil(math.log10(max(rmr_max, 1.0)))
    lat_max = max(b["latency_p50_ms"] for pts in series.values() for _, b in pts)
    lat_top = 20 * math.ceil(lat_max / 20.0)
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{3 * W}" height="{H + 26}" '
        f'viewBox="0 0 {3 * W} {H + 26}" font-family="sans-serif" font-size="11">',
        "<style>.title{font-weight:bold;font-size:12px}.frame{fill:none;stroke:#888}"
        ".grid{stroke:#e2e5e9}text{fill:#1d232a}</style>",
        f'<rect width="{3 * W}" height="{H + 26}" fill="#fff"/>',
    ]
    svg += panel(0, "Reliability (worst message)", "fraction of live subscribers",
                 series, lambda b: b["reliability_min"], 0.9, 1.0, ticks=[0.9, 0.95, 1.0])
    ticks = [t for t in (0.001, 0.01, 0.1, 1, 10, 100, 1000) if t <= rmr_top]
    svg += panel(W, "RMR (redundant copies per delivery)", "RMR, log scale", series,
                 lambda b: b["rmr"], 0.001, rmr_top, log=True, ticks=ticks)
    svg += panel(2 * W, "Median delivery latency", "ms", series,
                 lambda b: b["latency_p50_ms"], 0, lat_top,
                 ticks=list(range(0, int(lat_top) + 1, 20)))
    # Legend.
    y = H + 14
    x = 60
    for (nodes, proto) in sorted(series):
        dash = f' stroke-dasharray="{DASHES[nodes]}"' if DASHES.get(nodes) else ""
        svg.append(f'<line x1="{x}" x2="{x + 24}" y1="{y - 4}" y2="{y - 4}" '
                   f'stroke="{COLOURS[proto]}" stroke-width="2"{dash}/>')
        name = "PlumTree" if proto == "plumtree" else "flooding"
        svg.append(f'<text x="{x + 30}" y="{y}">{name}, {nodes:,} nodes</text>')
        x += 190
    svg.append("</svg>")
    with open(sys.argv[1], "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
