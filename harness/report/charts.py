"""matplotlib (Agg) charts rendered to inline SVG strings for the self-contained HTML report.

Text stays text (svg.fonttype 'none') so the report is searchable and small; matplotlib escapes it for XML.
Mathtext is off: a '$' in a group name from data must print as a '$', not start a formula.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)
import numpy as np  # noqa: E402

_RC = {"svg.fonttype": "none", "text.parse_math": False, "font.size": 9, "axes.spines.top": False,
       "axes.spines.right": False, "figure.dpi": 100}
# Okabe & Ito (2008), "Color Universal Design", the palette Wong (2011, Nature Methods 8:441) recommends for readers
# with colour-vision deficiency; black last. Each series also gets a line style (SERIES_STYLES), so two series whose
# colours a reader cannot tell apart still differ in the dash; tests/unit/test_report_buyers.py checks the distance
# under simulated deuteranopia, protanopia and tritanopia (colorspacious, Machado et al. 2009).
COLORS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
DASHES = ("-", "--", ":", "-.")
# (colour, dash) per series index, 32 distinct: neighbours differ in both, and a colour comes back only with
# another dash.
SERIES_STYLES = tuple((COLORS[i % len(COLORS)], DASHES[(i + i // len(COLORS)) % len(DASHES)])
                      for i in range(len(COLORS) * len(DASHES)))


def to_svg(fig: plt.Figure, *, tight: bool = True) -> str:
    """The figure as an <svg> element (XML prolog and doctype dropped so it can sit inside HTML). tight=False: the
    figure's own layout (subplots_adjust), which saves the extra full draw a tight bounding box costs."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight" if tight else None)
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def group_bars(title: str, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float | None],
               Sequence[tuple[float | None, float | None]]]], ylabel: str) -> str:
    """Grouped bars: one cluster per group, one bar per series (variant @ target), 95% CI whiskers."""
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(groups) * max(1, len(series)) ** 0.5 + 2), 3.2))
        width = 0.8 / max(1, len(series))
        x = np.arange(len(groups))
        for i, (label, values, cis) in enumerate(series):
            v = np.array([np.nan if a is None else a for a in values], dtype=float)
            lo = np.array([np.nan if c[0] is None else c[0] for c in cis], dtype=float)
            hi = np.array([np.nan if c[1] is None else c[1] for c in cis], dtype=float)
            err = np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
            yerr = np.nan_to_num(err) if np.isfinite(err).any() else None  # no CI given: no zero-height caps
            ax.bar(x + (i - (len(series) - 1) / 2) * width, v, width, yerr=yerr, capsize=2,
                   label=label, color=COLORS[i % len(COLORS)], error_kw={"elinewidth": 0.8})
        ax.set_xticks(x, groups, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return to_svg(fig)


def heatmap(title: str, rows: Sequence[str], cols: Sequence[str], values: np.ndarray, label: str) -> str:
    """Group x variant matrix of deltas, diverging colours centred on zero, value printed in each cell."""
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 3, 0.35 * len(rows) + 1.5))
        finite = values[np.isfinite(values)]
        lim = float(np.abs(finite).max()) if finite.size else 1.0
        im = ax.imshow(values, cmap="RdBu", vmin=-lim or -1, vmax=lim or 1, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=20, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:+.3f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, label=label)
        ax.set_title(title)
        return to_svg(fig)


def paired_bars(title: str, groups: Sequence[str], before: Sequence[float], after: Sequence[float],
                labels: tuple[str, str], ylabel: str) -> str:
    """Two bars per group (e.g. FMR at the fp32 threshold vs at a threshold re-tuned on the variant)."""
    series = [(labels[0], before, [(None, None)] * len(groups)), (labels[1], after, [(None, None)] * len(groups))]
    return group_bars(title, groups, series, ylabel)


