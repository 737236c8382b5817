"""Widgets for the instructor: a rank slider over an SVD and a LoRA budget calculator.

The widgets only wire controls to plain functions (``RankSlider.render``, ``calculator_table``);
the unit tests call those functions directly, and a browser test drives the real widgets.
"""

from __future__ import annotations

import io
import time

import numpy as np

from .arch import ARCHITECTURES, DTYPE_BYTES, format_bytes, lora_parameter_count, memory_estimate
from .linalg import SVDReconstructor

__all__ = [
    "calculator_table",
    "fit_history_explorer",
    "fit_step_html",
    "lora_calculator",
    "product_rank_explorer",
    "product_rank_report",
    "rank_caption",
    "sample_photo",
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
    """The line under the slider: rank, Frobenius error (absolute and relative) and storage."""
    rows, cols = svd.shape
    return (
        f"rank {k}: error {svd.error(k):.4f} ({100 * svd.relative_error(k):.2f}% of the image) | "
        f"stores {svd.storage(k):,} numbers = {100 * svd.storage(k) / (rows * cols):.1f}% of {rows * cols:,}"
    )


class RankSlider:
    """A rank slider over the SVD of an image: factorise once, reconstruct on every move.

    ``image``: (rows, cols) with values in [0, 1].  ``render(k)`` returns the PNG bytes and the
    caption for rank ``k``; ``widget`` is the ipywidgets box to display.
    """

    def __init__(self, image: np.ndarray, k: int = 10, width: int = 384) -> None:
        import ipywidgets as W

        self.svd = SVDReconstructor(image)
        self.latencies_ms: list[float] = []
        k = self.svd.check_rank(k)
        self.slider = W.IntSlider(value=k, min=1, max=self.svd.max_rank, description="rank k", continuous_update=True,
                                  layout=W.Layout(width="500px"))
        png, caption = self.render(k)
        self.image = W.Image(value=png, format="png", width=width)
        self.caption = W.HTML(value=caption)
        self.slider.add_class("rank-slider")
        self.image.add_class("rank-image")
        self.caption.add_class("rank-caption")
        self.slider.observe(self.on_change, names="value")
        self.widget = W.VBox([self.slider, self.image, self.caption])

    def render(self, k: int) -> tuple[bytes, str]:
        return to_png(self.svd.reconstruct(k)), rank_caption(self.svd, k)

    def on_change(self, change: dict) -> None:
        t0 = time.perf_counter()
        self.image.value, self.caption.value = self.render(change["new"])
        self.latencies_ms.append(1000 * (time.perf_counter() - t0))


def calculator_table(model: str, r: int, targets: tuple[str, ...], dtype: str = "bf16") -> str:
    """An HTML table: LoRA's trainable parameters, adapter size and training memory vs full fine-tuning."""
    arch = ARCHITECTURES[model]
    if not targets:
        return "<b>Pick at least one matrix to adapt.</b>"
    total = arch.total_parameters()
    lora = lora_parameter_count(arch, r, targets)
    full_mem = memory_estimate(total, total, dtype, dtype, dtype)
    lora_mem = memory_estimate(total + lora, lora, dtype, dtype, dtype)
    rows = [
        ("trainable parameters", f"{total:,}", f"{lora:,} ({100 * lora / total:.4f}%)"),
        ("checkpoint to store", format_bytes(total * DTYPE_BYTES[dtype]), format_bytes(lora * DTYPE_BYTES[dtype])),
        ("weights + grads + Adam states", format_bytes(full_mem["total"]), format_bytes(lora_mem["total"])),
    ]
    body = "".join(f"<tr><td>{a}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in rows)
    return (
        f"<table class='lora-calculator'><tr><th>{model}, r = {r} on {', '.join(targets)} ({dtype})</th>"
        f"<th>full fine-tune</th><th>LoRA</th></tr>{body}</table>"
    )


def lora_calculator(model: str = "GPT-3 175B", r: int = 4, targets: tuple[str, ...] = ("q", "v"), dtype: str = "fp16"):
    """Dropdowns and a slider wired to ``calculator_table``; returns the widget to display."""
    import ipywidgets as W

    model_w = W.Dropdown(options=list(ARCHITECTURES), value=model, description="model")
    rank_w = W.IntSlider(value=r, min=1, max=256, description="rank r")
    dtype_w = W.Dropdown(options=[d for d in DTYPE_BYTES if d != "nf4"], value=dtype, description="dtype")
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
    return W.VBox([W.HBox([model_w, dtype_w]), rank_w, matrices_box, out])


def product_rank_report(d: int = 64, k: int = 4, seed: int = 0) -> str:
    """Draw A (d x k) and B (k x d) at random; report rank(AB) and the storage of each form."""
    if not 1 <= k <= d:
        raise ValueError(f"Need 1 <= k <= d, got k={k}, d={d}.")
    rng = np.random.default_rng(seed)
    product = rng.standard_normal((d, k)) @ rng.standard_normal((k, d))
    rank = int(np.linalg.matrix_rank(product))
    return (
        f"A {d}x{k} @ B {k}x{d}: rank(AB) = {rank} (<= k = {k}) | full matrix stores {d * d:,} numbers, "
        f"the factors {2 * d * k:,} ({100 * 2 * k / d:.1f}%)"
    )


def product_rank_explorer(d: int = 64, k: int = 4):
    """Sliders for d and k wired to ``product_rank_report``; returns the widget to display."""
    import ipywidgets as W

    d_w = W.IntSlider(value=d, min=4, max=512, step=4, description="d")
    k_w = W.IntSlider(value=k, min=1, max=64, description="k")
    out = W.HTML()

    def refresh(_=None) -> None:
        k_w.max = d_w.value
        out.value = product_rank_report(d_w.value, k_w.value)

    d_w.observe(refresh, names="value")
    k_w.observe(refresh, names="value")
    refresh()
    return W.VBox([d_w, k_w, out])


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
    return W.VBox([step, out])
