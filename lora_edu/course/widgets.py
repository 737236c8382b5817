"""Widgets for the lessons: a rank slider over an SVD, a LoRA budget calculator, the first update's size against r
and α, and an explorer of a stored LoRA sweep.

The widgets only wire controls to plain functions (``RankSlider.render``, ``calculator_table``,
``first_update_html``, ``sweep_point_html``); the unit tests call those functions directly, and a browser test
drives the real widgets.  No callback trains or fine-tunes anything: each redraws from numbers computed once.
"""

from __future__ import annotations

import base64
import io
import time
from typing import Any, NamedTuple

import numpy as np

from ..checks import is_int
from ..maths.arch import ARCHITECTURES, DTYPE_BYTES, TRAINING_PRECISIONS, format_bytes, lora_parameter_count, training_memory
from ..maths.linalg import SVDReconstructor

__all__ = [
    "FirstUpdateSizes",
    "calculator_table",
    "first_update_explorer",
    "first_update_html",
    "first_update_png",
    "first_update_sizes",
    "sweep_explorer",
    "sweep_point_html",
    "sweep_png",
    "fit_history_explorer",
    "fit_step_html",
    "lora_calculator",
    "product_rank_explorer",
    "product_rank_report",
    "rank_caption",
    "residual_image",
    "sample_photo",
    "spectrum_image",
    "spectrum_png",
    "SpectrumPlot",
    "static_picture",
    "RankSlider",
    "to_png",
]


def sample_photo(size: int = 512) -> np.ndarray:
    """The grey ``size`` x ``size`` crop of the photograph matplotlib ships (Grace Hopper), values in [0, 1]."""
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        grey = np.asarray(im.convert("L"), dtype=float) / 255.0
    top = (grey.shape[0] - size) // 2
    if top < 0 or grey.shape[1] < size:
        raise ValueError(f"The sample photo is {grey.shape}; it has no {size} x {size} crop.")
    return grey[top : top + size, :size]


