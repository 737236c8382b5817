"""Fair comparisons: rates chosen on validation only, intervals inside [0, 1], held-out text never trained on."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lora_edu.gpt.data import all_filler_lines, make_world
from lora_edu.gpt.finetune import update_ratios
from lora_edu.gpt.model import GPT, GPTConfig
from lora_edu.gpt.progress import Progress, duration
from lora_edu.lora.layer import inject_lora, lora_layers
from lora_edu.maths import matching
from lora_edu.maths.intervals import wilson_interval
from lora_edu.paper import comparison
from lora_edu.paper.comparison import Arm, compare_methods, exact_match_interval


def test_wilson_interval_stays_in_the_unit_interval_and_is_never_zero_width():
    low, high = wilson_interval(1.0, 16)
    assert high == 1.0 and low == pytest.approx(0.806, abs=1e-3)  # 16/16 right: the rate could still be 0.81
    low, high = wilson_interval(0.0, 16)
    assert low == 0.0 and high == pytest.approx(0.194, abs=1e-3)
    low, high = wilson_interval(0.5, 16)
    assert 0 < low < 0.5 < high < 1 and (low + high) / 2 == pytest.approx(0.5)
    assert comparison.wilson_interval is wilson_interval  # one function, where notebook 05b's exercise checks it
    with pytest.raises(ValueError, match="at least one item"):
        wilson_interval(0.5, 0)
    with pytest.raises(ValueError, match=r"lies in \[0, 1\]"):
        wilson_interval(16, 16)  # a count where a rate belongs


def test_exact_match_interval_covers_seeds_and_animals():
    perfect = exact_match_interval([[True] * 16] * 5)
    assert perfect.mean == 1.0 and perfect.high == 1.0 and perfect.low < 0.85
    mixed = exact_match_interval([[i % 4 != s for i in range(16)] for s in range(5)])
    assert 0.0 <= mixed.low < mixed.mean < mixed.high <= 1.0 and mixed.mean == pytest.approx(0.8)  # seed 4 gets every animal right
    assert str(mixed).startswith("0.80 [")
    one_seed = exact_match_interval([[True, False]] * 2)
    assert one_seed.low <= 0.5 <= one_seed.high
    with pytest.raises(ValueError, match="at least 2 seeds"):
        exact_match_interval([[True, False]])


def fake_finetune(val, test):
    """A finetune whose validation and test scores are given per learning rate, to see which one choice reads."""

    def finetune(base, world, task, method, lr, seed, progress, **options):
        report = SimpleNamespace(val_exact_match=val[lr], val_answer_loss=1.0 - val[lr], test_exact_match=test[lr],
                                 val_right=tuple(i < round(8 * val[lr]) for i in range(8)), method=method, lr=lr, seed=seed,
                                 options=options)
        return None, report

    return finetune


def test_the_rate_is_chosen_on_validation_never_on_test(monkeypatch):
    val, test = {1e-3: 0.9, 1e-2: 0.5}, {1e-3: 0.1, 1e-2: 1.0}  # test would pick 1e-2; validation picks 1e-3
    monkeypatch.setattr(comparison, "finetune", fake_finetune(val, test))
    arms = [Arm("a", "lora-all", (1e-3, 1e-2), headline=True), Arm("b", "full", (1e-3, 1e-2), {"replay": 1.0})]
    result = compare_methods(None, None, "json", arms, sweep_seeds=(0, 1), seeds=(0, 1, 2), show_progress=False, steps=5)
    assert result.chosen_lr == {"a": 1e-3, "b": 1e-3}
    assert [r.seed for r in result.runs("a")] == [0, 1, 2]  # a headline arm gets every seed at its chosen rate
    assert [r.seed for r in result.runs("b")] == [0, 1]  # the others keep the sweep seeds
    assert result.runs("b")[0].options == {"steps": 5, "replay": 1.0}
    assert result.at_grid_edge("a") and result.mean("a", "val_exact_match") == 0.9
    assert result.mean("a", "test_exact_match", 1e-2, seeds=(0,)) == 1.0  # one rate, the sweep seed only


def test_fresh_seeds_rerun_the_chosen_rate_and_nothing_else(monkeypatch):
    val, test = {1e-3: 0.9, 1e-2: 0.5}, {1e-3: 0.1, 1e-2: 1.0}
    monkeypatch.setattr(comparison, "finetune", fake_finetune(val, test))
    arms = [Arm("a", "lora-all", (1e-3, 1e-2), {"r": 4}), Arm("b", "full", (1e-3, 1e-2))]
    chose = compare_methods(None, None, "json", arms, (0, 1), (0, 1), show_progress=False, steps=5)
    fresh = comparison.on_fresh_seeds(chose, None, None, "json", ["a"], (3, 4, 5), show_progress=False, steps=5)
    assert [(r.seed, r.lr, r.options) for r in fresh.runs("a")] == [(s, 1e-3, {"steps": 5, "r": 4}) for s in (3, 4, 5)]
    assert fresh.chosen_lr == {"a": 1e-3} and fresh.at_grid_edge("a")  # the grid is the original one
    assert fresh.arm("a").lrs == (1e-3, 1e-2)
    with pytest.raises(ValueError, match=r"Seeds \[1\] already ran"):
        comparison.on_fresh_seeds(chose, None, None, "json", ["a"], (1, 2), show_progress=False)



def test_more_seeds_fills_in_a_rate_without_changing_any_choice(monkeypatch):
    val, test = {1e-3: 0.9, 1e-2: 0.5}, {1e-3: 0.1, 1e-2: 1.0}
    monkeypatch.setattr(comparison, "finetune", fake_finetune(val, test))
    arms = [Arm("a", "lora-all", (1e-3, 1e-2), {"r": 4}), Arm("b", "full", (1e-3, 1e-2))]
    c = compare_methods(None, None, "json", arms, (0, 1), (0, 1), show_progress=False, steps=5)
    before = dict(c.reports)
    added = comparison.more_seeds(c, None, None, "json", [("a", 1e-2)], (0, 1, 2, 3), measure=lambda model: {"m": 1},
                                  show_progress=False, steps=5)
    assert added == [("a", 1e-2, 2), ("a", 1e-2, 3)]  # seeds 0 and 1 ran there already: kept, not retrained
    assert all(c.reports[k] is r for k, r in before.items()) and c.chosen_lr == {"a": 1e-3, "b": 1e-3}
    assert [(r.seed, r.options) for r in c.runs("a", 1e-2)] == [(0, {"steps": 5, "r": 4}), (1, {"steps": 5, "r": 4}),
                                                                (2, {"steps": 5, "r": 4}), (3, {"steps": 5, "r": 4})]
    assert set(c.measured) == {("a", 1e-2, 2), ("a", 1e-2, 3)} and len(c.runs("b", 1e-2)) == 2
    assert comparison.more_seeds(c, None, None, "json", [("a", 1e-2)], (0, 1, 2, 3), show_progress=False) == []
    with pytest.raises(ValueError, match="not in the grid of 'b'"):
        comparison.more_seeds(c, None, None, "json", [("b", 3e-3)], (2,), show_progress=False)

def test_ties_on_validation_go_to_the_lower_loss_then_the_smaller_rate(monkeypatch):
    val, test = {1e-3: 0.5, 3e-3: 0.5, 1e-2: 0.5}, {1e-3: 0.0, 3e-3: 0.0, 1e-2: 0.0}
    monkeypatch.setattr(comparison, "finetune", fake_finetune(val, test))
    result = compare_methods(None, None, "json", [Arm("a", "full", (1e-2, 3e-3, 1e-3))], (0,), (0,), show_progress=False)
    assert result.chosen_lr["a"] == 1e-3 and result.at_grid_edge("a")


def test_compare_methods_refuses_unclear_plans():
    with pytest.raises(ValueError, match="subset"):
        compare_methods(None, None, "json", [Arm("a", "full", (1e-3,))], (0, 5), (0, 1))
    with pytest.raises(ValueError, match="share a label"):
        compare_methods(None, None, "json", [Arm("a", "full", (1e-3,)), Arm("a", "lora-all", (1e-3,))], (0,), (0,))


def test_heldout_text_is_never_in_the_pretraining_corpus():
    world = make_world()
    held = world.heldout_text
    seen = {line for epoch in range(40) for line in world.pretraining_lines(seed=epoch)}
    assert not seen & set(held.lines)
    assert len(held.facts) == len(world.animals) and len(held.filler) == round(0.15 * len(all_filler_lines()))
    for a, line in zip(world.animals, held.facts, strict=True):  # one of the three long phrasings per animal
        assert line in world.phrasings(a)[4:]
        assert sum(line in seen for line in world.phrasings(a)) == 6  # the six others teach its facts
    assert make_world().heldout_text == held  # deterministic


def test_update_ratio_is_the_relative_size_of_the_applied_change():
    torch.manual_seed(0)
    base = GPT(GPTConfig(vocab_size=20, n_ctx=8, n_layer=1, n_head=2, d_model=16))
    model = GPT(base.config)
    model.load_state_dict(base.state_dict())
    inject_lora(model, ["q_proj"], r=2, alpha=4)
    assert update_ratios(base, model) == {}  # B starts at zero: nothing changed yet
    layer = lora_layers(model)["blocks.0.attn.q_proj"]
    with torch.no_grad():
        layer.lora_B.fill_(0.1)
    w = base.blocks[0].attn.q_proj.weight
    expected = float(layer.delta_weight().detach().norm() / w.detach().norm())
    assert update_ratios(base, model) == {"blocks.0.attn.q_proj": pytest.approx(expected)}
    top2 = torch.linalg.svdvals(w.detach())[:2].norm()  # W's top-2 part: the measure of the paper's Table 7
    by_top = float(layer.delta_weight().detach().norm() / top2)
    assert update_ratios(base, model, top_r=2) == {"blocks.0.attn.q_proj": pytest.approx(by_top)}
    assert update_ratios(base, model, top_r=16)["blocks.0.attn.q_proj"] == pytest.approx(expected)  # every direction: ||W||_F
    with pytest.raises(ValueError, match="top_r"):
        update_ratios(base, model, top_r=0)


def test_progress_line_says_how_long_is_left():
    bar = Progress(4, "runs")
    bar.start -= 30.0  # 30 s for the first two: about 30 s left
    bar.update(2, now="full at lr 0.001, seed 0")
    line = bar.line()
    assert "about 30 s left" in line and "now full at lr 0.001, seed 0" in line
    assert "left" not in bar.line(done=True)
    assert duration(3.21) == "3.2 s" and duration(45) == "45 s" and duration(125) == "2 min 05 s"
    assert math.isfinite(bar.start)
    bar.close()


def test_paired_difference_resolves_what_unpaired_intervals_cannot():
    from lora_edu.paper.comparison import exact_match_interval, paired_difference, paired_verdict

    rng = np.random.default_rng(0)
    hard = np.arange(16) < 3  # three animals every arm gets wrong
    a = np.tile(~hard, (5, 1))  # A: all but the hard three, every seed
    b = a.copy()
    b[:, 3:9] = rng.random((5, 6)) < 0.2  # B also misses six more animals, most of the time
    diff = paired_difference(a, b)
    assert diff.low > 0 and diff.mean == pytest.approx(a.mean() - b.mean())
    assert paired_verdict("A", "B", diff).startswith("A beats B")
    ia, ib = exact_match_interval(a), exact_match_interval(b)
    assert ia.low < ib.high  # the unpaired intervals overlap: without pairing this difference stays "not resolved"
    same = paired_difference(a, a)
    assert same.low <= 0 <= same.high and "not resolved" in paired_verdict("A", "A'", same)
    assert paired_verdict("B", "A", paired_difference(b, a)).startswith("A beats B")
    with pytest.raises(ValueError, match="same animals"):
        paired_difference(a, b[:, :8])


def test_paired_difference_covers_the_true_difference_in_simulation():
    """Seeds x animals drawn from a logit model (each animal as hard for both arms, a seed effect per run): the interval
    must hold the population's difference at least 95% of the time. It errs on the wide side (near 100%)."""
    from lora_edu.paper.comparison import paired_difference

    rng = np.random.default_rng(1)

    def right(p, hardness, seed_effect):
        return 1 / (1 + np.exp(-(np.log(p / (1 - p)) + hardness + seed_effect)))

    for p_a, p_b in ((0.97, 0.85), (0.8, 0.6)):
        population = rng.normal(0, 1, 20000)[:, None]
        truth = right(p_a, population, rng.normal(0, 0.5, (1, 200))).mean() - right(p_b, population, rng.normal(0, 0.5, (1, 200))).mean()
        covered = 0
        for _ in range(60):
            hardness = rng.normal(0, 1, (1, 16))
            a = rng.random((3, 16)) < right(p_a, hardness, rng.normal(0, 0.5, (3, 1)))
            b = rng.random((3, 16)) < right(p_b, hardness, rng.normal(0, 0.5, (3, 1)))
            diff = paired_difference(a, b, resamples=300)
            covered += diff.low <= truth <= diff.high
        assert covered >= 57, (p_a, p_b, covered)  # 95% of 60


