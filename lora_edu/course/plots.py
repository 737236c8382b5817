"""Small plotting helpers shared by the notebooks (matplotlib)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["COLLECTIVES", "collective_states", "draw_collectives", "plot_nf4_levels", "plot_spectrum", "show_matrices"]


def show_matrices(matrices: dict[str, np.ndarray], annotate: bool = True, cmap: str = "viridis"):
    """Heat maps of a few small matrices side by side, with their values written in the cells."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(2.6 * len(matrices), 2.8), squeeze=False)
    for ax, (title, m) in zip(axes[0], matrices.items(), strict=True):
        m = np.atleast_2d(np.asarray(m, dtype=float))
        image = ax.imshow(m, cmap=cmap)
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
