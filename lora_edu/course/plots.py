"""Small plotting helpers shared by the notebooks (matplotlib)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["show_matrices", "plot_spectrum"]


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
