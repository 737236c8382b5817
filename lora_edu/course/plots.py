"""Small plotting helpers shared by the notebooks (matplotlib)."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["COLLECTIVES", "collective_states", "draw_collectives", "draw_fair_comparison", "draw_outputs_in_span",
           "draw_reads_writes", "plot_latency_trend", "plot_learning_curves", "plot_nf4_levels", "plot_serving", "plot_spectrum",
           "show_matrices", "slide_mode", "view_along"]

SLIDE_KEYS = ("figure.dpi", "lines.linewidth", "lines.markersize", "axes.linewidth")
_before_slides: dict[str, object] = {}


def slide_mode(on: bool = True, scale: float = 1.5) -> None:
    """For a projector: every figure drawn after this call is ``scale`` times larger on screen, text included (the
    figure's dots per inch), with lines and markers a little heavier. ``slide_mode(False)`` puts the settings back."""
    if not isinstance(on, bool):
        raise TypeError(f"slide_mode() takes True or False, got {on!r}.")
    if not on:
        mpl.rcParams.update(_before_slides)
        _before_slides.clear()
        return
    if not 1 <= scale <= 4:
        raise ValueError(f"scale must be between 1 and 4 (1.5 suits most projectors), got {scale!r}.")
    if not _before_slides:
        _before_slides.update({k: mpl.rcParams[k] for k in SLIDE_KEYS})
    base = _before_slides
    mpl.rcParams.update({"figure.dpi": base["figure.dpi"] * scale, "lines.linewidth": base["lines.linewidth"] * 1.5,
                         "lines.markersize": base["lines.markersize"] * 1.3, "axes.linewidth": base["axes.linewidth"] * 1.5})


def show_matrices(matrices: dict[str, np.ndarray], annotate: bool = True, cmap: str = "viridis", same_scale: bool = False):
    """Heat maps of a few small matrices side by side, with their values written in the cells. ``same_scale``: one
    colour scale for all of them (the same value, the same colour), instead of one per matrix."""
    arrays = {title: np.atleast_2d(np.asarray(m, dtype=float)) for title, m in matrices.items()}
    low, high = (min(m.min() for m in arrays.values()), max(m.max() for m in arrays.values())) if same_scale else (None, None)
    fig, axes = plt.subplots(1, len(arrays), figsize=(2.6 * len(arrays), 2.8), squeeze=False)
    for ax, (title, m) in zip(axes[0], arrays.items(), strict=True):
        image = ax.imshow(m, cmap=cmap, vmin=low, vmax=high)
        ax.set_title(f"{title}  {m.shape[0]}x{m.shape[1]}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if annotate and m.size <= 64:
            for (i, j), v in np.ndenumerate(m):
                red, green, blue, _ = image.cmap(image.norm(v))  # the cell's colour: light text on dark cells
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                ax.text(j, i, f"{v:g}", ha="center", va="center", color="white" if dark else "black", fontsize=9)
    fig.tight_layout()
    return fig


def draw_reads_writes(ax, d_in: int, r: int, d_out: int) -> None:
    """The path x -> A x -> B (A x) as three columns of nodes: A (r x d_in) reads, B (d_out x r) writes."""
    layers = [(d_in, f"x: {d_in} numbers"), (r, f"A x: r = {r}"), (d_out, f"B (A x): {d_out} numbers")]
    ys = [np.linspace(-1, 1, n) if n > 1 else np.zeros(1) for n, _ in layers]
    for col, (left, right) in enumerate(zip(ys[:-1], ys[1:], strict=True)):
        for ya in left:
            for yb in right:
                ax.plot([col, col + 1], [ya, yb], color="C0" if col == 0 else "C2", lw=0.8, alpha=0.6)
    for col, ((n, label), y) in enumerate(zip(layers, ys, strict=True)):
        ax.scatter(np.full(n, col), y, s=160, color="white", edgecolor="black", zorder=3)
        ax.text(col, -1.35, label, ha="center", fontsize=9)
    ax.text(0.5, 1.15, "A reads", ha="center", color="C0", fontsize=11)
    ax.text(1.5, 1.15, "B writes", ha="center", color="C2", fontsize=11)
    ax.set_xlim(-0.4, 2.4)
    ax.set_ylim(-1.5, 1.35)
    ax.axis("off")


def view_along(direction: np.ndarray) -> tuple[float, float]:
    """(elevation, azimuth) in degrees of a 3-D camera that looks along ``direction`` (3,)."""
    x, y, z = np.asarray(direction, dtype=float)
    return float(np.degrees(np.arctan2(z, np.hypot(x, y)))), float(np.degrees(np.arctan2(y, x)))


def draw_outputs_in_span(ax3, B: np.ndarray, outputs: np.ndarray, view: tuple[float, float], title: str,
                         name_columns: bool = True) -> None:
    """3-D points ``outputs`` (3, n) with the plane spanned by the two columns of ``B`` (3, 2), seen from ``view``
    = (elevation, azimuth); ``name_columns`` writes "column j of B" at the tip of each column's arrow."""
    ax3.scatter(*outputs, s=4, color="C1", depthshade=False, label=f"ΔW x for {outputs.shape[1]} random x")
    reach = np.abs(np.linalg.lstsq(B, outputs, rcond=None)[0]).max(axis=1)  # how far along each column the points go
    s_, t_ = np.meshgrid(np.linspace(-1, 1, 2), np.linspace(-1, 1, 2))
    plane = B[:, :1, None] * (reach[0] * s_) + B[:, 1:, None] * (reach[1] * t_)
    ax3.plot_surface(*plane, alpha=0.2, color="C2")  # all combinations of B's two columns
    for j in range(B.shape[1]):
        tip = 7 * B[:, j] / np.linalg.norm(B[:, j])
        ax3.quiver(0, 0, 0, *tip, color="black", lw=2, arrow_length_ratio=0.15)
        if name_columns:
            ax3.text(*(1.1 * tip), f"column {j + 1} of B", color="black", fontsize=9)
    reach_all = 1.15 * max(np.abs(outputs).max(), 7.0)  # one scale on every axis, so directions look as they are
    for set_lim in (ax3.set_xlim, ax3.set_ylim, ax3.set_zlim):
        set_lim(-reach_all, reach_all)
    ax3.set_box_aspect((1, 1, 1))
    ax3.set_proj_type("ortho")  # no perspective: a plane seen along itself is a line
    ax3.view_init(elev=view[0], azim=view[1])
    for axis in (ax3.xaxis, ax3.yaxis, ax3.zaxis):
        axis.set_ticklabels([])
    ax3.set_xlabel("output 1")
    ax3.set_ylabel("output 2")
    ax3.set_zlabel("output 3")
    ax3.set_title(title, fontsize=10)


def plot_spectrum(s: np.ndarray, title: str = "singular values", ax=None, mark: int | None = None):
    """Singular values on a log scale (zeros drawn at the bottom), with an optional vertical mark at rank ``mark``."""
    ax = ax or plt.subplots(figsize=(5, 3))[1]
    s = np.asarray(s, dtype=float)
    floor = s[s > 0].min() * 1e-3 if np.any(s > 0) else 1e-12
    ax.semilogy(np.arange(1, len(s) + 1), np.maximum(s, floor), ".-")
    if mark is not None:
        ax.axvline(mark + 0.5, color="gray", ls="--", lw=1)
    ax.set_xlabel("index i")
    ax.set_ylabel("s_i")
    ax.set_title(title)
    return ax


COLLECTIVES = ("all-reduce", "reduce-scatter", "all-gather")


def collective_states(name: str, n: int) -> tuple[list[list[str]], list[list[str]]]:
    """Before and after one collective on ``n`` processes, each holding a buffer cut into ``n`` chunks.

    ``states[p][c]`` labels chunk c on process p: "g2" is process 2's own chunk, "Σ" the sum over processes, "" nothing.
    """
    if name not in COLLECTIVES:
        raise ValueError(f"Unknown collective {name!r}; choose from {COLLECTIVES}.")
    own = [[f"g{p + 1}" for _ in range(n)] for p in range(n)]
    summed = [["Σ"] * n for _ in range(n)]
    scattered = [["Σ" if c == p else "" for c in range(n)] for p in range(n)]
    return {"all-reduce": (own, summed), "reduce-scatter": (own, scattered), "all-gather": (scattered, summed)}[name]


def draw_collectives(n: int = 4):
    """The three collectives of data parallelism, before and after, for ``n`` processes (rows) and ``n`` chunks
    of a buffer (columns): what each process holds."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 2.9))
    colors = {f"g{p + 1}": plt.cm.Pastel1(p) for p in range(n)} | {"Σ": "#9ecae1", "": "white"}
    for ax, name in zip(axes, COLLECTIVES, strict=True):
        for offset, state in zip((0, n + 2), collective_states(name, n), strict=True):
            for p, row in enumerate(state):
                for c, label in enumerate(row):
                    ax.add_patch(plt.Rectangle((offset + c, n - 1 - p), 0.95, 0.9, fc=colors[label], ec="gray", lw=0.6))
                    ax.text(offset + c + 0.47, n - 0.55 - p, label, ha="center", va="center", fontsize=8)
        ax.annotate("", xy=(n + 1.8, n / 2), xytext=(n + 0.2, n / 2), arrowprops={"arrowstyle": "->", "lw": 1.5})
        for p in range(n):
            ax.text(-0.2, n - 0.55 - p, f"process {p + 1}", ha="right", va="center", fontsize=8)
        ax.set_xlim(-2.4, 2 * n + 2.2)
        ax.set_ylim(-0.4, n + 0.3)
        ax.set_title(f"{name}: before → after", fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_nf4_levels(w: np.ndarray, levels: np.ndarray, block_size: int = 64):
    """Where NF4's 16 ``levels`` sit among a weight's values: every block of ``block_size`` weights divided by its
    largest |weight| (so each block spans [-1, 1]), as a histogram, with a line at each level."""
    blocks = np.asarray(w, dtype=float).reshape(-1, block_size)
    scaled = (blocks / np.abs(blocks).max(axis=1, keepdims=True)).ravel()
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.hist(scaled, bins=80, range=(-1, 1), color="tab:blue", alpha=0.6)
    for level in levels:
        ax.axvline(level, color="tab:red", lw=1)
    ax.set_xlabel("weight / its block's largest |weight|")
    ax.set_ylabel("weights")
    ax.set_title(f"NF4's {len(levels)} levels (red) among the weights they round", fontsize=10)
    fig.tight_layout()
    return fig


def plot_learning_curves(curves: dict[str, dict[int, list[float]]], target: float | None = None, ax=None,
                         ylabel: str = "validation answer loss"):
    """Loss against training step, one colour per arm: each seed a thin line, the mean over seeds a thick one.
    ``curves``: arm -> {step: one value per seed}; ``target``: a level to mark with a dashed line."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    for (label, by_step), colour in zip(curves.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False):
        steps = sorted(by_step)
        values = np.array([by_step[s] for s in steps])  # (steps, seeds)
        ax.plot(steps, values, color=colour, alpha=0.2, linewidth=0.8)
        ax.plot(steps, values.mean(axis=1), color=colour, linewidth=2.2, marker="o", markersize=3,
                label=f"{label} (mean of {values.shape[1]} seeds)")
    if target is not None:
        ax.axhline(target, color="gray", linestyle="--", linewidth=1, label=f"target {target:.3f}")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(mpl.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    ax.legend(fontsize=8)
    return ax


def plot_serving(table: dict, ax=None):
    """Requests per second against the number of distinct adapters in the batch, one line per strategy: the median
    round, with bars to the lowest and highest.  ``table``: distinct adapters -> strategy -> ``Throughput``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.2))
    mixes = list(table)
    for strategy in next(iter(table.values())):
        med = np.array([table[n][strategy].median for n in mixes])
        low, high = (np.array([getattr(table[n][strategy], end) for n in mixes]) for end in ("low", "high"))
        ax.errorbar(mixes, med, yerr=[med - low, high - med], fmt="o-", capsize=3, label=strategy)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("distinct adapters in a batch of 32")
    ax.set_ylabel("requests / s (median, range)")
    ax.legend()
    ax.figure.tight_layout()
    return ax


def plot_latency_trend(ours: dict[int, tuple[float, float, float]], paper: dict[int, float], ax=None, ours_label: str = "ours"):
    """The share adapter layers add to a forward pass against the tokens the pass holds, on a log axis: ``ours``
    (tokens -> the middle round's share, and the lowest and highest round's, drawn as a bar) beside ``paper``
    (tokens -> the paper's share, Table 1's AdapterH). Shares are fractions (0.3: 30% slower)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.4))
    tokens = sorted(ours)
    middle = np.array([ours[n][0] for n in tokens])
    low, high = middle - np.array([ours[n][1] for n in tokens]), np.array([ours[n][2] for n in tokens]) - middle
    ax.errorbar(tokens, 100 * middle, yerr=100 * np.vstack([low, high]), fmt="o-", color="tab:blue", capsize=4,
                label=f"{ours_label} (bars: the range of the rounds)")
    ax.plot(sorted(paper), [100 * paper[n] for n in sorted(paper)], "s--", color="tab:gray", label="the paper, AdapterH (Table 1)")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("tokens in one forward pass (batch x length, log scale)")
    ax.set_ylabel("time adapters add (%)")
    ax.legend(fontsize=8)
    return ax


def draw_fair_comparison(sweep_seeds: int, more_seeds: int, val_animals: int, test_animals: int, steps: int):
    """Notebook 05b's design as a flow: every rate of each method's grid trains on the sweep seeds, validation chooses
    the rate, more seeds run there, and the test animals score each kept checkpoint once. Returns the figure."""
    stages = [f"each method's grid\nof 3 or 4 rates\nx {sweep_seeds} sweep seeds\n({steps} steps each)",
              f"validation\n({val_animals} animals):\nbest mean exact match\n(a tie: lower answer loss)",
              f"the chosen rate\n+ {more_seeds} more seeds",
              f"test\n({test_animals} animals):\nscored once,\nchooses nothing"]
    colours = ["#deebf7", "#fee6ce", "#deebf7", "#e5f5e0"]
    fig, ax = plt.subplots(figsize=(11, 2.3))
    width, gap = 2.2, 0.8
    for i, (text, colour) in enumerate(zip(stages, colours, strict=True)):
        x = i * (width + gap)
        ax.add_patch(mpl.patches.FancyBboxPatch((x, 0), width, 1.6, boxstyle="round,pad=0.05", fc=colour, ec="gray"))
        ax.text(x + width / 2, 0.8, text, ha="center", va="center", fontsize=9)
        if i:
            ax.annotate("", xy=(x - 0.05, 0.8), xytext=(x - gap + 0.05, 0.8), arrowprops={"arrowstyle": "->", "lw": 1.5})
    ax.set_xlim(-0.2, len(stages) * (width + gap) - gap + 0.2)
    ax.set_ylim(-0.2, 1.8)
    ax.axis("off")
    return fig


def plot_intruder_null(runs: dict[str, tuple[list[int], list[float]]], ax=None):
    """Each run's own intruder count beside the null's, seed by seed: one row per run (label -> (own counts, the null's
    mean counts), one of each per seed), the own count a filled dot, the null's an open one, joined by a line. A dot
    left of its circle: fewer intruders than random directions with the same singular values give."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.6 + 0.7 * len(runs)))
    for row, (own, null) in enumerate(runs.values()):
        offsets = np.linspace(-0.2, 0.2, len(own)) if len(own) > 1 else np.zeros(1)
        for dy, mine, chance in zip(offsets, own, null, strict=True):
            ax.plot([mine, chance], [row + dy, row + dy], color="lightgray", lw=1, zorder=1)
        ax.scatter(own, row + offsets, color="tab:blue", s=22, zorder=2, label="its own update" if row == 0 else None)
        ax.scatter(null, row + offsets, facecolors="none", edgecolors="black", s=22, zorder=2,
                   label="random directions, same singular values" if row == 0 else None)
    ax.set_yticks(range(len(runs)))
    ax.set_yticklabels(list(runs))
    ax.invert_yaxis()  # the first run on top
    ax.set_xlabel("intruders among the top 10 of every Wq and Wv, summed (one dot per seed)")
    ax.legend(fontsize=7, loc="lower right")
    ax.figure.tight_layout()
    return ax


VERDICT_FILLS = {"agrees": "#a1d99b", "disagrees": "#fc9272", "partly": "#fdd0a2", "not resolved": "#d9d9d9",
                 "descriptive": "#f7f7f7"}  # green: the paper's side; red: the other; grey: undecided


def plot_verdicts(claims: list[str], columns: dict[str, list[str]], ax=None):
    """A lesson's verdicts at a glance: one row per claim (``claims``, short labels), one column per comparison
    (``columns``: heading -> one entry per claim, as ``findings_table`` takes them). Each cell shows the verdict words of
    its entry in the order they appear, filled by the first (``VERDICT_FILLS``, paler than the finding bars'
    ``notebook.VERDICT_COLOURS``); an entry without one stays blank."""
    from .notebook import word_spans

    if any(len(entries) != len(claims) for entries in columns.values()):
        raise ValueError(f"Each of columns {list(columns)} needs one entry per claim ({len(claims)} claims).")
    if ax is None:
        _, ax = plt.subplots(figsize=(2.2 + 2.3 * len(columns), 0.5 + 0.55 * len(claims)))
    for col, entries in enumerate(columns.values()):
        for row, entry in enumerate(entries):
            words = [w for w, _ in word_spans(entry)]
            colour = VERDICT_FILLS[words[0]] if words else "white"
            ax.add_patch(mpl.patches.Rectangle((col, row), 0.96, 0.9, facecolor=colour, edgecolor="gray"))
            ax.text(col + 0.48, row + 0.45, " / ".join(words), ha="center", va="center", fontsize=8)
    ax.set_xlim(0, len(columns))
    ax.set_ylim(len(claims), 0)  # the first claim on top
    ax.set_xticks([c + 0.48 for c in range(len(columns))], list(columns), fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([r + 0.45 for r in range(len(claims))], claims, fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.figure.tight_layout()
    return ax
