"""The lessons' plotting helpers: one colour scale when asked, a camera along a direction, the span picture."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lora_edu.course.plots import draw_outputs_in_span, draw_reads_writes, plot_learning_curves, show_matrices, view_along  # noqa: E402


def test_show_matrices_can_share_one_colour_scale():
    ones, zeros = np.ones((2, 2)), np.zeros((2, 2))
    shared = show_matrices({"W": ones, "ΔW": zeros}, same_scale=True)
    assert [ax.images[0].get_clim() for ax in shared.axes] == [(0.0, 1.0), (0.0, 1.0)]  # ones and zeros differ in colour
    apart = show_matrices({"W": ones, "ΔW": zeros})
    assert apart.axes[0].images[0].get_clim() != apart.axes[1].images[0].get_clim()
    plt.close("all")


def test_view_along_points_the_camera_along_a_direction():
    assert view_along(np.array([1.0, 0.0, 0.0])) == (0.0, 0.0)
    assert view_along(np.array([0.0, 0.0, 2.0])) == (90.0, 0.0)
    elev, azim = view_along(np.array([1.0, 0.0, 0.8]))
    assert elev == pytest.approx(np.degrees(np.arctan(0.8))) and azim == 0.0


def test_span_picture_draws_the_points_and_the_plane_they_lie_in():
    rng = np.random.default_rng(0)
    B = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, -0.8]])
    outputs = B @ rng.standard_normal((2, 50))
    fig = plt.figure()
    draw_reads_writes(fig.add_subplot(1, 2, 1), 6, 2, 3)
    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    draw_outputs_in_span(ax3, B, outputs, view_along(B[:, 0]), "title")
    assert ax3.get_title() == "title" and len(ax3.collections) >= 2  # the points and the plane
    assert (ax3.elev, ax3.azim) == pytest.approx(view_along(B[:, 0]))
    plt.close(fig)


def test_learning_curves_draw_every_seed_thin_and_the_mean_thick():
    curves = {"LoRA": {16: [1.0, 2.0], 32: [0.5, 0.7]}, "LoRA+ 2": {16: [1.5, 1.5], 32: [0.9, 1.1]}}
    ax = plot_learning_curves(curves, target=0.8)
    lines = ax.get_lines()
    assert len(lines) == 2 * 3 + 1  # two seeds and a mean per arm, and the target
    means = [line for line in lines if line.get_linewidth() > 2]
    assert [list(m.get_ydata()) for m in means] == [[1.5, 0.6], [1.5, 1.0]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["LoRA (mean of 2 seeds)", "LoRA+ 2 (mean of 2 seeds)", "target 0.800"]
    assert ax.get_yscale() == "log"
    plt.close("all")


def test_the_serving_plot_draws_each_strategy_with_its_range():
    from lora_edu.course.plots import plot_serving
    from lora_edu.scale.serving import Throughput

    table = {n: {"batched": Throughput(100.0, 90.0, 110.0), "merge-swap": Throughput(200.0 / n, 150.0 / n, 210.0 / n)}
             for n in (1, 2, 4)}
    ax = plot_serving(table)
    medians = [list(line.get_ydata()) for line in ax.get_lines() if line.get_marker() == "o"]
    assert medians == [[100.0, 100.0, 100.0], [200.0, 100.0, 50.0]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["batched", "merge-swap"]
    assert ax.get_xscale() == "log"
    plt.close("all")


def test_the_latency_trend_draws_ours_with_the_rounds_range_beside_the_paper():
    from lora_edu.course.plots import plot_latency_trend

    ax = plot_latency_trend({4: (0.6, 0.5, 0.7), 64: (0.35, 0.3, 0.4)}, {128: 0.303, 4096: 0.084}, ours_label="ours")
    ours, paper = ax.containers[0], ax.lines[-2]  # the error bars' container; the paper's dashed line (the last is y = 0)
    assert list(ours.lines[0].get_ydata()) == pytest.approx([60.0, 35.0])
    assert list(paper.get_xdata()) == [128, 4096] and list(paper.get_ydata()) == pytest.approx([30.3, 8.4])
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert ax.get_xscale() == "log" and legend == {"the paper, AdapterH (Table 1)", "ours (bars: the range of the rounds)"}
    plt.close(ax.figure)


def test_the_fair_comparison_design_is_drawn_as_four_stages_in_order():
    from lora_edu.course.plots import draw_fair_comparison

    fig = draw_fair_comparison(sweep_seeds=3, more_seeds=2, val_animals=8, test_animals=16, steps=200)
    texts = [t.get_text() for t in fig.axes[0].texts if t.get_text()]  # the arrows are empty annotations
    assert len(texts) == 4 and texts[0].endswith("x 3 sweep seeds\n(200 steps each)")
    assert "validation\n(8 animals)" in texts[1] and texts[2] == "the chosen rate\n+ 2 more seeds" and "(16 animals)" in texts[3]
    assert len(fig.axes[0].patches) == 4
    plt.close(fig)


def test_the_intruder_null_draws_each_seeds_own_count_beside_its_null_one_row_per_run():
    from lora_edu.course.plots import plot_intruder_null

    runs = {"lora-all at 0.01": ([6, 9, 9], [12.2, 11.0, 9.2]), "full at 0.001": ([0, 0, 0], [0.0, 0.0, 0.0])}
    ax = plot_intruder_null(runs)
    own, null = ax.collections[0], ax.collections[1]  # the first row's dots: filled (own), open (the null)
    assert list(own.get_offsets()[:, 0]) == [6, 9, 9] and list(null.get_offsets()[:, 0]) == pytest.approx([12.2, 11.0, 9.2])
    assert len(ax.collections) == 4 and len(ax.lines) == 6  # two scatters and one joining line per seed, per row
    assert [t.get_text() for t in ax.get_yticklabels()] == list(runs)
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert legend == {"its own update", "random directions, same singular values"}
    plt.close(ax.figure)


def test_the_verdicts_at_a_glance_colour_each_cell_by_its_first_verdict_word():
    from lora_edu.course.plots import VERDICT_FILLS, plot_verdicts

    columns = {"against full-linear": ["**not resolved**", "not resolved on held-out loss", ""],
               "against full": ["disagrees on held-out loss", "agrees, then not resolved at 0.003", "not resolved"]}
    ax = plot_verdicts(["learns less", "forgets less", "best rate 10x"], columns)
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["not resolved", "not resolved", "", "disagrees", "agrees / not resolved", "not resolved"]
    colours = [matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches]
    assert colours[2] == "#ffffff" and colours[3] == VERDICT_FILLS["disagrees"] and colours[4] == VERDICT_FILLS["agrees"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["learns less", "forgets less", "best rate 10x"]
    with pytest.raises(ValueError, match="needs one entry per claim"):
        plot_verdicts(["one claim"], columns)
    plt.close(ax.figure)
