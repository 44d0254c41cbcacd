"""Plots small enough for Dagster to draw on the asset page itself, without a click.

Dagster's asset page renders a markdown metadata value inline only under 1,000 characters (longer
ones hide behind "[Show Markdown]"), and its markdown keeps ``data:`` image sources. So each plot
is a tiny SVG (integer coordinates on a 200 x 80 canvas, one ``polyline`` or ``path`` per
series) in a data URL; the series are thinned until the whole value fits. Pure
string building: no matplotlib, a few hundred microseconds per plot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from dagster import MetadataValue

#: Dagster draws markdown inline below 1,000 characters.
INLINE_LIMIT = 999
#: One colour per series position (matplotlib's tab10 in 3-digit hex), the last for "other"/"idle".
COLORS = ["27b", "f80", "3a3", "d33", "96b", "865", "e7c", "1bc", "bb2"]
GREY = "999"
LIGHT = "ccc"  # idle cash
W, H, TOP, BOTTOM = 200, 80, 9, 62  # canvas, plot area between TOP and BOTTOM
POINTS = (48, 36, 24, 16, 12, 8, 6, 4)


def _esc(text: str, limit: int = 40) -> str:
    return text.replace("&", "and").replace("<", "").replace(">", "")[:limit]


def _text(x: float, y: float, s: str, color: str = "", anchor: str = "", limit: int = 40) -> str:
    a = (f" text-anchor='{anchor}'" if anchor else "") + (f" fill='#{color}'" if color else "")
    return f"<text x='{x:.0f}' y='{y:.0f}'{a}>{_esc(s, limit)}</text>"


def _title(s: str) -> str:
    return _text(1, 6, s, limit=64)


def _svg(body: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {W} {H}' width='{W * 2}' "
        f"style='font:6px sans-serif'>{body}</svg>"
    )


def to_markdown(svg: str, alt: str) -> str:
    """The SVG as a markdown image whose data URL is a CommonMark ``<...>`` destination: spaces stay
    as they are, angle brackets are backslash-escaped, ``%`` and ``#`` percent-encoded."""
    enc = svg.replace("%", "%25").replace("#", "%23").replace("<", "\\<").replace(">", "\\>")
    return f"![{_esc(alt)}](<data:image/svg+xml,{enc}>)"


def fit(render: Callable[[int], str], alt: str, min_points: int = 0) -> MetadataValue | None:
    """The first rendering (``render(n_points)``, from the finest, at least ``min_points``) whose
    markdown fits inline."""
    for n in (n for n in POINTS if n >= min_points):
        md = to_markdown(render(n), alt)
        if len(md) <= INLINE_LIMIT:
            return MetadataValue.md(md)
    return None


def _thin(values: np.ndarray, n: int) -> np.ndarray:
    """``n`` evenly spaced samples (first and last kept)."""
    if len(values) <= n:
        return values
    return values[np.linspace(0, len(values) - 1, n).round().astype(int)]


def _scale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = hi - lo if hi > lo else 1.0
    return BOTTOM - (values - lo) / span * (BOTTOM - TOP)


def _points(xs: np.ndarray, ys: np.ndarray) -> str:
    ok = np.isfinite(ys)
    return ",".join(f"{x:.0f},{y:.0f}" for x, y in zip(xs[ok], ys[ok], strict=True))


def lines(
    series: Mapping[str, Sequence[float]],
    title: str,
    fmt: Callable[[float], str],
    x_labels: tuple[str, str] = ("", ""),
) -> MetadataValue | None:
    """One line per series over a shared x (days), y from the smallest to the largest value (labelled
    with ``fmt``), legend under the plot, first and last x label below the axis."""
    names = list(series)
    data = {k: np.asarray(v, dtype=float) for k, v in series.items()}
    finite = np.concatenate([v[np.isfinite(v)] for v in data.values()] or [np.array([])])
    if not len(finite):
        return None
    lo, hi = float(finite.min()), float(finite.max())

    def render(n: int, names: list[str]) -> str:
        body = [
            _title(title),
            _text(W - 1, TOP + 2, fmt(hi), anchor="end"),
            _text(W - 1, BOTTOM, fmt(lo), anchor="end"),
            "<g fill='none'>",
        ]
        for i, name in enumerate(names):
            ys = _thin(data[name], n)
            xs = np.linspace(0, W - 30, len(ys))
            body.append(
                f"<polyline stroke='#{COLORS[i % len(COLORS)]}' points='{_points(xs, _scale(ys, lo, hi))}'/>"
            )
        body.append("</g>")
        body += [_text(1, BOTTOM + 7, x_labels[0]), _text(W - 30, BOTTOM + 7, x_labels[1], anchor="end")]
        x = 1
        for i, name in enumerate(names):
            body.append(_text(x, H - 2, name, COLORS[i % len(COLORS)]))
            x += 8 + 3.4 * len(_esc(name))
        return _svg("".join(body))

    for least in (16, 0):  # a readable line (16+ points) over more series; then whatever fits
        for k in range(len(names), 0, -1):  # the first series matter most: drop the last ones
            plot = fit(lambda n, k=k: render(n, names[:k]), title, least)
            if plot is not None:
                return plot
    return None