def latency_boxes(title: str, labels: Sequence[str], samples: Sequence[np.ndarray]) -> str:
    """Distribution of raw single-stream latencies per entry (box = quartiles, whiskers 1st-99th percentile)."""
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(0.6 * len(labels) + 3, 3.6))
        # vertical (the default orientation): the orientation keyword changed name across matplotlib 3.8-3.11
        ax.boxplot(list(samples), whis=(1, 99), showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right")
        ax.set_ylabel("latency (ms)")
        ax.set_title(title)
        return to_svg(fig)


def pareto_scatter(title: str, labels: Sequence[str], x: Sequence[float], y: Sequence[float],
                   front: Sequence[bool]) -> str:
    """Latency vs worst-group error; the non-dominated entries are joined by a step line."""
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        xs, ys, fr = np.asarray(x, float), np.asarray(y, float), np.asarray(front, bool)
        ax.scatter(xs[~fr], ys[~fr], c="#999999", label="dominated")
        ax.scatter(xs[fr], ys[fr], c="#d62728", label="Pareto front")
        order = np.argsort(xs[fr])
        ax.step(xs[fr][order], ys[fr][order], where="post", c="#d62728", lw=0.8)
        for xi, yi, lab in zip(xs, ys, labels):
            ax.annotate(lab, (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("p90 latency (ms)")
        ax.set_ylabel("worst-group error")
        ax.set_title(title)
        ax.legend(fontsize=7, frameon=False)
        return to_svg(fig)


def fpir_gallery_size(title: str, panels: Sequence[tuple[str, Sequence[tuple[int, float | None, float | None,
                      float | None]], Sequence[tuple[int, float | None]]]], floor: float = 1e-4) -> str:
    """FPIR (log) against gallery size (log), one panel per probe group: (group, measured [(size, value, lo, hi)],
    model [(size, value)]). Measured points are joined by a solid line with their 95% interval as whiskers; the
    model's extension is a dotted line with hollow markers in another colour, so the two are never read as one
    curve. A zero rate is drawn on the floor (the caption says so)."""
    rows, cols = _facet_grid(len(panels))
    (m_colour, m_dash), (x_colour, _) = SERIES_STYLES[4], SERIES_STYLES[5]
    sizes = sorted({p[0] for _, measured, model in panels for p in list(measured) + list(model)})
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
        for ax, (group, measured, model) in zip(axes.flat, panels):
            _measured_points(ax, measured, floor, m_colour, m_dash, "measured (95% interval)")
            pts = [p for p in model if p[1] is not None]
            if pts:
                ax.plot([p[0] for p in pts], [max(p[1], floor) for p in pts], ":", marker="o", mfc="none", ms=3.5,
                        lw=1.0, color=x_colour, label="model: 1 - (1 - p_t)^N")
            _fpir_panel_axes(ax, group, floor)
        _size_ticks(axes, sizes, lambda v: f"{v:,.0f}")
        return _finish_facets(fig, axes, len(panels), rows, cols, "gallery size (templates)", "FPIR", title)


def fpir_size_facets(title: str, panels: Sequence[tuple[str, Sequence[tuple[str, Sequence[tuple[int, float | None,
                     float | None, float | None]], Sequence[tuple[int, float | None]]]]]],
                     floor: float = 1e-4) -> str:
    """FPIR (log) against gallery size (log), one panel per precision, one line per probe group (the buyer's page):
    panels: (panel title, [(group, measured [(size, value, lo, hi)], model [(size, value)])]). A group keeps its
    colour and dash (SERIES_STYLES by group order) in every panel; measured points are filled markers joined in the
    group's dash with their 95% interval as whiskers, the independent-comparisons model's extension hollow markers
    of the same colour with no line, so the two are never read as one curve. A zero rate is drawn on the floor."""
    groups = list(dict.fromkeys(g for _, lines in panels for g, *_ in lines))
    style = {g: SERIES_STYLES[i % len(SERIES_STYLES)] for i, g in enumerate(groups)}
    rows, cols = _facet_grid(len(panels))
    sizes = sorted({p[0] for _, lines in panels for _, measured, model in lines for p in list(measured) + list(model)})
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
        for ax, (name, lines) in zip(axes.flat, panels):
            for g, measured, model in lines:
                colour, dash = style[g]
                _measured_points(ax, measured, floor, colour, dash, g)
                pts = [p for p in model if p[1] is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [max(p[1], floor) for p in pts], ls="none", marker="o", mfc="none",
                            ms=4, color=colour, label="_nolegend_")
            _fpir_panel_axes(ax, name, floor)
        if any(p[1] is not None for _, lines in panels for *_, model in lines for p in model):
            axes.flat[0].plot([], [], ls="none", marker="o", mfc="none", ms=4, color="#000000",
                              label="model 1-(1-p_t)^N (hollow)")
        _size_ticks(axes, sizes, _count)
        return _finish_facets(fig, axes, len(panels), rows, cols, "gallery size (templates)", "FPIR", title)


def _fpir_panel_axes(ax, title: str, floor: float) -> None:
    """One FPIR-against-gallery-size panel's axes: log-log, rates from `floor` to 1, major grid."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(floor * 0.8, 1.3)
    _fixed_log(ax.yaxis)
    ax.set_title(title, fontsize=8.5)
    ax.grid(True, which="major", lw=0.3)


def _measured_points(ax, measured, floor: float, colour: str, dash, label: str) -> None:
    """Measured (size, value, lo, hi) points as filled markers joined in `dash`, their 95% interval as whiskers;
    a value or bound below `floor` (a zero rate on a log axis) drawn on the floor."""
    pts = [p for p in measured if p[1] is not None]
    if not pts:
        return
    x = np.array([p[0] for p in pts], float)
    y = np.maximum(np.array([p[1] for p in pts], float), floor)
    lo = np.array([floor if p[2] is None else max(p[2], floor) for p in pts], float)
    hi = np.array([floor if p[3] is None else max(p[3], floor) for p in pts], float)
    ax.errorbar(x, y, yerr=np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)]), fmt="o",
                ls=dash, ms=3, lw=1.2, capsize=2, color=colour, label=label)


def _size_ticks(axes, sizes: Sequence[float], label) -> None:
    """Gallery-size x axes: a tick at each power of ten within the sizes drawn (the first size when none is),
    labelled by `label(value)`."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    decades = [10.0 ** k for k in range(0, 10) if sizes and sizes[0] / 1.5 <= 10.0 ** k <= sizes[-1] * 1.5]
    for ax in axes.flat:
        ax.xaxis.set_major_locator(FixedLocator(decades or list(sizes[:1]) or [1.0]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: label(v)))


def _count(v: float) -> str:
    """A gallery size as a short tick label (100, 1k, 10k, 1M): full numbers overlap on a narrow panel."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


def _plain_log(axis) -> None:
    """Log-axis tick labels as plain numbers (mathtext is off, so the default '10^{-2}' labels would print raw)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def det_curves(title: str, curves: Sequence[tuple[str, int, np.ndarray, np.ndarray]],
               fmr_range: tuple[float, float] = (1e-4, 1.0)) -> str:
    """DET as NIST FRVT draws it: FNMR (y) against FMR (x), both log. curves: (label, style index, fmr, fnmr);
    one colour per label's group (the text before ' · '), one line style per style index (e.g. precision)."""
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(6.2, 4.2))
        colours: dict[str, tuple] = {}
        floor = fmr_range[0]
        for label, style, fmr, fnmr in curves:
            ok = np.isfinite(fmr) & np.isfinite(fnmr)
            if not ok.any():
                continue
            colour, dash = _group_colour(colours, label)
            # a zero rate has no place on a log axis: drawn on the axis edge (the caption says so)
            ax.plot(np.clip(fmr[ok], floor, None), np.clip(fnmr[ok], floor, None), dash,
                    color=colour, lw=1.4, label=label, drawstyle="steps-post")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(floor * 0.8, fmr_range[1] * 1.1)
        ax.set_ylim(floor * 0.8, 1.1)
        _plain_log(ax.xaxis)
        _plain_log(ax.yaxis)
        ax.set_xlabel("FMR (same-group impostors)")
        ax.set_ylabel("FNMR")
        ax.set_title(title)
        ax.grid(True, which="major", lw=0.3)
        ax.legend(fontsize=6.5, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return to_svg(fig)


def _group_colour(colours: dict[str, tuple], label: str) -> tuple:
    """One (colour, dash) per group across a chart's curves ("group · variant" labels share their group's)."""
    group = label.split(" · ")[0]
    return colours.setdefault(group, SERIES_STYLES[len(colours) % len(SERIES_STYLES)])


def fmr_vs_threshold(title: str, curves: Sequence[tuple[str, int, np.ndarray, np.ndarray]],
                     marks: Sequence[tuple[float, str]]) -> str:
    """FMR (log) against threshold per group; vertical lines at `marks` (threshold, label), e.g. the fp32
    threshold and fixed vendor cut-offs. curves: (label, style index, thresholds, fmr)."""
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(6.2, 3.8))
        colours: dict[str, tuple] = {}
        for label, style, thr, fmr in curves:
            ok = np.isfinite(fmr) & (fmr > 0)
            if not ok.any():
                continue
            colour, dash = _group_colour(colours, label)
            ax.plot(thr[ok], fmr[ok], dash, color=colour, lw=1.4, label=label, drawstyle="steps-post")
        for x, text in marks:
            ax.axvline(x, color="#444", lw=0.8, ls=":")
            ax.annotate(text, (x, 1.0), xycoords=("data", "axes fraction"), rotation=90, fontsize=6.5,
                        va="top", ha="right")
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
        ax.set_xlabel("threshold (cosine similarity; match if above)")
        ax.set_ylabel("FMR (same-group impostors)")
        ax.set_title(title)
        ax.grid(True, which="major", lw=0.3)
        ax.legend(fontsize=6.5, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return to_svg(fig)


def pareto_intervals(title: str, points: Sequence[tuple[str, float, float, float, float, float, float, bool]],
                     ylabel: str) -> str:
    """Speed against worst-group error across boards: each point (label, p50, p90, p99 ms, error, err_lo, err_hi,
    on_front) drawn at p90 with a p50-p99 bar and the error's 95% interval, both axes log; the Pareto front is
    joined (circles: on the front; squares: dominated). A zero error is drawn at the floor (1e-4 or below the
    smallest positive figure)."""
    positive = [v for p in points for v in (p[4], p[5], p[6]) if v is not None and v > 0]
    floor = min([1e-4] + [v / 2 for v in positive])
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(6.8, 4.2))
        front = sorted((p for p in points if p[7]), key=lambda p: p[2])
        if front:
            ax.step([p[2] for p in front], [max(p[4], floor) for p in front], where="post", c=COLORS[5], lw=0.8)
        # one errorbar call per marker kind (front / dominated): a bar that is not known is NaN, drawn as nothing
        for on, fmt_, colour in ((True, "o", COLORS[5]), (False, "s", "#555555")):
            mine = [p for p in points if bool(p[7]) == on]
            if not mine:
                continue
            x = [p[2] for p in mine]
            y = [max(p[4], floor) for p in mine]  # a zero error on the log axis' floor (the caption says so)
            xerr = [[max(p[2] - p[1], 0) if None not in (p[1], p[3]) else np.nan for p in mine],
                    [max(p[3] - p[2], 0) if None not in (p[1], p[3]) else np.nan for p in mine]]
            yerr = [[max(v - max(p[5], floor), 0) if None not in (p[5], p[6]) else np.nan for p, v in zip(mine, y)],
                    [max(max(p[6], floor) - v, 0) if None not in (p[5], p[6]) else np.nan for p, v in zip(mine, y)]]
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=fmt_, ms=5, capsize=2, lw=0.8, color=colour)
        for label, _p50, p90, _p99, err, _lo, _hi, _on in points:
            ax.annotate(label, (p90, max(err, floor)), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")  # error rates: 0.001 and 0.003 must not look the same
        xs = [v for p in points for v in (p[1], p[2], p[3]) if v is not None and v > 0]
        lo_x, hi_x = (min(xs), max(xs)) if xs else (1.0, 10.0)
        _fixed_log(ax.xaxis, [m * 10.0 ** k for k in range(-2, 5) for m in (1, 2, 5)
                              if lo_x / 1.5 <= m * 10.0 ** k <= hi_x * 1.5] or [lo_x])
        _fixed_log(ax.yaxis, [d for d in (1e-5,) + _DECADES if d >= floor / 10])
        ax.set_xlabel("p90 latency (ms, log; bar: p50 to p99)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, y=1.0)
        ax.grid(True, which="major", lw=0.3)
        return to_svg(fig)


def trend_lines(title: str, series: Sequence[tuple[str, Sequence[str], Sequence[float], Sequence[int]]],
                ylabel: str) -> str:
    """One line per (board, entry) over runs (x: run date), change points ringed. series: (label, dates as ISO
    strings, values, indices of change points)."""
    from datetime import datetime

    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(7.5, 3.6))
        for i, (label, dates, values, steps) in enumerate(series):
            x = [datetime.fromisoformat(d.replace("Z", "+00:00")) for d in dates]
            colour, dash = SERIES_STYLES[i % len(SERIES_STYLES)]
            ax.plot(x, values, dash, marker="o", ms=2.5, lw=1, color=colour, label=label)
            for j in steps:
                ax.scatter([x[j]], [values[j]], s=80, facecolors="none", edgecolors="#000000", lw=1.5, zorder=3)
        ax.set_ylabel(ylabel)
        ax.set_title(title + " (black rings: change points)")
        ax.grid(True, lw=0.3)
        fig.autofmt_xdate()
        ax.legend(fontsize=6.5, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return to_svg(fig)


_DECADES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _fixed_log(axis, ticks: Sequence[float] = _DECADES) -> None:
    """A log axis with fixed decade ticks and no minor ticks: the automatic log locators build thousands of tick
    artists across small multiples (most of a page's build time); decades are all a DET reader needs."""
    from matplotlib.ticker import FixedLocator, NullLocator

    axis.set_major_locator(FixedLocator(list(ticks)))
    axis.set_minor_locator(NullLocator())
    _plain_log(axis)


def _FACET_RIGHT(cols: int) -> float:  # noqa: N802 - the share of the width the panels use; the legend takes the rest
    return (3.0 * cols) / (3.0 * cols + 1.9)


def _facet_layout(fig: plt.Figure, rows: int, cols: int) -> None:
    """A fixed layout for small multiples (no tight bounding box: see to_svg): room for tick labels on the left,
    the axis labels below, the title above and the legend on the right."""
    height = 2.6 * rows + 0.9
    fig.set_size_inches(3.0 * cols + 1.9, height)
    fig.subplots_adjust(left=0.8 / (3.0 * cols + 1.9), right=_FACET_RIGHT(cols) - 0.01,
                        bottom=0.55 / height, top=1 - 0.5 / height, wspace=0.12, hspace=0.35)


def _facet_grid(n: int, cols: int = 3) -> tuple[int, int]:
    cols = min(cols, max(n, 1))
    return (n + cols - 1) // cols, cols


def det_facets(title: str, panels: Sequence[tuple[str, Sequence[tuple[str, np.ndarray, np.ndarray]]]],
               fmr_floor: float = 1e-4) -> str:
    """DET small multiples, one panel per precision (a handful of lines each, one per group): FNMR against FMR,
    both log (NIST FRVT). panels: (panel title, [(group, fmr, fnmr)]). A group keeps its colour and dash in every
    panel (SERIES_STYLES by group order). A zero rate is drawn on the axis edge."""
    groups = list(dict.fromkeys(g for _, curves in panels for g, *_ in curves))
    style = {g: SERIES_STYLES[i % len(SERIES_STYLES)] for i, g in enumerate(groups)}
    rows, cols = _facet_grid(len(panels))
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols + 1.6, 2.6 * rows), squeeze=False,
                                 sharex=True, sharey=True)
        for ax, (name, curves) in zip(axes.flat, panels):
            for g, fmr, fnmr in curves:
                ok = np.isfinite(fmr) & np.isfinite(fnmr)
                if ok.any():
                    colour, dash = style[g]
                    ax.plot(np.clip(fmr[ok], fmr_floor, None), np.clip(fnmr[ok], fmr_floor, None), dash,
                            color=colour, lw=1.4, label=g, drawstyle="steps-post")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(fmr_floor * 0.8, 1.1)
            ax.set_ylim(fmr_floor * 0.8, 1.1)
            _fixed_log(ax.xaxis)
            _fixed_log(ax.yaxis)
            ax.set_title(name, fontsize=8.5, y=1.0)
            ax.grid(True, which="major", lw=0.3)
        return _finish_facets(fig, axes, len(panels), rows, cols, "FMR (same-group)", "FNMR", title)


def fmr_threshold_facets(title: str, panels: Sequence[tuple[str, Sequence[tuple[str, np.ndarray, np.ndarray]]]],
                         marks: Sequence[tuple[float, str]], fmr_floor: float = 1e-4) -> str:
    """FMR (log) against threshold, one panel per precision, one line per group; vertical lines at `marks`
    (the fp32 threshold, vendor cut-offs). panels: (panel title, [(group, thresholds, fmr)])."""
    groups = list(dict.fromkeys(g for _, curves in panels for g, *_ in curves))
    style = {g: SERIES_STYLES[i % len(SERIES_STYLES)] for i, g in enumerate(groups)}
    rows, cols = _facet_grid(len(panels))
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols + 1.6, 2.5 * rows), squeeze=False,
                                 sharex=True, sharey=True)
        for ax, (name, curves) in zip(axes.flat, panels):
            for g, thr, fmr in curves:
                ok = np.isfinite(fmr) & (fmr > 0)
                if ok.any():
                    colour, dash = style[g]
                    ax.plot(thr[ok], fmr[ok], dash, color=colour, lw=1.4, label=g, drawstyle="steps-post")
            for x, text in marks:
                ax.axvline(x, color="#444", lw=0.8, ls=":")
                ax.annotate(text, (x, 1.0), xycoords=("data", "axes fraction"), rotation=90, fontsize=6,
                            va="top", ha="right")
            ax.set_yscale("log")
            ax.set_ylim(fmr_floor * 0.8, 1.1)
            _fixed_log(ax.yaxis)
            ax.set_title(name, fontsize=8.5, y=1.0)
            ax.grid(True, which="major", lw=0.3)
        return _finish_facets(fig, axes, len(panels), rows, cols, "threshold (cosine)", "FMR", title)