def test_paired_difference_stays_inside_what_each_arm_allows():
    from lora_edu.maths.intervals import newcombe_paired
    from lora_edu.paper.comparison import exact_match_interval, paired_difference

    near_perfect = np.ones((3, 16), dtype=bool)
    near_perfect[0, 0] = False  # right on 47 of 48 answers
    scattered = np.ones((3, 16), dtype=bool)
    scattered[0, :9] = False  # one seed failed on 9 animals, two got them all: 3 seeds' t-interval is wide
    diff = paired_difference(scattered, near_perfect)
    own_a, own_b = exact_match_interval(scattered, 4000), exact_match_interval(near_perfect, 4000)
    assert diff.high <= own_a.high - own_b.low + 1e-9 and diff.low >= own_a.low - own_b.high - 1e-9
    low, high = newcombe_paired([1.0] * 16, [1.0] * 16)  # alike on every animal: Newcombe's width, never zero
    assert low < -0.1 and high > 0.1 and low == pytest.approx(-high)
    same = paired_difference(near_perfect, near_perfect)
    assert same.low <= low + 0.05 and same.high >= 0.1
    alike = newcombe_paired([1, 1, 0, 0, 1, 0, 1, 1], [1, 1, 0, 0, 1, 0, 1, 0])
    apart = newcombe_paired([1, 1, 0, 0, 1, 0, 1, 1], [0, 1, 1, 0, 0, 1, 0, 1])
    assert alike[1] - alike[0] < apart[1] - apart[0]  # pairing narrows the interval when the arms answer alike
    with pytest.raises(ValueError, match="same items"):
        newcombe_paired([1.0, 0.0], [1.0])