def to_png(image: np.ndarray) -> bytes:
    """A grey image with values in [0, 1] (rows, cols) as PNG bytes (values are clipped)."""
    from PIL import Image

    pixels = (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def rank_caption(svd: SVDReconstructor, k: int) -> str:
    """The line under the slider: rank, Frobenius error of the residual (absolute and relative) and storage."""
    rows, cols = svd.shape
    return (
        f"rank {k}: residual ||M - M_k||_F = {svd.error(k):.4f} ({100 * svd.relative_error(k):.2f}% of ||M||_F) | "
        f"stores {svd.storage(k):,} numbers = {100 * svd.storage(k) / (rows * cols):.1f}% of {rows * cols:,}"
    )


def residual_image(svd: SVDReconstructor, k: int, image: np.ndarray) -> np.ndarray:
    """What rank k leaves out, M - M_k, shown around mid-grey (0.5 = nothing missing): (rows, cols) in [0, 1]."""
    return 0.5 + (image - svd.reconstruct(k))


def spectrum_image(s: np.ndarray, k: int, width: int = 384, height: int = 120) -> np.ndarray:
    """The singular values on a log scale as a grey picture, those kept (1..k) dark, the dropped ones light, and a
    line after the k-th: (height, width) in [0, 1].  Drawn with NumPy, fast enough for every slider move."""
    s = np.asarray(s, dtype=float)
    logs = np.log10(np.maximum(s, s.max(initial=1.0) * 1e-6))
    lo, hi = logs.min(), logs.max()
    heights = np.zeros_like(logs) if hi == lo else (logs - lo) / (hi - lo)
    columns = np.minimum((np.arange(width) * len(s)) // width, len(s) - 1)  # singular value shown in each column
    bar_top = ((1 - heights[columns]) * (height - 1)).astype(int)
    picture = np.ones((height, width))
    rows = np.arange(height)[:, None]
    inside = rows >= bar_top[None, :]
    kept = (columns < k)[None, :]
    picture[inside & kept] = 0.15
    picture[inside & ~kept] = 0.7
    edge = min(width - 1, (k * width) // len(s))
    picture[:, max(0, edge - 1) : edge + 1] = 0.0
    return picture


class SpectrumPlot:
    """The singular values with axes (index i, s_i on a log scale), kept ones dark, dropped ones light, k marked.

    The figure is built once; ``png(k)`` only moves the split, so a slider can redraw it on every move.
    """

    def __init__(self, s: np.ndarray, width_px: int = 768, height_px: int = 170) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.s = np.maximum(np.asarray(s, dtype=float), max(float(np.max(s, initial=1.0)) * 1e-6, np.finfo(float).tiny))
        self.i = np.arange(1, len(self.s) + 1)
        dpi = 100
        self.fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
        FigureCanvasAgg(self.fig)
        ax = self.fig.add_axes((0.09, 0.27, 0.89, 0.68))
        (self.kept,) = ax.semilogy(self.i, self.s, color="0.15", lw=1.5)
        (self.dropped,) = ax.semilogy(self.i, self.s, color="0.7", lw=1.5)
        self.line = ax.axvline(1.5, color="C3", lw=1)
        ax.set_xlim(0.5, len(self.s) + 0.5)
        ax.set_ylim(self.s.min() / 1.5, self.s.max() * 1.5)
        ax.set_xlabel("index i", fontsize=8, labelpad=1)
        ax.set_ylabel("s_i (log)", fontsize=8)
        ax.tick_params(labelsize=7)
        self.label = ax.text(1.5, self.s.max() * 1.4, "", color="C3", fontsize=8, va="top")

    def png(self, k: int) -> bytes:
        self.kept.set_data(self.i[:k], self.s[:k])
        self.dropped.set_data(self.i[k - 1 :], self.s[k - 1 :])
        self.line.set_xdata([k + 0.5, k + 0.5])
        self.label.set_x(k + 0.5)
        self.label.set_text(f" k = {k}")
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=self.fig.dpi)
        return buf.getvalue()


def spectrum_png(s: np.ndarray, k: int, width_px: int = 768, height_px: int = 170) -> bytes:
    """``SpectrumPlot(s).png(k)``: the spectrum with axes as a PNG."""
    return SpectrumPlot(s, width_px, height_px).png(k)


def static_picture(html: str | None = None, png: bytes | None = None) -> None:
    """In a notebook, show a widget's first state as a plain picture (kept in the saved notebook, shown on GitHub and
    before the widgets load); the live controls come right after it.  Outside a notebook, do nothing."""
    from .quiz import in_notebook

    if not in_notebook():
        return
    import base64

    from IPython.display import display

    note = "<div style='color:#666;font-size:85%'>Starting state, as a picture; the live controls follow.</div>"
    body = html if html is not None else f"<img src='data:image/png;base64,{base64.b64encode(png or b'').decode()}'/>"
    bundle = {"text/html": note + body, "text/plain": "(a picture of the widget's starting state)"}
    if png is not None:
        bundle["image/png"] = base64.b64encode(png).decode()
    display(bundle, raw=True)


class RankSlider:
    """A rank slider over the SVD of an image: factorise once, reconstruct on every move.

    ``image``: (rows, cols) with values in [0, 1]; ``k`` in [1, min(rows, cols)].  ``render(k)`` returns the
    reconstruction's PNG and the caption; the widget also shows the residual M - M_k and the spectrum with k marked.
    """

    def __init__(self, image: np.ndarray, k: int = 10, width: int = 384, k_max: int | None = None) -> None:
        import ipywidgets as W

        self.image_array = np.asarray(image, dtype=np.float64)
        self.svd = SVDReconstructor(self.image_array)
        self.latencies_ms: list[float] = []
        self.width = width
        k = self.check_k(k)
        self.k_max = self.svd.max_rank if k_max is None else self.check_k(k_max)
        if k > self.k_max:
            raise ValueError(f"k = {k} is above the slider's k_max = {self.k_max}.")
        self.slider = W.IntSlider(value=k, min=1, max=self.k_max, description="rank k", continuous_update=True,
                                  layout=W.Layout(width="500px"))
        png, caption = self.render(k)
        self.image = W.Image(value=png, format="png", width=width)
        self.residual = W.Image(value=to_png(residual_image(self.svd, k, self.image_array)), format="png", width=width)
        self.spectrum_plot = SpectrumPlot(self.svd.s, width_px=2 * width)
        self.spectrum = W.Image(value=self.spectrum_plot.png(k), format="png", width=2 * width)
        self.caption = W.HTML(value=caption)
        for widget, name in ((self.slider, "rank-slider"), (self.image, "rank-image"), (self.residual, "rank-residual"),
                             (self.spectrum, "rank-spectrum"), (self.caption, "rank-caption")):
            widget.add_class(name)
        self.slider.observe(self.on_change, names="value")
        titles = W.HBox([W.HTML(f"<div style='width:{width}px'>M_k (rank k)</div>"), W.HTML("residual M - M_k (grey = 0)")])
        self.widget = W.VBox([self.slider, self.caption, titles, W.HBox([self.image, self.residual]),
                              W.HTML("singular values (log scale): kept dark, dropped light"), self.spectrum])

    def show(self):
        """Show a picture of the starting state (image, residual, spectrum), then return the live widget."""
        import base64

        k = self.slider.value
        pictures = [to_png(self.svd.reconstruct(k)), to_png(residual_image(self.svd, k, self.image_array))]
        imgs = "".join(f"<img width='{self.width}' src='data:image/png;base64,{base64.b64encode(p).decode()}'/>"
                       for p in pictures)
        spectrum = base64.b64encode(self.spectrum_plot.png(k)).decode()
        static_picture(html=f"<div>{self.caption.value}</div><div>{imgs}</div>"
                            f"<img width='{2 * self.width}' src='data:image/png;base64,{spectrum}'/>")
        return self.widget

    def check_k(self, k: int) -> int:
        if not is_int(k) or not 1 <= k <= self.svd.max_rank:
            raise ValueError(f"The slider's rank k must be an integer in [1, {self.svd.max_rank}], got {k!r}.")
        return int(k)

    def render(self, k: int) -> tuple[bytes, str]:
        k = self.check_k(k)
        return to_png(self.svd.reconstruct(k)), rank_caption(self.svd, k)

    def on_change(self, change: dict) -> None:
        t0 = time.perf_counter()
        k = change["new"]
        self.image.value, self.caption.value = self.render(k)
        self.residual.value = to_png(residual_image(self.svd, k, self.image_array))
        self.spectrum.value = self.spectrum_plot.png(k)
        self.latencies_ms.append(1000 * (time.perf_counter() - t0))


def calculator_table(model: str, r: int, targets: tuple[str, ...], dtype: str = "bf16") -> str:
    """An HTML table: LoRA's trainable parameters, adapter size and training memory vs full fine-tuning.

    ``dtype`` is the training precision (``"fp32"``, or mixed ``"bf16"``/``"fp16"`` with fp32 master weights and
    fp32 Adam moments: see ``lora_edu.maths.arch.training_memory``).
    """
    if model not in ARCHITECTURES:
        raise ValueError(f"Unknown model {model!r}; choose one of: {', '.join(ARCHITECTURES)}.")
    if dtype not in TRAINING_PRECISIONS:
        raise ValueError(f"Unknown training precision {dtype!r}; choose one of: {', '.join(TRAINING_PRECISIONS)}.")
    arch = ARCHITECTURES[model]
    if not targets:
        return "<b>Pick at least one matrix to adapt.</b>"
    total = arch.total_parameters()
    lora = lora_parameter_count(arch, r, targets)
    full_mem = training_memory(total, total, dtype)
    lora_mem = training_memory(total + lora, lora, dtype)
    rows = [
        ("trainable parameters", f"{total:,}", f"{lora:,} ({100 * lora / total:.4f}%)"),
        ("checkpoint to store", format_bytes(total * DTYPE_BYTES[dtype]), format_bytes(lora * DTYPE_BYTES[dtype])),
        ("weights + grads (+ fp32 master) + Adam states", format_bytes(full_mem["total"]), format_bytes(lora_mem["total"])),
    ]
    body = "".join(f"<tr><td>{a}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in rows)
    return (
        f"<table class='lora-calculator'><tr><th>{model}, r = {r} on {', '.join(targets)} ({dtype} training)</th>"
        f"<th>full fine-tune</th><th>LoRA</th></tr>{body}</table>"
    )


def lora_calculator(model: str = "GPT-3 175B", r: int = 4, targets: tuple[str, ...] = ("q", "v"), dtype: str = "bf16"):
    """Dropdowns and a slider wired to ``calculator_table``; returns the widget to display."""
    import ipywidgets as W

    calculator_table(model, r, targets, dtype)  # bad arguments fail here, before any widget exists
    model_w = W.Dropdown(options=list(ARCHITECTURES), value=model, description="model")
    rank_w = W.IntSlider(value=r, min=1, max=256, description="rank r")
    dtype_w = W.Dropdown(options=list(TRAINING_PRECISIONS), value=dtype, description="precision")
    boxes = {}
    matrices_box = W.HBox()
    out = W.HTML()

    def refresh(_=None) -> None:
        chosen = tuple(name for name, box in boxes.items() if box.value)
        out.value = calculator_table(model_w.value, rank_w.value, chosen, dtype_w.value)

    def rebuild_boxes(_=None) -> None:
        previous = {name for name, box in boxes.items() if box.value} or set(targets)
        boxes.clear()
        for name in ARCHITECTURES[model_w.value].matrices:
            boxes[name] = W.Checkbox(value=name in previous, description=name, indent=False, layout=W.Layout(width="80px"))
            boxes[name].observe(refresh, names="value")
        matrices_box.children = list(boxes.values())
        refresh()

    model_w.observe(rebuild_boxes, names="value")
    rank_w.observe(refresh, names="value")
    dtype_w.observe(refresh, names="value")
    rebuild_boxes()
    static_picture(html=out.value)
    return W.VBox([W.HBox([model_w, dtype_w]), rank_w, matrices_box, out])


def product_rank_report(d: int = 64, r: int = 4, rank_b: int | None = None, seed: int = 0) -> str:
    """ΔW = B A with B (d x r) of rank ``rank_b`` (default r: random) and A (r x d) random: report rank(ΔW) and storage.

    rank(B A) ≤ min(rank B, rank A) ≤ r: a deficient factor lowers the product's rank however large d is.
    """
    rank_b = r if rank_b is None else rank_b
    if not 1 <= r <= d:
        raise ValueError(f"Need 1 <= r <= d, got r={r}, d={d}.")
    if not 0 <= rank_b <= r:
        raise ValueError(f"B is d x r, so its rank is in [0, r] = [0, {r}], got rank_b={rank_b}.")
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((d, rank_b)) @ rng.standard_normal((rank_b, r))  # d x r of rank rank_b
    a = rng.standard_normal((r, d))
    rank = int(np.linalg.matrix_rank(b @ a))
    return (
        f"B {d}x{r} (rank {rank_b}) @ A {r}x{d}: rank(ΔW) = {rank} (≤ min(rank B, r) = {min(rank_b, r)}) | "
        f"ΔW stores {d * d:,} numbers, B and A {2 * d * r:,} ({100 * 2 * r / d:.1f}%)"
    )


def product_rank_explorer(d: int = 64, r: int = 4, rank_b: int | None = None):
    """Sliders for d, r and the rank of B wired to ``product_rank_report``; returns the widget to display."""
    import ipywidgets as W

    product_rank_report(d, r, rank_b)  # bad arguments fail here
    d_w = W.IntSlider(value=d, min=4, max=512, step=4, description="d")
    r_w = W.IntSlider(value=r, min=1, max=64, description="r")
    b_w = W.IntSlider(value=r if rank_b is None else rank_b, min=0, max=r, description="rank of B")
    out = W.HTML()

    def refresh(_=None) -> None:
        r_w.max = min(64, d_w.value)
        b_w.max = r_w.value
        out.value = product_rank_report(d_w.value, r_w.value, b_w.value)

    def new_r(change: dict) -> None:
        if b_w.value == change["old"]:  # B was full rank: keep it full rank
            b_w.max = change["new"]
            b_w.value = change["new"]
        refresh()

    d_w.observe(refresh, names="value")
    r_w.observe(new_r, names="value")
    b_w.observe(refresh, names="value")
    refresh()
    static_picture(html=f"<div>d = {d_w.value}, r = {r_w.value}, rank of B = {b_w.value}</div><div>{out.value}</div>")
    return W.VBox([d_w, r_w, b_w, out])


def fit_step_html(fit, step: int) -> str:
    """An HTML table of ``scaling * B @ A`` after ``step`` steps of a ``FitResult``, with the loss."""
    if not 1 <= step <= len(fit.deltas):
        raise ValueError(f"step must be in [1, {len(fit.deltas)}], got {step}.")
    delta = fit.deltas[step - 1]
    shown = [[round(float(v), 3) + 0.0 for v in row] for row in delta]  # + 0.0 turns -0.0 into 0.0: no "-0.000"
    cells = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{v:.3f}</td>" for v in row) + "</tr>" for row in shown)
    return f"<div>step {step}: loss {fit.losses[step - 1]:.6f}</div><table class='delta-table'>{cells}</table>"


def fit_history_explorer(fit):
    """A step slider over a ``FitResult``: the learned update B A after each gradient step."""
    import ipywidgets as W

    step = W.IntSlider(value=len(fit.deltas), min=1, max=len(fit.deltas), description="step")
    out = W.HTML(value=fit_step_html(fit, step.value))
    step.observe(lambda change: setattr(out, "value", fit_step_html(fit, change["new"])), names="value")
    static_picture(html=out.value)
    return W.VBox([step, out])


FIRST_UPDATE_RANKS = (1, 2, 4, 8, 16, 32, 64)
SCALINGS = {"α/r": False, "α/√r (rsLoRA)": True}


class FirstUpdateSizes(NamedTuple):
    """‖ΔW‖_F after one Adam-like step at α = 1, per rank, under α/r and under α/√r. ΔW = γ B A (γ the scaling) with B moved by
    the learning rate whatever γ is, so at any other α the size is exactly α times these."""

    ranks: tuple[int, ...]
    plain: tuple[float, ...]
    rslora: tuple[float, ...]

    def size(self, r: int, alpha: float, use_rslora: bool) -> float:
        if r not in self.ranks:
            raise ValueError(f"r = {r!r} is not among the measured ranks {self.ranks}.")
        return alpha * (self.rslora if use_rslora else self.plain)[self.ranks.index(r)]


def first_update_sizes(ranks: tuple[int, ...] = FIRST_UPDATE_RANKS, d: int = 512) -> FirstUpdateSizes:
    """Measure ``lora_edu.lora.variants.update_size_after_one_step`` at α = 1 for every rank, both scalings."""
    from ..lora.variants import update_size_after_one_step

    if not ranks or not all(is_int(r) and 1 <= r <= d for r in ranks):
        raise ValueError(f"ranks must be integers in [1, d = {d}], got {ranks!r}.")
    return FirstUpdateSizes(tuple(ranks), tuple(update_size_after_one_step(r, 1.0, False, d=d) for r in ranks),
                            tuple(update_size_after_one_step(r, 1.0, True, d=d) for r in ranks))


def check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < float("inf"):
        raise ValueError(f"α must be a positive finite number, got {alpha!r}.")
    return float(alpha)


def first_update_html(sizes: FirstUpdateSizes, r: int, alpha: float, use_rslora: bool, reference: tuple[int, float] = (8, 16.0)) -> str:
    """The line under the sliders: the scaling γ, the applied update's size ‖γ B A‖_F after one step, and its size next to
    r = 8, α = 16 under α/r."""
    alpha = check_alpha(alpha)
    scaling = alpha / (r**0.5 if use_rslora else r)
    size = sizes.size(r, alpha, use_rslora)
    ref = sizes.size(reference[0], reference[1], False)
    name = "α/√r" if use_rslora else "α/r"
    return (f"<div class='first-update-caption'>r = {r}, α = {alpha:g}: scaling γ = {name} = {scaling:.3f} | "
            f"the applied update's size ‖γ B A‖_F after one step = {size:.4f}, {size / ref:.2f} × that of "
            f"r = {reference[0]}, α = {reference[1]:g} with α/r</div>")


def first_update_png(sizes: FirstUpdateSizes, r: int, alpha: float, use_rslora: bool) -> bytes:
    """‖γ B A‖_F after one step against r (log-log) at this α, under both scalings; the chosen point marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    alpha = check_alpha(alpha)
    fig = Figure(figsize=(5.6, 2.9), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, rs, color in (("α/r", False, "C0"), ("α/√r (rsLoRA)", True, "C1")):
        ax.loglog(sizes.ranks, [sizes.size(k, alpha, rs) for k in sizes.ranks], "o-", color=color, ms=3, label=label)
    ax.loglog([r], [sizes.size(r, alpha, use_rslora)], "o", ms=10, mfc="none", mec="C3", mew=2, label="your choice")
    ax.axhline(sizes.size(8, 16.0, False), color="0.5", ls="--", lw=1, label="r = 8, α = 16, α/r")
    ax.set_xticks(sizes.ranks, [str(k) for k in sizes.ranks])
    ax.yaxis.set_major_formatter("{x:.2g}")
    ax.yaxis.set_minor_formatter("{x:.2g}")
    ax.set_xlabel("rank r")
    ax.set_ylabel("‖γ B A‖_F after one step")
    ax.set_title(f"α = {alpha:g}", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def first_update_explorer(r: int = 8, alpha: float = 16.0, use_rslora: bool = False, sizes: FirstUpdateSizes | None = None):
    """Sliders for r and α and a scaling toggle over the first update's size; returns the widget to display.

    The sizes are measured once (``first_update_sizes``); moving a control only rescales and redraws.
    """
    import ipywidgets as W

    sizes = first_update_sizes() if sizes is None else sizes
    first_update_html(sizes, r, alpha, use_rslora)  # bad arguments fail here, before any widget exists
    r_w = W.SelectionSlider(options=list(sizes.ranks), value=r, description="rank r", continuous_update=True)
    alpha_w = W.FloatLogSlider(value=alpha, base=2, min=0, max=8, step=0.5, description="α", continuous_update=True)
    scale_w = W.ToggleButtons(options=list(SCALINGS), value="α/√r (rsLoRA)" if use_rslora else "α/r", description="scaling")
    caption = W.HTML()
    plot = W.Image(format="png", width=560)
    for widget, cls in ((r_w, "first-update-r"), (alpha_w, "first-update-alpha"), (caption, "first-update-text"),
                        (plot, "first-update-plot")):
        widget.add_class(cls)

    def refresh(_=None) -> None:
        caption.value = first_update_html(sizes, r_w.value, alpha_w.value, SCALINGS[scale_w.value])
        plot.value = first_update_png(sizes, r_w.value, alpha_w.value, SCALINGS[scale_w.value])

    for widget in (r_w, alpha_w, scale_w):
        widget.observe(refresh, names="value")
    refresh()
    static_picture(html=f"<div>{caption.value}</div><img width='560' src='data:image/png;base64,"
                        f"{base64.b64encode(plot.value).decode()}'/>")
    return W.VBox([W.HBox([r_w, alpha_w]), scale_w, caption, plot])


def targets_name(targets: tuple[str, ...]) -> str:
    """("q", "v") -> "Wq+Wv"."""
    return "+".join("W" + t for t in targets)


def sweep_summary(runs: list, metrics: tuple[str, ...]) -> dict[str, dict[tuple[tuple[str, ...], int], Any]]:
    """metric (a loss) -> (targets, r) -> 95% interval over seeds, on the log scale; a run listed twice (same targets,
    r and seed) counts once."""
    from ..paper.experiments import summarize

    unique = list({(run.targets, run.r, run.seed): run for run in runs}.values())
    return {m: summarize(unique, m, log=True) for m in metrics}


def sweep_point_html(summary: dict, targets: tuple[str, ...], r: int, d_model: int, n_layer: int) -> str:
    """One configuration of a stored sweep: its trainable parameters and, per metric, its geometric mean with a 95%
    interval and the value of each seed.

    ``summary``: metric -> ``lora_edu.paper.experiments.summarize(runs, metric)``; the first metric is the one a
    choice is made on (validation), and the configuration that is best on it is named.
    """
    first = next(iter(summary))
    if (targets, r) not in summary[first]:
        have = ", ".join(f"{targets_name(t)} r={k}" for t, k in summary[first])
        raise ValueError(f"The sweep has no run of {targets_name(targets)} at r = {r}; it has {have}.")
    trainable = n_layer * len(targets) * r * 2 * d_model
    rows = "".join(
        f"<tr><td>{metric.replace('_', ' ')}</td><td>{iv}</td><td>{', '.join(f'{v:.3f}' for v in iv.values)}</td></tr>"
        for metric, by_config in summary.items() for iv in [by_config[(targets, r)]])
    best = min(summary[first], key=lambda key: summary[first][key].mean)
    note = ("the best mean on it of all configurations" if best == (targets, r)
            else f"best on it: {targets_name(best[0])} at r = {best[1]}")
    return (f"<div class='sweep-caption'>{targets_name(targets)} at r = {r}: {trainable:,} trainable parameters "
            f"({n_layer} layers × {len(targets)} matrices × r (d_in + d_out))</div>"
            "<table class='sweep-table'><tr><th>lower is better</th><th>geometric mean [95% interval]</th>"
            f"<th>per seed</th></tr>{rows}</table>"
            f"<div>chosen on {first.replace('_', ' ')}: {note}</div>")


def sweep_png(summary: dict, targets: tuple[str, ...], r: int) -> bytes:
    """The first metric against r for every set of targets (geometric mean and 95% interval), the chosen configuration
    circled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric = next(iter(summary))
    by_targets: dict[tuple[str, ...], list[int]] = {}
    for t, k in summary[metric]:
        by_targets.setdefault(t, []).append(k)
    fig = Figure(figsize=(6.0, 3.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (t, ks) in enumerate(by_targets.items()):
        ks = sorted(ks)
        ivs = [summary[metric][(t, k)] for k in ks]
        ax.errorbar(ks, [iv.mean for iv in ivs], yerr=np.array([iv.errors for iv in ivs]).T, fmt="o-" if len(ks) > 1 else "o",
                    color=f"C{i % 10}", capsize=3, ms=4, lw=1, label=targets_name(t))
    chosen = summary[metric][(targets, r)]
    ax.plot([r], [chosen.mean], "o", ms=13, mfc="none", mec="C3", mew=2)
    ranks = sorted({k for ks in by_targets.values() for k in ks})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ranks, [str(k) for k in ranks])
    ax.set_xlabel("rank r")
    ax.set_ylabel(metric.replace("_", " "))
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def sweep_explorer(runs: list, d_model: int, n_layer: int, metrics: tuple[str, ...] = ("val_answer_loss", "test_answer_loss")):
    """Pick the adapted matrices and the rank among the runs of a stored sweep; returns the widget to display.

    ``runs``: ``lora_edu.paper.experiments.LoRARun`` objects.  Nothing is trained in a callback: the summaries are
    computed once, and each move only looks one up and redraws.
    """
    import ipywidgets as W

    summary = sweep_summary(runs, metrics)
    configs = list(summary[metrics[0]])
    names = {targets_name(t): t for t, _ in configs}
    first_targets, first_r = configs[0]
    targets_w = W.Dropdown(options=list(names), value=targets_name(first_targets), description="adapt")
    r_w = W.SelectionSlider(options=[first_r], value=first_r, description="rank r")
    caption = W.HTML()
    plot = W.Image(format="png", width=600)
    for widget, cls in ((targets_w, "sweep-targets"), (r_w, "sweep-rank"), (caption, "sweep-text"), (plot, "sweep-plot")):
        widget.add_class(cls)

    def refresh(_=None) -> None:
        t = names[targets_w.value]
        caption.value = sweep_point_html(summary, t, r_w.value, d_model, n_layer)
        plot.value = sweep_png(summary, t, r_w.value)

    def new_targets(_=None) -> None:
        ranks = sorted(k for t, k in configs if t == names[targets_w.value])
        r_w.unobserve(refresh, names="value")
        r_w.options = ranks
        r_w.value = ranks[0]
        r_w.observe(refresh, names="value")
        refresh()

    targets_w.observe(new_targets, names="value")
    r_w.observe(refresh, names="value")
    new_targets()
    static_picture(html=f"<div>{caption.value}</div><img width='600' src='data:image/png;base64,"
                        f"{base64.b64encode(plot.value).decode()}'/>")
    return W.VBox([W.HBox([targets_w, r_w]), caption, plot])