def _finish_facets(fig, axes, n_panels: int, rows: int, cols: int, xlabel: str, ylabel: str, title: str) -> str:
    """Hide the unused panels, label the outer axes, one legend beside the grid, the title; the SVG."""
    for ax in list(axes.flat)[n_panels:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    _facet_layout(fig, rows, cols)
    fig.legend(handles, labels, fontsize=7, frameon=False, loc="upper left",
               bbox_to_anchor=(_FACET_RIGHT(cols) + 0.01, 0.9))
    fig.suptitle(title, fontsize=9.5)
    return to_svg(fig, tight=False)


def level_facets(title: str, panels: Sequence[tuple[str, Sequence[tuple[str, Sequence[float], Sequence[float | None],
                 Sequence[float | None], Sequence[float | None]]]]], xticklabels: Sequence[str], xlabel: str,
                 ylabel: str, log_floor: float | None = None) -> str:
    """A rate against a capture condition's level, one panel per precision, one line per group with its 95%
    interval as error bars (the camera section, harness/report/camera.py). panels: (panel title, [(group, x
    positions, values, ci_lo, ci_hi)]); x positions index `xticklabels` (the unmodified level first, then the
    levels in order of severity). A group keeps its colour and dash in every panel (SERIES_STYLES by group order);
    a missing value leaves a gap. The overall row ("all") is drawn black, solid and thicker. log_floor: an error rate
    on a log axis (the buyer's page) from log_floor to 1, decade ticks; a rate or interval end of 0 is drawn on the
    floor (the Markdown and HTML tables keep the counts)."""
    groups = [g for g in dict.fromkeys(g for _, series in panels for g, *_ in series) if g != "all"]
    styles = [s for s in SERIES_STYLES if s[0] != "#000000"]  # black is the overall row's
    style = {g: styles[i % len(styles)] for i, g in enumerate(groups)} | {"all": ("#000000", "-")}
    rows, cols = _facet_grid(len(panels))
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
        for ax, (name, series) in zip(axes.flat, panels):
            n = max(len(series), 1)
            for i, (g, x, v, lo, hi) in enumerate(series):
                val = np.array([np.nan if a is None else a for a in v], dtype=float)
                lo_ = np.array([np.nan if a is None else a for a in lo], dtype=float)
                hi_ = np.array([np.nan if a is None else a for a in hi], dtype=float)
                if log_floor is not None:
                    val, lo_, hi_ = (np.clip(a, log_floor, None) for a in (val, lo_, hi_))
                err = np.vstack([np.clip(val - lo_, 0, None), np.clip(hi_ - val, 0, None)])
                colour, dash = style[g]
                shift = (i - (n - 1) / 2) * 0.25 / n  # a small dodge: overlapping intervals stay readable
                ax.errorbar(np.asarray(x, float) + shift, val, yerr=np.nan_to_num(err), fmt="o", ls=dash,
                            color=colour, ms=3, lw=2.2 if g == "all" else 1.2, elinewidth=0.7, capsize=2, label=g)
            ax.set_xticks(range(len(xticklabels)), list(xticklabels))
            if log_floor is not None:
                ax.set_yscale("log")
                ax.set_ylim(log_floor * 0.8, 1.1)
                _fixed_log(ax.yaxis, [t for t in _DECADES if t >= log_floor])
            ax.set_title(name, fontsize=8.5)
            ax.grid(True, which="major", lw=0.3)
        return _finish_facets(fig, axes, len(panels), rows, cols, xlabel, ylabel, title)