def fake_comparison():
    """Two arms with hand-set reports: 'lora' learns at 1e-2 only and forgets more there; 'full' learns at both rates."""
    def report(label, lr, seed, val, loss, ratio, right):
        return SimpleNamespace(seed=seed, val_exact_match=val, val_answer_loss=1 - val, pretrain_loss=loss + 0.01 * seed,
                               update_ratio=ratio, update_ratios={"w": ratio}, train_exact_match=1.0,
                               test_right=tuple(right), test_exact_match=sum(right) / len(right),
                               val_right=tuple(i < round(8 * val) for i in range(8)))
    reports = {}
    for seed in (0, 1, 2):
        reports[("lora", 1e-3, seed)] = report("lora", 1e-3, seed, 0.25, 1.0, 0.2, [False] * 8)
        reports[("lora", 1e-2, seed)] = report("lora", 1e-2, seed, 0.875, 4.0, 0.6, [True] * 8)
        reports[("full", 1e-4, seed)] = report("full", 1e-4, seed, 0.875, 0.9, 0.1, [True] * 7 + [False])
        reports[("full", 1e-3, seed)] = report("full", 1e-3, seed, 0.875, 2.0, 0.2, [True] * 8)
    arms = [Arm("lora", "lora-all", (1e-3, 1e-2)), Arm("full", "full", (1e-4, 1e-3))]
    return comparison.Comparison(arms, reports, {"lora": 1e-2, "full": 1e-3}, {})


def test_the_comparison_prints_its_table_verdicts_and_selection():
    c = fake_comparison()
    table = c.table(["lora", "full"], base_em=0.0, base_loss=0.6)
    assert table.splitlines()[1].startswith("lora") and "1.00 [" in table and "0.60" in table  # median ‖ΔW‖/‖W‖
    assert table.splitlines()[0].split()[:3] == ["method", "rate", "seeds"] and table.splitlines()[1].split()[2] == "3"
    assert "base model" in table and table.endswith("outside the grid")  # both chosen rates are at an edge
    assert c.forgetting("lora").mean == pytest.approx(4.01) and c.forgetting("full", 1e-4, seeds=(0, 1)).mean == pytest.approx(0.905)
    assert c.paired_verdict("lora", "full").startswith("lora vs full on test exact match: not resolved")
    assert c.grid("lora", "pretrain_loss") == {1e-3: pytest.approx(1.01), 1e-2: pytest.approx(4.01)}
    selection = c.selection(["lora", "full"], (0, 1, 2))
    assert "0.01: 0.88 / 0.125  <- chosen" in selection and "rates 0.0001, 0.001 within one validation animal" in selection
    grid = c.grid_table(["lora"])
    assert "‖ΔW‖/‖W‖" in grid and len(grid.splitlines()) == 3 and grid.splitlines()[1].split()[:3] == ["lora", "0.001", "3"]
    two = c.grid_table(["lora"], ("pretrain_loss",), seeds=(0, 1)).splitlines()  # the same seeds in every row
    assert two[1].split() == ["lora", "0.001", "2", "1.00"] and two[2].split() == ["lora", "0.01", "2", "4.00"]
    trends = c.rate_trends(["lora", "full"])
    assert trends == "within each method, a larger rate moved the weights farther and forgot more: yes, in every method"
    runaway = dict(c.reports)
    for seed in (0, 1, 2):  # lora at 1e-2 runs away: a huge update, nothing learned, a lower held-out loss than at 1e-3
        runaway[("lora", 1e-2, seed)] = SimpleNamespace(**{**vars(c.reports[("lora", 1e-2, seed)]), "update_ratio": 50.0,
                                                           "val_exact_match": 0.0, "pretrain_loss": 0.5})
    trends = comparison.Comparison(c.arms, runaway, c.chosen_lr, {}).rate_trends(["lora", "full"]).splitlines()
    assert trends == ["diverged (an update more than 10 times the weight, nothing learned): lora at 0.01",
                      "within each method, a larger rate moved the weights farther and forgot more: not in lora"]
    word, line = comparison.rate_ratio_line(c, "lora", "full")
    assert word == "agrees" and "rate is 10 times full's" in line and "that is 5 times" in line
    assert line.endswith(": within a factor of about 3, one step of our grid (a weak test: a coarser match is not possible)")
    word, tie = comparison.rate_ratio_line(c, "lora", "full", seeds=(0, 1, 2))
    assert word == "not resolved"
    tie = tie.splitlines()
    assert len(tie) == 2 and "full's rate 0.0001, within one validation animal" in tie[1] and tie[1].endswith("50 times, outside it")
    assert tie[0].endswith("not resolved by this grid: the rates validation could not tell apart give 5 to 50 times")
    far = comparison.Comparison(c.arms, c.reports, {"lora": 1e-2, "full": 1e-4}, {})  # a ratio of 100
    word, line = comparison.rate_ratio_line(far, "lora", "full")
    assert word == "disagrees" and "off by more than a factor of about 3" in line


def test_forgetting_is_compared_at_matched_learning():
    c = fake_comparison()
    matched = comparison.learning_forgetting(c, ("lora", "full"), (0, 1, 2), min_val_em=0.75)
    assert matched.matched_lr == {"lora": 1e-2, "full": 1e-4}  # lora learned only at 1e-2; full's smallest rate learned
    swapped = dict(c.reports)  # full forgets less at 1e-3 than at 1e-4: the choice must not follow the forgetting
    for seed in (0, 1, 2):
        swapped[("full", 1e-4, seed)] = SimpleNamespace(**{**vars(c.reports[("full", 1e-4, seed)]), "pretrain_loss": 3.0})
    by_validation = comparison.learning_forgetting(comparison.Comparison(c.arms, swapped, c.chosen_lr, {}), ("lora", "full"), (0, 1, 2))
    assert by_validation.matched_lr["full"] == 1e-4 and by_validation.forgetting["full"].mean == pytest.approx(3.0)
    assert matched.resolved and matched.winner() == "full" and "held-out loss at matched learning" in str(matched)
    assert matched.at_grid_edge == {"lora": True, "full": True}  # grids of two rates: every choice is at an edge
    assert str(matched).count("(an edge of its grid: a rate beyond it was not tried)") == 2
    assert c.too_close_to_call("full", (0, 1, 2)) == [1e-4, 1e-3] and c.too_close_to_call("lora", (0, 1, 2)) == [1e-2]
    with pytest.raises(ValueError, match="No rate of 'lora'"):
        comparison.learning_forgetting(c, ("lora", "full"), (0, 1, 2), min_val_em=0.9)