def stacked(
    shares: Mapping[str, Sequence[float]], title: str, x_labels: tuple[str, str] = ("", "")
) -> MetadataValue | None:
    """Stacked areas of shares (0..1, e.g. weights per pool per day; the last series is usually
    "idle"), the legend under the plot."""
    names = list(shares)
    data = np.vstack([np.nan_to_num(np.asarray(v, dtype=float)) for v in shares.values()]) if names else None
    if data is None or not data.size:
        return None

    def render(n: int) -> str:
        cols = _thin(np.arange(data.shape[1]), n)
        cum = np.cumsum(data[:, cols], axis=0)
        xs = np.linspace(0, W - 30, len(cols))
        body = [
            _title(title),
            _text(W - 1, TOP + 2, "100%", anchor="end"),
            _text(W - 1, BOTTOM, "0%", anchor="end"),
        ]
        for i in range(len(names) - 1, -1, -1):  # the tallest first, each lower layer drawn over it
            color = LIGHT if names[i] == "idle" else GREY if names[i] == "other" else COLORS[i % len(COLORS)]
            top = _points(xs, _scale(cum[i], 0.0, 1.0))
            body.append(f"<path fill='#{color}' d='M{top}V{BOTTOM}H0'/>")
        body += [_text(1, BOTTOM + 7, x_labels[0]), _text(W - 30, BOTTOM + 7, x_labels[1], anchor="end")]
        x = 1
        for i, name in enumerate(names):
            color = LIGHT if name == "idle" else GREY if name == "other" else COLORS[i % len(COLORS)]
            body.append(_text(x, H - 2, name, color))
            x += 8 + 3.4 * len(_esc(name))
        return _svg("".join(body))

    return fit(render, title)


def bars(
    values: Mapping[str, float], title: str, fmt: Callable[[float], str], limit: int = 8
) -> MetadataValue | None:
    """Horizontal bars (one per label, positive right of the zero line, negative left), the largest
    ``limit`` by magnitude; each bar's value written beside it."""
    items = sorted(values.items(), key=lambda kv: -abs(kv[1]))
    if not items:
        return None

    def render(n: int) -> str:
        shown = items[: min(limit, max(2, n // 6))]
        span = max(abs(v) for _, v in shown) or 1.0
        has_neg = any(v < 0 for _, v in shown)
        zero = 130 if has_neg else 90
        scale = (W - zero - 28) / span if not has_neg else 40 / span
        step = (H - TOP - 2) / len(shown)
        body = [_title(title), f"<line x1='{zero}' x2='{zero}' y1='{TOP}' y2='{H - 2}' stroke='#{GREY}'/>"]
        for i, (label, v) in enumerate(shown):
            y = TOP + i * step
            w = abs(v) * scale
            x = zero - w if v < 0 else zero
            color = COLORS[3] if v < 0 else COLORS[0]
            body.append(
                f"<rect x='{x:.0f}' y='{y:.0f}' width='{max(w, 0.5):.1f}' height='{step * 0.7:.0f}' "
                f"fill='#{color}'/>"
            )
            body.append(_text(1, y + step * 0.6, label[:24]))
            body.append(_text(zero + (w if v >= 0 else 0) + 2, y + step * 0.6, fmt(v)))
        return _svg("".join(body))

    return fit(render, title)


def ranges(
    quantiles: Mapping[str, Sequence[float]], title: str, fmt: Callable[[float], str]
) -> MetadataValue | None:
    """One row per variable: a line from its 5th to its 95th percentile, a box from the 25th to the
    75th and a tick at the median (``quantiles[name] = (p5, p25, p50, p75, p95)``), on a shared axis."""
    items = [(k, np.asarray(v, dtype=float)) for k, v in quantiles.items() if np.isfinite(v).all()]
    if not items:
        return None
    lo = min(float(q[0]) for _, q in items)
    hi = max(float(q[4]) for _, q in items)
    span = hi - lo if hi > lo else 1.0
    left, right = 80, W - 4

    def x_of(v: float) -> float:
        return left + (v - lo) / span * (right - left)

    def render(n: int) -> str:
        shown = items[: max(2, n // 3)]
        step = (H - TOP - 9) / len(shown)
        whiskers, boxes, medians, labels = [], [], [], []
        for i, (name, q) in enumerate(shown):
            y = TOP + i * step + step / 2
            whiskers.append(f"M{x_of(q[0]):.0f},{y:.0f}H{x_of(q[4]):.0f}")
            boxes.append(f"M{x_of(q[1]):.0f},{y:.0f}H{max(x_of(q[3]), x_of(q[1]) + 1):.0f}")
            medians.append(f"M{x_of(q[2]):.0f},{y - 3:.0f}v6")
            labels.append(_text(1, y + 2, name[:24]))
        body = [
            _title(title),
            _text(left, H - 1, fmt(lo)),
            _text(right, H - 1, fmt(hi), anchor="end"),
            f"<path stroke='#{GREY}' d='{''.join(whiskers)}'/>",
            f"<path stroke='#{COLORS[0]}' stroke-width='{min(4, step * 0.6):.0f}' d='{''.join(boxes)}'/>",
            f"<path stroke='#{COLORS[3]}' d='{''.join(medians)}'/>",
            *labels,
        ]
        return _svg("".join(body))

    return fit(render, title)
