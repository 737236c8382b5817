"""Widgets for the instructor: a rank slider over an SVD and a LoRA budget calculator.

The widgets only wire controls to plain functions (``RankSlider.render``, ``calculator_table``);
the unit tests call those functions directly, and a browser test drives the real widgets.
"""

from __future__ import annotations

import io
import time

import numpy as np

from ..checks import is_int
from ..maths.arch import ARCHITECTURES, DTYPE_BYTES, TRAINING_PRECISIONS, format_bytes, lora_parameter_count, training_memory
from ..maths.linalg import SVDReconstructor

__all__ = [
    "calculator_table",
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
    cells = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{v:.3f}</td>" for v in row) + "</tr>" for row in delta)
    return f"<div>step {step}: loss {fit.losses[step - 1]:.6f}</div><table class='delta-table'>{cells}</table>"


def fit_history_explorer(fit):
    """A step slider over a ``FitResult``: the learned update B A after each gradient step."""
    import ipywidgets as W

    step = W.IntSlider(value=len(fit.deltas), min=1, max=len(fit.deltas), description="step")
    out = W.HTML(value=fit_step_html(fit, step.value))
    step.observe(lambda change: setattr(out, "value", fit_step_html(fit, change["new"])), names="value")
    static_picture(html=out.value)
    return W.VBox([step, out])