def test_forgetting_can_be_read_at_the_same_step_in_every_run():
    c = fake_comparison()
    for key, rep in c.reports.items():  # each run evaluated after 1 and 2 steps
        bump = 10.0 if key[0] == "full" else 0.0  # at step 2 full forgot far more than lora; its best checkpoints say otherwise
        val = rep.val_exact_match  # learning as at the best checkpoint: the match stays the same
        rep.method, rep.result = key[0], SimpleNamespace(evals=[
            (1, {"val": val, "val_loss": 0.5, "held_out": 1.0}),
            (2, {"val": val, "val_loss": 0.25, "held_out": 2.0 + bump + 0.01 * key[2]})])
    assert c.forgetting("full", 1e-4, step=2).mean == pytest.approx(12.01) and c.forgetting("lora", step=1).mean == 1.0
    assert c.along("lora", "held_out") == {1: 1.0, 2: pytest.approx(2.01)} and c.along("full", "val_loss", 1e-4) == {1: 0.5, 2: 0.25}
    kept = comparison.learning_forgetting(c, ("lora", "full"), (0, 1, 2), min_val_em=0.75)
    common = comparison.learning_forgetting(c, ("lora", "full"), (0, 1, 2), min_val_em=0.75, step=2)
    assert kept.winner() == "full" and common.winner() == "lora" and common.matched_lr == kept.matched_lr  # the match is unchanged
    assert "after 2 steps in every run" in common.verdict and "held-out loss after 2 steps" in str(common)
    fewer = comparison.learning_forgetting(c, ("lora", "full"), (0, 1, 2), min_val_em=0.75, step=2, compare_on=(0, 1))
    assert fewer.matched_lr == common.matched_lr and fewer.forgetting["lora"].mean == pytest.approx(2.005)  # seeds 0 and 1 only
    with pytest.raises(ValueError, match="not after 3"):
        c.forgetting("lora", step=3)
    untracked = SimpleNamespace(**{**vars(c.reports[("lora", 1e-2, 0)]), "method": "lora-all",
                                   "result": SimpleNamespace(evals=[(1, {"val_loss": 0.5})])})
    with pytest.raises(ValueError, match="track_forgetting=True"):
        comparison.evaluation_at(untracked, "held_out", 1)


def test_the_verdict_beside_biderman_follows_the_winner():
    c = fake_comparison()
    matched = comparison.learning_forgetting(c, ("lora", "full"), (0, 1, 2), min_val_em=0.75)
    word, why = matched.against_one_curve("lora")
    assert word == "disagrees" and why.startswith("full forgets less")
    lora_wins = comparison.LearningForgetting(matched.matched_lr, matched.forgetting, "", "lora")
    word, why = lora_wins.against_one_curve("lora")
    assert word == "agrees" and "lora forgets less" in why
    neither = comparison.LearningForgetting(matched.matched_lr, matched.forgetting, "", None)
    assert neither.against_one_curve("lora")[0] == "not resolved"


def test_rates_exact_match_cannot_separate_are_chosen_by_loss_and_named():
    c = fake_comparison()
    for seed in (0, 1, 2):  # lora at 1e-3: 6 of 8 right in two seeds, 7 in one (20 in all), against 1e-2's 7 each (21)
        c.reports[("lora", 1e-3, seed)].val_right = tuple(i < (7 if seed == 0 else 6) for i in range(8))
        c.reports[("lora", 1e-3, seed)].val_answer_loss = 0.05  # and a lower validation loss
    assert c.too_close_to_call("lora", (0, 1, 2)) == [1e-3, 1e-2]  # one right answer fewer in all: under one per seed
    runs = {lr: c.runs("lora", lr) for lr in (1e-3, 1e-2)}
    assert comparison.choose_rate(runs) == 1e-3  # the loss decides among them
    assert "rates 0.001, 0.01 within one validation animal per seed" in c.selection(["lora"], (0, 1, 2))
    line = comparison.rate_ratio_line(c, "lora", "full", seeds=(0, 1, 2))[1].splitlines()
    assert any("lora's rate 0.001, within one validation animal per seed" in part and part.endswith("0.5 times, outside it")
               for part in line)
    for seed in (1, 2):  # now 1e-3 trails by 4 answers over 3 seeds: more than one per seed, so exact match decides
        c.reports[("lora", 1e-3, seed)].val_right = tuple(i < 5 for i in range(8))
    assert c.too_close_to_call("lora", (0, 1, 2)) == [1e-2] and comparison.choose_rate(runs) == 1e-2
    assert "within one validation animal" not in c.selection(["lora"], (0, 1, 2))


def test_choose_arm_applies_the_rates_rule_to_arms_and_breaks_ties_by_order():
    def runs(right, loss):
        return [SimpleNamespace(val_right=tuple(i < right for i in range(8)), val_answer_loss=loss) for _ in range(3)]

    arms = {"LoRA+ 2": runs(7, 0.30), "LoRA+ 16": runs(7, 0.40), "LoRA+ 4": runs(2, 0.10)}
    assert comparison.choose_arm(arms) == "LoRA+ 2"  # 2 and 16 alike on exact match: the lower loss; 4 trails far
    assert comparison.choose_arm({"b": runs(7, 0.2), "a": runs(7, 0.2)}) == "b"  # a tie: the first listed, not "a" < "b"
    arms["LoRA+ 16"] = runs(8, 0.40)  # now 16 leads 2 by 2 answers a seed: exact match decides, whatever the loss
    assert comparison.choose_arm(arms) == "LoRA+ 16"


def test_paired_verdicts_can_stay_on_validation_and_never_print_minus_zero():
    c = fake_comparison()
    assert c.rights("lora", split="val") == [tuple([True] * 7 + [False])] * 3
    assert "on validation exact match" in c.paired_verdict("lora", "full", split="val")
    with pytest.raises(ValueError, match='split must be "test" or "val"'):
        c.rights("lora", split="train")
    assert str(comparison.PairedDifference(-0.001, -0.004, 0.2)) == "+0.00 [+0.00, +0.20]"
    assert str(comparison.PairedDifference(-0.05, -0.21, 0.07)) == "-0.05 [-0.21, +0.07]"
    assert comparison.PairedDifference(0.1, 0.02, 0.2).winner("A", "B") == "A"  # interval above 0
    assert comparison.PairedDifference(-0.1, -0.2, -0.02).winner("A", "B") == "B"
    assert comparison.PairedDifference(-0.05, -0.21, 0.07).winner("A", "B") is None


def test_the_paired_table_gives_one_row_and_verdict_per_comparison():
    c = fake_comparison()
    wrong = SimpleNamespace(**{**vars(c.reports[("full", 1e-3, 0)]), "test_right": (False,) * 8})
    reports = {**c.reports, **{("none", 1e-3, s): SimpleNamespace(**{**vars(wrong), "seed": s}) for s in (0, 1, 2)}}
    c = comparison.Comparison([*c.arms, Arm("none", "full", (1e-3,))], reports, {**c.chosen_lr, "none": 1e-3}, {})
    lines = c.paired_table("lora", ["full", "none"]).splitlines()
    assert lines[0].startswith("lora against") and "difference in test exact match" in lines[0]
    assert lines[1].startswith("full") and lines[1].endswith("not resolved*")  # 8/8 against 8/8: no difference
    assert lines[2].startswith("none") and "+1.00" in lines[2] and lines[2].endswith("lora better*")
    low, high = lines[2].split("  [")[1].split("]")[0].split(", ")
    assert high == "+1.00" and 0.4 < float(low) < 0.8  # all of 8 against none of 8: the width 8 animals leave, not zero
    assert "paired by animal" in lines[3] and lines[4].startswith("* a rate at the edge")
    assert c.paired_winner("lora", "none") == "lora" and c.paired_winner("none", "lora") == "lora"
    assert c.paired_winner("lora", "full") is None


def test_measured_mean_averages_what_measure_kept_per_seed():
    c = fake_comparison()
    measured = {(label, lr, seed): {"top_r": 10 * seed + (lr > 5e-3)} for (label, lr, seed) in c.reports}
    c = comparison.Comparison(c.arms, c.reports, c.chosen_lr, measured)
    seeds = sorted({seed for (label, lr, seed) in c.reports if label == "lora" and lr == 1e-2})
    assert c.measured_mean("lora", "top_r") == pytest.approx(np.mean([10 * s + 1 for s in seeds]))  # the chosen rate, 1e-2
    assert c.measured_mean("lora", "top_r", 1e-2, seeds[:1]) == 10 * seeds[0] + 1
    with pytest.raises(ValueError, match="measure="):
        comparison.Comparison(c.arms, c.reports, c.chosen_lr, {}).measured_mean("lora", "top_r")


def test_measured_mean_averages_per_matrix_dicts_within_a_run_first():
    c = fake_comparison()
    measured = {(label, lr, seed): {"sizes": {"blocks.0.q_proj": seed, "blocks.0.v_proj": 3.0 * seed, "blocks.1.q_proj": seed}}
                for (label, lr, seed) in c.reports}
    c = comparison.Comparison(c.arms, c.reports, c.chosen_lr, measured)
    seeds = sorted({seed for (label, lr, seed) in c.reports if label == "lora" and lr == 1e-2})
    assert c.measured_mean("lora", "sizes") == pytest.approx(np.mean([5 * s / 3 for s in seeds]))  # (s + 3s + s) / 3 per run
    assert c.measured_mean("lora", "sizes", matrices="q_proj") == pytest.approx(np.mean(seeds))
    with pytest.raises(ValueError, match="ends with 'k_proj'"):
        c.measured_mean("lora", "sizes", matrices="k_proj")


def test_matched_learning_pairs_the_closest_rates_and_reads_less_learning_as_one_curve():
    c = fake_comparison()
    reports = dict(c.reports)
    for seed in (0, 1, 2):  # full learns less at its small rate: 0.75 against lora's 0.875, and forgets less there
        reports[("full", 1e-4, seed)] = SimpleNamespace(**{**vars(c.reports[("full", 1e-4, seed)]), "val_exact_match": 0.75})
    c = comparison.Comparison(c.arms, reports, c.chosen_lr, {})
    closest = comparison.learning_forgetting(c, ("lora", "full"), (0, 1, 2), min_val_em=0.75, one_animal=0.125)
    assert closest.matched_lr == {"lora": 1e-2, "full": 1e-3}  # 0.875 against 0.875, not full's smallest rate
    assert closest.learned == {"lora": 0.875, "full": 0.875} and "validation exact match 0.88" in str(closest)
    word, why = closest.against_one_curve("lora")
    assert word == "disagrees" and why.startswith("full forgets less while learning as much on exact match")
    losses = closest.answer_loss
    assert set(losses) == {"lora", "full"} and f", answer loss {losses['lora']:.3f} (on the seeds that matched)" in str(closest)
    assert ("its validation answer loss is lower too" in why) == (losses["full"] < losses["lora"])
    assert comparison.learned_apart(0.125, 0.125) and not comparison.learned_apart(0.1, 0.125)  # one animal per seed apart
    assert comparison.learned_apart(0.01, 0.0) and not comparison.learned_apart(0.0, 0.0)  # without a tolerance, any gap
    grids = ({1e-3: 0.0, 3e-3: 0.875, 1e-2: 23 / 24}, {3e-4: 0.75, 1e-3: 0.875, 3e-3: 13 / 24})  # 05b's section 2a grid
    assert comparison.matched_rates(*grids, 0.75, 1 / 8) == (3e-3, 1e-3)  # two pairs under one animal apart: the smaller rates
    assert comparison.matched_rates(*grids, 0.75, 0.0) == (3e-3, 1e-3) and comparison.matched_rates(*grids, 0.5, 0.3) == (3e-3, 3e-4)
    with pytest.raises(ValueError, match="No rate of 'grid_b' reached mean validation exact match 0.9"):
        comparison.matched_rates(*grids, 0.9)  # grid_a's 23/24 is above the bar, grid_b's best 0.875 is not
    with pytest.raises(ValueError, match="No rate of 'lora' reached"):
        comparison.matched_rates(*grids, 0.9, labels=("full", "lora"))
    assert matching.reached(grids[0], 0.9) == {1e-2: 23 / 24}
    wide = comparison.learning_forgetting(c, ("lora", "full"), (0, 1, 2), min_val_em=0.75, one_animal=0.2)
    assert wide.matched_lr == {"lora": 1e-2, "full": 1e-4}  # both gaps under the tolerance: the smaller rates win
    only_small = comparison.learning_forgetting(  # with full's small rate alone, full learned a whole animal less
        comparison.Comparison([c.arms[0], Arm("full", "full", (1e-4,))], reports, c.chosen_lr, {}), ("lora", "full"), (0, 1, 2),
        min_val_em=0.75, one_animal=0.1)
    assert only_small.winner() == "full" and only_small.against_one_curve("lora") == (
        "not resolved", "full forgets less but also learned less (validation exact match 0.75 vs 0.88), which one shared curve allows")


def test_intruder_counts_are_read_per_rate_per_seed_and_at_matched_size():
    c = fake_comparison()
    measured = {k: {"intruders": (3 + k[2] if k[1] == 1e-2 else 0) if k[0] == "lora" else 0} for k in c.reports}
    c = comparison.Comparison(c.arms, c.reports, c.chosen_lr, measured)
    matched = {"lora": 1e-2, "full": 1e-4}
    counts = comparison.intruder_counts(c, ("lora", "full"), matched, (0, 1, 2), (0, 1, 2))
    assert counts.chosen == {"lora": [3, 4, 5], "full": [0, 0, 0]}
    assert counts.fewer("chosen", level=0.2) == "full" == counts.fewer("matched", level=0.2)
    assert counts.fewer("chosen") is None  # 3 seeds each: chance alone orders them so 1 time in 10, not below 0.05
    assert counts.closest == {"lora": 1e-2, "full": 1e-3}  # lora learned at 1e-2 only (0.6); full's 0.2 is nearer than its 0.1
    assert counts.by_rate["lora"] == {1e-3: 0.0, 1e-2: 4.0} and counts.full_runs == [0] * 6
    assert comparison.IntruderCounts.chance(5) == 1 / 252 and comparison.IntruderCounts.chance(3) == 1 / 20
    text = str(counts)
    assert ("full, every run of its 2 rates (the sweep seeds, and the added seeds where section 2 compares): 0 intruders in 6 runs; "
            "at its largest rate, 0.001, ‖ΔW‖/‖W‖ 0.20") in text
    assert "lora at its matched rate 0.01 0.60" in text
    assert "2 in 20 with 3 seeds each; we call it resolved only below 1 in 20, so 3 seeds cannot resolve it" in text
    assert text.startswith("at every rate, mean over the 3 sweep seeds:")
    assert "closest in size (‖ΔW‖/‖W‖ 0.60 for lora at 0.01, 0.20 for full at 0.001): lora 4.0, full 0.0" in text
    sized = {k: {**m, "qv": {"q": 0.3 if k[0] == "lora" else 0.1, "v": 0.5 if k[0] == "lora" else 0.1}} for k, m in measured.items()}
    by_qv = comparison.intruder_counts(comparison.Comparison(c.arms, c.reports, c.chosen_lr, sized), ("lora", "full"), matched,
                                       (0, 1, 2), (0, 1, 2), size_key="qv")
    assert by_qv.sizes["lora"][1e-2] == pytest.approx(0.4) and by_qv.sizes["full"][1e-3] == pytest.approx(0.1)
    assert "closest in size (mean ‖ΔW‖/‖W‖ of qv 0.40 for lora at 0.01, 0.10 for full" in str(by_qv)
    alike = comparison.Comparison(c.arms, c.reports, c.chosen_lr, {k: {"intruders": 1} for k in c.reports})
    assert comparison.intruder_counts(alike, ("lora", "full"), matched, (0, 1, 2), (0, 1, 2)).fewer("chosen", level=0.2) is None
    with pytest.raises(ValueError, match="reached mean validation exact match 0.9"):
        comparison.intruder_counts(c, ("lora", "full"), matched, (0, 1, 2), (0, 1, 2), min_val_em=0.9)


def test_a_verdict_that_hangs_on_which_pair_was_matched_is_not_resolved():
    c = fake_comparison()
    robust = comparison.learning_forgetting(c, ("lora", "full"), (0, 1, 2), min_val_em=0.75, one_animal=0.125)
    assert robust.matched_lr == {"lora": 1e-2, "full": 1e-4} and robust.winner() == "full"  # the smaller rates win the tie
    assert list(robust.near) == [(1e-2, 1e-3)] and robust.near[(1e-2, 1e-3)][0] == "full"  # the other pair agrees
    assert not robust.pairing_decides and "another close match: lora at 0.01 against full at 0.001: " \
        "full forgets less" in str(robust)
    reports = dict(c.reports)
    for seed in (0, 1, 2):  # full at its larger rate now forgets more than lora: the other pair names another winner
        reports[("full", 1e-3, seed)] = SimpleNamespace(**{**vars(c.reports[("full", 1e-3, seed)]), "pretrain_loss": 5.0})
    edge = comparison.learning_forgetting(comparison.Comparison(c.arms, reports, c.chosen_lr, {}), ("lora", "full"), (0, 1, 2),
                                          min_val_em=0.75, one_animal=0.125)
    assert edge.matched_lr == robust.matched_lr and edge.winner() is None and edge.pairing_decides
    assert edge.verdict.endswith("not resolved: at the matched pair full forgets less, but pairs of rates at most one validation "
                                 "animal per seed apart give different answers")
    assert "lora forgets less" in str(edge)
    assert edge.against_one_curve("lora") == ("not resolved", "pairs of rates at most one validation animal per seed apart give "
                                                              "different answers: the grid is too coarse to tell")
    exact = comparison.learning_forgetting(comparison.Comparison(c.arms, reports, c.chosen_lr, {}), ("lora", "full"), (0, 1, 2),
                                           min_val_em=0.75)  # without a tolerance only equal means are near
    assert exact.near and not comparison.learning_forgetting(c, ("lora", "full"), (0, 1, 2), min_val_em=0.75).pairing_decides


def test_the_share_of_forgetting_won_back_is_an_interval_over_seeds():
    from lora_edu.paper.comparison import Mitigation

    trained, removed = {0: 4.0, 1: 3.0, 2: 5.0}, {0: 2.5, 1: 2.0, 2: 3.0}  # held-out loss as trained, and with λ = 0
    scaled = {**{(s, 1.0): (loss, 1.0) for s, loss in trained.items()}, **{(s, 0.0): (loss, 0.0) for s, loss in removed.items()}}
    mitigation = Mitigation(1e-2, (0, 1, 2), (1.0, 0.0), scaled, {}, {})
    share = mitigation.won_back(0.0, base_loss=1.0)  # fine-tuning added 3, 2 and 4; removing the intruders won back 1.5, 1, 2
    assert share.values == pytest.approx((0.5, 0.5, 0.5)) and share.half_width == pytest.approx(0.0, abs=1e-12)
    scaled[(1, 0.0)] = (2.5, 0.0)  # seed 1 now wins back a quarter
    share = Mitigation(1e-2, (0, 1, 2), (1.0, 0.0), scaled, {}, {}).won_back(0.0, base_loss=1.0)
    assert share.mean == pytest.approx(1.25 / 3) and share.low < 0.25 < 0.5 < share.high
    control = {(s, 0.0): (loss + 1.0, 1.0) for s, loss in removed.items()}  # the even shrink wins back 1 less per seed
    even = Mitigation(1e-2, (0, 1, 2), (1.0, 0.0), scaled, control, {}).won_back(0.0, base_loss=1.0, control=True)
    assert even.values == pytest.approx((0.5 / 3, 0.0, 1.0 / 4))


def fake_mitigation(task_at_75=(0.9, 0.95, 0.85, 0.9, 0.9), control_task_at_75=0.95):
    """Five seeds trained to held-out loss 4 (base 0.6) and exact match 1. Scaling the intruders to 0.75 wins back
    0.5 to 0.6, the even control at the same distance 0.3 to 0.4; at 0.5 the task drops to 0.4 (control 0.9); at 0
    it is gone."""
    from lora_edu.paper.comparison import Mitigation

    seeds = (0, 1, 2, 3, 4)
    scaled = {(s, 1.0): (4.0, 1.0) for s in seeds}
    scaled |= {(s, 0.75): (3.5 - 0.02 * s, task_at_75[s]) for s in seeds}
    scaled |= {(s, 0.5): (3.0 - 0.02 * s, 0.4) for s in seeds} | {(s, 0.0): (2.7 - 0.02 * s, 0.0) for s in seeds}
    control = {(s, 0.75): (3.7 - 0.01 * s, control_task_at_75) for s in seeds}
    control |= {(s, 0.5): (3.5 - 0.01 * s, 0.9) for s in seeds} | {(s, 0.0): (3.5, 0.9) for s in seeds}
    return Mitigation(1e-2, seeds, (1.0, 0.75, 0.5, 0.0), scaled, control, {})


def test_the_intruder_claims_are_read_from_the_mitigation_with_rules_fixed_before_looking():
    from lora_edu.paper.comparison import MITIGATION_CLAIMS

    noisy = fake_mitigation()  # the task's cost at 0.75 is -0.10 [-0.19, -0.01]: not pinned within 1/16
    claim, word, evidence = noisy.fit_finding(0.6, test_animals=16)
    assert claim == MITIGATION_CLAIMS[0]
    assert word.startswith("partly: at PEFT's default λ = 0.75 the held-out loss fell; the seeds cannot pin the task's cost "
                           "to within one test animal (-0.10 [")
    assert evidence.startswith("at λ = 0.75, changes paired by seed (5 seeds): held-out loss -0.54 [")
    assert "it wins back 16% [" in evidence and "(the even control at the same distance: 9% [" in evidence
    assert noisy.where_located(16)[:2] == ("agrees", "not resolved")  # won back more than the control, the task not pinned
    claim, word, evidence = noisy.located_finding(0.6, 16, width=64)
    assert claim == MITIGATION_CLAIMS[1] and word.startswith("not resolved at λ = 0.75 and d = 64: 5 seeds and 16 test animals")
    assert evidence.startswith("They won back more of the old text than the even control did") and "(under half)" in evidence
    per_task = 0.5 / 0.5  # at λ = 0.5: 0.5 of held-out loss won back against the control, for 0.5 of exact match lost
    shortfall = -noisy.change(0.75, "test exact match", against="control").low
    assert per_task * shortfall < 0.22  # the lost task cannot explain the whole edge even at the interval's far end
    assert ": even there part of the edge would remain, but that exchange rate is borrowed from another λ; the trade-off line" in evidence
    assert noisy.in_short(16).startswith("scaling the intruders down at λ = 0.75, against the even control at the same distance "
                                         "from the base: it won back more of the old text than the control, but the seeds cannot "
                                         "show it kept as much of the task")
    assert noisy.second_looks(0.6)[0].startswith("won back 16% of the rise in held-out loss, the even control 9% (held-out loss, "
                                                 "scaled minus control, paired by seed: -0.22 [")
    assert noisy.second_looks(0.6)[1] == "removing every intruder (λ = 0) won back 39%, with test exact match 0.00"
    kept = fake_mitigation(task_at_75=(1.0,) * 5, control_task_at_75=1.0)  # no cost to the task at all
    assert kept.fit_finding(0.6, 16)[1].startswith("agrees: at PEFT's default λ = 0.75 the held-out loss fell; the task stayed "
                                                   "within one test animal")
    assert kept.where_located(16)[:2] == ("agrees", "partly")
    assert "(where the forgetting lies: partly)" in kept.in_short(16)
    assert noisy.won_back_line(0.6) == ("at 0.01, fine-tuning raised the held-out loss from 0.60 to 4.00; at λ = 0.75 the scaled "
                                        "adapter won back 16% of that rise, the even control 9%")
    assert noisy.edge_line().startswith("at 0.01: -0.22 [") and noisy.edge_line().endswith("], the scaled adapter forgot less")
    level = fake_mitigation()
    level.control.update({(s, 0.75): level.scaled[(s, 0.75)] for s in level.seeds})  # the control exactly as far: no edge
    assert level.edge_line() == "at 0.01: +0.00 [+0.00, +0.00], not told apart"
    assert noisy.tradeoff_line(16) == ("on the means (not a test): no even shrink further toward the base kept the task within "
                                       "one test animal of the scaled adapter at λ = 0.75 and forgot less")  # every control forgot more
    further = fake_mitigation()
    further.control.update({(s, k): (3.0, further.means(0.75)[1] - 0.05) for s in further.seeds for k in (0.5, 0.0)})  # less forgotten,
    assert further.tradeoff_line(16) == ("on the means (not a test): an even shrink further toward the base kept the task within "
                                         "one test animal of the scaled adapter at λ = 0.75 and forgot less")  # within 1/16 of the task
    assert further.tradeoff_line(32).startswith("on the means (not a test): no even shrink")  # 0.05 is more than 1/32
    with pytest.raises(ValueError, match="these were not built"):
        fake_mitigation().__class__(1e-2, (0,), (1.0, 0.75), {}, {}, {}).where_located(16)


def fake_loraplus_study(fresh_ratio_16: float = 1.6):
    """Plain LoRA and LoRA+ at ratios 2 and 16: on validation 2 ties LoRA and 16 trails on loss; on ten fresh seeds
    LoRA+ 16's test loss is ``fresh_ratio_16`` times LoRA's (seed by seed, with shared seed luck)."""
    from lora_edu.paper.loraplus import LoRAPlusStudy

    rng = np.random.default_rng(0)

    def report(seed, val_loss, right, test_scale, curve):
        losses = tuple(test_scale * (1 + 0.1 * a) for a in range(16))
        return SimpleNamespace(seed=seed, val_right=tuple(i < right for i in range(8)), val_exact_match=right / 8,
                               val_answer_loss=val_loss, test_right=tuple(i < 10 for i in range(16)),
                               test_answer_losses=losses, test_answer_loss=float(np.mean(losses)),
                               result=SimpleNamespace(evals=[(step, {"val_loss": v}) for step, v in zip((16, 32, 48), curve, strict=True)]))

    sweep = {}
    for seed in (0, 1, 2):
        for label, loss in (("LoRA", 0.30), ("LoRA+ 2", 0.29), ("LoRA+ 16", 0.60)):
            for lr in (1e-2, 3e-2):
                sweep[(label, lr, seed)] = report(seed, loss + 0.01 * seed + (0.05 if lr == 1e-2 else 0), 6, 1.0, (1.0, 0.5, 0.3))
    arms = [Arm(label, "lora", (1e-2, 3e-2)) for label in ("LoRA", "LoRA+ 2", "LoRA+ 16")]
    chosen = {label: 3e-2 for label in ("LoRA", "LoRA+ 2", "LoRA+ 16")}
    study = LoRAPlusStudy(comparison.Comparison(arms, sweep, chosen, {}), (2, 16), (0, 1, 2), "test answer loss within 48 steps")
    fresh = {}
    for seed in range(3, 13):
        luck = float(rng.lognormal(0, 0.3))
        fresh[("LoRA", 3e-2, seed)] = report(seed, 0.3, 6, luck, (1.0, 0.4, 0.25))
        fresh[("LoRA+ 2", 3e-2, seed)] = report(seed, 0.3, 6, luck * 1.01 * float(rng.lognormal(0, 0.1)), (1.0, 0.5, 0.25))
        fresh[("LoRA+ 16", 3e-2, seed)] = report(seed, 0.3, 6, luck * fresh_ratio_16, (1.0, 0.6, 0.4 if seed < 9 else 0.2))
    return study, comparison.Comparison(arms, fresh, chosen, {})


def test_the_loraplus_study_chooses_on_validation_and_compares_on_fresh_seeds_paired():
    study, fresh = fake_loraplus_study()
    assert study.labels == ["LoRA", "LoRA+ 2", "LoRA+ 16"]
    assert study.chosen == "LoRA+ 2" and study.chosen_with_references == "LoRA+ 2"  # exact match ties: the lower loss
    assert study.compared == ["LoRA+ 2", "LoRA+ 16"]  # validation's choice, then the paper's default
    assert study.too_close_to_tell() == ["LoRA", "LoRA+ 2"]  # 16's validation loss is far above
    table = study.validation_table()
    assert "validation's choice of LoRA+ (a ratio above 1): LoRA+ 2" in table and table.count("0.03*") == 3  # top of each grid
    with pytest.raises(ValueError, match="on_fresh_seeds"):
        study.verdicts()
    study.fresh = fresh
    lines = study.verdicts()
    assert lines[0].startswith("LoRA+ 2 vs LoRA on test answer loss within 48 steps: not resolved (loss ratio LoRA+ 2 / LoRA 1.01")
    assert lines[2].startswith("a further look, at the paper's default: LoRA beats LoRA+ 16")  # paired: seed luck cancels
    assert "the interval holds that" in study.winners_curse()
    report = study.fresh_report().splitlines()
    assert report[0] == "on 10 fresh seeds, 3 to 12, each arm at its chosen rate:" and report[1:5] == lines
    assert report[5:] == [study.winners_curse()]
    assert "near its floor" not in table  # exact match chose here
    study.choose_by = "answer loss"
    assert "exact match is shown beside it, near its floor: 18 to 18 right answers of 24 at the chosen rates" in study.validation_table()
    assert study.curves("LoRA+ 16")[48] == [0.4] * 6 + [0.2] * 4
    assert study.target() == pytest.approx(0.3)  # plain LoRA's sweep runs at their last step: fixed before the fresh seeds
    steps = study.steps_to_target().splitlines()
    assert steps[1].split() == ["LoRA", "median", "48", "steps", "(the", "lower", "middle", "seed", "in", "order,", "number", "5", "of",
                                "10),", "10", "of", "10", "seeds", "got", "there"]
    assert ("LoRA+ 16  median more than 48 steps (the lower middle seed in order, number 5 of 10), 4 of 10 seeds got "
            "there") in steps[3]  # most never got there: the slowest
    assert steps[0].startswith("steps to reach validation answer loss 0.300, plain LoRA's level at the end of its sweep runs")
    assert steps[5] == "  LoRA+ 2   1.00 [1.00, 1.00]: not told apart from plain LoRA"  # every seed of both reached it at step 48
    assert study.steps_ratio("LoRA+ 16", 0.32, past=64)[0] == pytest.approx(64 / 48)  # 6 of 10 seeds count as step 64
    ratio, low, high = study.steps_ratio("LoRA", 0.32, past=64)
    assert ratio == low == high == 1.0
    assert "one evaluation past the end" in steps[4] and steps[6].startswith("  LoRA+ 16  at least 1.33 [")
    assert steps[6].endswith("(its median seed never got there: a lower bound)")
    assert study.in_short(64) == ("In short, at d = 64: validation preferred LoRA+ 2, and on the fresh seeds LoRA+ 2 was not "
                                  f"shown to learn faster than plain LoRA (its test answer loss {study.loss_ratio('LoRA+ 2')} "
                                  "times plain LoRA's); the paper's ratio 16 took at least 1.33 [1.00, 1.33] times plain LoRA's steps "
                                  "(not told apart; a further look). The abstract's best case, about 2 times as fast (a step "
                                  "ratio of 0.5), lies below every arm's interval: no ratio came near it here (steps over plain "
                                  "LoRA's: LoRA+ 2 [1.00, 1.00], LoRA+ 16 [1.00, 1.33]).")
    table = study.fresh_table().splitlines()
    assert table[0] == "on 10 fresh seeds (3 to 12), each arm at its chosen rate of A; LoRA+ over plain LoRA, below 1 = LoRA+ better:"
    assert "1 (the reference)" in table[2] and table[2].startswith("LoRA ")
    assert table[3].startswith("LoRA+ 2") and str(study.loss_ratio("LoRA+ 2")) in table[3] and table[3].endswith("1.00 [1.00, 1.00]")
    assert table[4].startswith("LoRA+ 16") and "1.33 [1.00, 1.33]" in table[4] and len(table) == 5
    claim, word, evidence = study.finding(64)
    assert claim.startswith("Hayou et al. 2024") and word.startswith("not resolved on answer loss within 48 steps")
    assert "could not tell the ratios apart" not in word and word.endswith(
        "d = 64; a further look: the paper's ratio 16 took at least 1.33 [1.00, 1.33] times plain LoRA's steps (not told apart)")
    assert evidence[-2] == "16 test animals, 10 fresh seeds paired by seed"
    assert evidence[4].startswith("a further look at speed, the steps to reach validation answer loss 0.300: LoRA+ 2 took 1.00")


def test_the_loraplus_study_also_runs_validations_overall_choice_when_b_should_be_slower():
    from lora_edu.paper.loraplus import LoRAPlusStudy

    study, _ = fake_loraplus_study()
    sweep = dict(study.sweep.reports)
    for (label, lr, seed), run in list(sweep.items()):
        if label == "LoRA":  # a ratio below 1 that validation prefers to every other
            sweep[("LoRA+ 0.5", lr, seed)] = SimpleNamespace(**{**vars(run), "val_answer_loss": run.val_answer_loss - 0.1})
    arms = [*study.sweep.arms, Arm("LoRA+ 0.5", "lora", (1e-2, 3e-2))]
    half = LoRAPlusStudy(comparison.Comparison(arms, sweep, {a.label: 3e-2 for a in arms}, {}), (0.5, 2, 16), (0, 1, 2), "x")
    assert half.chosen == "LoRA+ 2" and half.chosen_with_references == "LoRA+ 0.5"
    assert half.compared == ["LoRA+ 2", "LoRA+ 16", "LoRA+ 0.5"]
    assert half.lead("LoRA+ 2") == "" and half.lead("LoRA+ 16").startswith("a further look, at the paper's default")
    assert half.lead("LoRA+ 0.5") == "a further look, at validation's choice among every ratio: "


def test_a_loraplus_study_needs_every_arm_named_by_its_ratio():
    from lora_edu.paper.loraplus import LoRAPlusStudy, arm_label, steps_to_reach

    study, _ = fake_loraplus_study()
    with pytest.raises(ValueError, match="arm_label"):
        LoRAPlusStudy(study.sweep, (2, 4), (0, 1, 2), "x")
    assert arm_label(1) == "LoRA" and arm_label(0.5) == "LoRA+ 0.5" and arm_label(16.0) == "LoRA+ 16"
    run = study.sweep.runs("LoRA")[0]
    assert steps_to_reach(run, 0.5) == 32 and steps_to_reach(run, 0.1) is None


def test_validation_can_choose_by_the_answer_loss_alone():
    def runs(right, loss):
        return [SimpleNamespace(val_right=tuple(i < right for i in range(8)), val_answer_loss=loss) for _ in range(3)]

    rates = {1e-3: runs(3, 0.20), 1e-2: runs(6, 0.30)}  # exact match prefers 1e-2 by far; the loss prefers 1e-3
    assert comparison.choose_rate(rates) == 1e-2 and comparison.choose_rate(rates, by="answer loss") == 1e-3
    arms = {"LoRA": runs(6, 0.30), "LoRA+ 2": runs(1, 0.25)}
    assert comparison.choose_arm(arms) == "LoRA" and comparison.choose_arm(arms, by="answer loss") == "LoRA+ 2"
    with pytest.raises(ValueError, match="exact match first, or the answer loss alone"):
        comparison.choose_rate(rates, by="accuracy")
    study, _ = fake_loraplus_study()
    study.choose_by = "answer loss"
    assert study.chosen == "LoRA+ 2"  # the lowest validation loss among the ratios above 1
    with pytest.raises(ValueError, match="choose_by must be one of"):
        compare_methods(None, None, "json", [], (0,), (0,), choose_by="loss")


def test_the_nf4_base_report_reads_a_tie_claim_and_refuses_unpaired_runs():
    from types import SimpleNamespace

    from lora_edu.paper.qlora import nf4_base_report

    def run(right, loss):
        return SimpleNamespace(test_right=tuple(right), test_exact_match=sum(right) / len(right),
                               test_answer_losses=tuple(loss for _ in right))

    both = [True] * 15 + [False]
    text = nf4_base_report([run(both, 0.11), run(both, 0.10), run(both, 0.12)],
                           [run(both, 0.10), run(both, 0.11), run(both, 0.11)], 16)
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].startswith("NF4 base vs fp32 base on test exact match: not resolved")
    assert "3 seeds: not resolved; the NF4 base scored +0.00" in lines[2] and "not evidence for it" in lines[2]
    assert "(45 of 48 answers on the fp32 base)" in lines[3]
    worse = nf4_base_report([run([False] * 16, 2.0)] * 3, [run([True] * 16, 0.1)] * 3, 16).splitlines()
    assert "3 seeds: disagrees: the fp32 base resolved better" in worse[2] and worse[3].endswith("the fp32 base resolved better")
    with pytest.raises(ValueError, match="same seeds"):
        nf4_base_report([run(both, 0.1)], [], 16)
