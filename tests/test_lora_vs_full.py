"""Notebook 05b's comparison, kept on disk for 05c: stored once, read back equal, never overwritten, retrained when
anything it depends on changes."""

import json
import math

import pytest
import torch

from lora_edu.gpt.finetune import finetune
from lora_edu.paper import lora_vs_full as store
from lora_edu.paper.comparison import Arm, Comparison
from lora_edu.paper.lora_vs_full import load_comparison, measure_run, qv_names, save_comparison


@pytest.fixture(scope="module")
def two_runs(tiny):
    """A comparison of two real (short) runs, with what 05c measures of each."""
    base, world = tiny
    reports, measured = {}, {}
    for method, lr in (("lora-all", 1e-2), ("full", 1e-3)):
        model, report = finetune(base, world, "json", method, lr=lr, seed=0, steps=3, batch_size=4, progress=False)
        reports[(method, lr, 0)] = report
        measured[(method, lr, 0)] = measure_run(base, world, model)
    arms = [Arm("lora-all", "lora-all", (1e-2,), headline=True), Arm("full", "full", (1e-3,), {"replay": 1.0})]
    return Comparison(arms, reports, {"lora-all": 1e-2, "full": 1e-3}, measured)


def test_a_stored_comparison_reads_back_equal_and_is_never_overwritten(two_runs, tmp_path):
    path = save_comparison(two_runs, tmp_path / "runs.json")
    back = load_comparison(path)
    assert back == two_runs  # reports (with their training curves), measurements, arms and chosen rates, exactly
    assert back.runs("lora-all")[0].result.evals == two_runs.runs("lora-all")[0].result.evals
    assert back.measured[("full", 1e-3, 0)]["facts"][("home", True)] == two_runs.measured[("full", 1e-3, 0)]["facts"][("home", True)]
    assert back.mean("full", "pretrain_loss") == two_runs.mean("full", "pretrain_loss")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="delete it first"):
        save_comparison(back, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["runs.json"]  # no temporary file left


def test_what_is_not_a_stored_comparison_is_refused_clearly(two_runs, tmp_path):
    other = tmp_path / "notes.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a comparison written by lora_edu"):
        load_comparison(other)
    odd = Comparison(two_runs.arms, two_runs.reports, two_runs.chosen_lr, {("full", 1e-3, 0): torch.zeros(2)})
    with pytest.raises(TypeError, match="measure\\(\\) should return numbers"):
        save_comparison(odd, tmp_path / "odd.json")
    assert not (tmp_path / "odd.json").exists()


def test_measure_run_counts_intruders_in_every_wq_and_wv(tiny, two_runs):
    base, _ = tiny
    names = qv_names(base)
    assert len(names) == 2 * base.config.n_layer and names[0] == "blocks.0.attn.q_proj"
    lora, full = two_runs.measured[("lora-all", 1e-2, 0)], two_runs.measured[("full", 1e-3, 0)]
    assert set(lora["qv_sizes"]) == set(names) and all(v > 0 for v in lora["qv_sizes"].values())
    assert 0 <= lora["intruders"] <= 10 * len(names) and full["top_r"] > 0
    assert all(len(v) == 10 and all(0 <= s <= 1 + 1e-6 for s in v) for v in lora["qv_similarity"].values())
    assert lora["intruders"] == sum(s < 0.5 for v in lora["qv_similarity"].values() for s in v)
    assert all(sum(x > 1e-6 for x in v) <= 8 for v in lora["qv_spectra"].values())  # a rank-8 update: at most 8 above zero
    assert all(sum(x > 1e-6 for x in v) > 8 for v in full["qv_spectra"].values())  # full fine-tuning: full rank
    assert set(lora["facts"]) == {(a, among) for a in ("home", "food") for among in (False, True)}
    assert all(len(v) == len(tiny[1].test_animals) for v in lora["facts"].values())


def test_lora_vs_full_trains_once_and_loads_after(tiny, two_runs, tmp_path, monkeypatch, capsys):
    base, world = tiny
    monkeypatch.setenv("LORA_EDU_CACHE", str(tmp_path))
    calls = []

    def fake_compare(base, world, task, arms, *args, **options):
        calls.append([a.label for a in arms])
        if arms[0].label == "control":
            return Comparison(list(arms), {}, {"control": 1e-3}, {})
        return Comparison(list(two_runs.arms), dict(two_runs.reports), dict(two_runs.chosen_lr), dict(two_runs.measured))

    monkeypatch.setattr(store, "compare_methods", fake_compare)
    more = []
    monkeypatch.setattr(store, "more_seeds", lambda comparison, base, world, task, rates, seeds, **options: more.append(rates))
    monkeypatch.setattr(store, "learned_rates", lambda comparison, steps: [])  # tested below
    run = {"steps": 3, "batch_size": 4}
    first = store.lora_vs_full(base, world, run, show_progress=False)
    assert len(calls) == 2 and calls[1] == ["control"]  # the methods, then the control
    assert more == [[]]  # then more seeds where a compared method learned (none here)
    second = store.lora_vs_full(base, world, run, show_progress=False)
    assert len(calls) == 2 and second == first and "Loaded the 2 fine-tunes that an earlier run" in capsys.readouterr().out
    store.lora_vs_full(base, world, {"steps": 4, "batch_size": 4}, show_progress=False)  # other settings: trained anew
    assert len(calls) == 4 and len(list((tmp_path / "runs").glob("lora-vs-full-*.json"))) == 2
    threads, before = torch.get_num_threads(), store.fingerprint(base, run)
    try:
        torch.set_num_threads(threads + 1)  # other kernels or threads may round differently: no reuse
        assert store.fingerprint(base, run) != before
    finally:
        torch.set_num_threads(threads)
    assert store.fingerprint(base, run) == before


def test_the_rates_that_learned_get_more_seeds(two_runs):
    from types import SimpleNamespace

    assert store.COMPARED == ("lora-all", "full", "full-linear")
    assert store.learned_rates(two_runs, 3) == []  # three steps teach nothing
    learned = {key: SimpleNamespace(**{**vars(r), "result": SimpleNamespace(evals=[(3, {"val": 0.875 if key[0] == "full" else 0.5})])})
               for key, r in two_runs.reports.items()}
    c = Comparison(two_runs.arms, learned, two_runs.chosen_lr, two_runs.measured)
    assert store.learned_rates(c, 3) == [("full", 1e-3)]  # at least 0.75 after the last step, on the sweep seeds


def test_the_fact_probe_pairs_full_and_lora_all_by_animal(tiny, two_runs):
    from types import SimpleNamespace

    from lora_edu.paper.forgetting import fact_probe, fact_table, facts_kept

    base, world = tiny
    animals = len(world.test_animals)

    def facts(kept):  # every probe: the first `kept` test animals keep both facts
        return {"facts": {(a, among): [i < kept for i in range(animals)] for a in ("home", "food") for among in (False, True)}}

    def runs(right):
        return SimpleNamespace(seed=0, val_right=tuple(i < right for i in range(8)), val_answer_loss=0.1)

    reports, measured = {}, {}
    for seed in (0, 1, 2):
        for key, kept, right in ((("full", 1e-3), animals, 8), (("lora-all", 1e-2), 0, 8), (("lora-all", 3e-3), animals - 1, 8)):
            reports[(*key, seed)] = runs(right)
            measured[(*key, seed)] = facts(kept)
    arms = [Arm("full", "full", (1e-3,)), Arm("lora-all", "lora-all", (3e-3, 1e-2))]
    c = Comparison(arms, reports, {"full": 1e-3, "lora-all": 1e-2}, measured)
    assert facts_kept(c, "lora-all", 3e-3) == [[1.0] * (animals - 1) + [0.0]] * 3
    probe = fact_probe(c, {"full": 1e-3, "lora-all": 3e-3})  # matched: full keeps one animal more, 3 seeds alike
    assert probe.matched_word == "not resolved" and probe.matched.mean == pytest.approx(1 / animals)
    assert probe.chosen.winner("full", "lora-all") == "full" and probe.chosen.mean == pytest.approx(1.0)
    assert sorted(probe.tied) == [3e-3, 1e-2]  # validation could not tell lora-all's two rates apart ...
    assert probe.chosen_word == "not resolved (it hangs on a tie-break)"  # ... and they give different answers
    text = str(probe).splitlines()
    assert text[0].startswith("facts kept (among the answers, homes and foods), at the matched rates: full vs lora-all")
    assert text[-1].startswith("  with lora-all at 0.003 instead (validation could not tell it from 0.01): ")
    rows = probe.findings()
    assert rows["learning-forgetting curve"][0].endswith("as the paper's benchmarks do, not resolved")
    assert rows["forgets less than full"][0] == "on the fact probe against full, not resolved (it hangs on a tie-break)"
    assert rows["forgets less than full"][1].endswith(f"could not tell apart: 0.003 {probe.tied[3e-3]}, 0.01 {probe.tied[1e-2]}")
    table = fact_table(base, world, c, {"full": 1e-3, "lora-all": 1e-2}).splitlines()
    assert table[0].split() == ["any", "word:", "homes", "foods", "among", "the", "answers:", "homes", "foods"]
    assert table[2].split() == ["full", "at", "0.001", "1.00", "1.00", "1.00", "1.00"]
    assert table[3].split() == ["lora-all", "at", "0.01", "0.00", "0.00", "0.00", "0.00"]
    assert table[1].startswith("base model")


def test_the_held_out_loss_splits_into_the_format_and_the_rest(tiny):
    from lora_edu.gpt.evaluate import format_token_ids, lm_loss, lm_loss_parts
    from lora_edu.gpt.pretrain import pretraining_eval_rows

    base, world = tiny
    ids = format_token_ids(world)
    assert {world.tokenizer.decode([i]) for i in ids} >= {"{", "}", '"', "animal", "home", "food"}  # braces, quotes, keys
    rows = pretraining_eval_rows(world, base.config.n_ctx, "facts")
    total, spent = lm_loss_parts(base, rows, ids, world.tokenizer.pad_id)
    assert total == pytest.approx(lm_loss(base, rows, world.tokenizer.pad_id), rel=1e-5)  # the same loss as lm_loss
    assert 0 <= spent < 0.05 * total  # the base model hardly expects JSON in a plain sentence
    class Leaky(torch.nn.Module):  # the base model with every JSON token's logit raised: the format leaks in
        def __init__(self):
            super().__init__()
            self.inner = base

        def forward(self, x):
            logits, loss = self.inner(x)
            return logits + 3.0 * torch.isin(torch.arange(logits.shape[-1]), torch.tensor(ids)), loss

    leaky_total, leaky_spent = lm_loss_parts(Leaky(), rows, ids, world.tokenizer.pad_id)
    assert leaky_spent > 5 * spent  # more probability on the format ...
    assert leaky_total - leaky_spent == pytest.approx(total - spent, rel=1e-5)  # ... and the guess among the other words unchanged
    with pytest.raises(ValueError, match="among token_ids"):
        lm_loss_parts(base, rows, sorted({int(t) for t in rows[0, 1:5]}), world.tokenizer.pad_id)


def test_the_format_table_gives_the_format_share_of_each_rise():
    from lora_edu.paper.forgetting import fact_line_losses, format_share, format_table

    measured = {("lora-all", 1e-2, s): {"held_out_parts": {"facts": 3.0 + s}, "held_out_format": 1.5 + s} for s in (0, 1)}
    c = Comparison([Arm("lora-all", "lora-all", (1e-2,))], {}, {"lora-all": 1e-2}, measured)
    assert fact_line_losses(c, "lora-all", 1e-2) == [(3.0, 1.5), (4.0, 2.5)]
    assert format_share(c, (1.0, 0.0), "lora-all", 1e-2) == pytest.approx(2.0 / 2.5)  # mean 3.5 and 2.0 against 1.0 and 0.0
    table = format_table(c, (1.0, 0.0), [("lora-all", 1e-2)]).splitlines()
    assert table[1].split() == ["base", "model", "1.000", "0.000", "1.000"]
    assert table[2].split() == ["lora-all", "at", "0.01", "3.500", "2.000", "1.500", "80%"]
    assert table[3] == "the format is most of every rise over the base model: lora-all at 0.01 80%"
    measured.update({("full", 1e-3, s): {"held_out_parts": {"facts": 3.0}, "held_out_format": 0.5} for s in (0, 1)})
    both = Comparison([Arm("lora-all", "lora-all", (1e-2,)), Arm("full", "full", (1e-3,))], {}, {"lora-all": 1e-2, "full": 1e-3}, measured)
    mixed = format_table(both, (1.0, 0.0), [("lora-all", 1e-2), ("full", 1e-3)]).splitlines()[-1]
    assert mixed == "the format is most of the rise over the base model for lora-all at 0.01 80%; under half for full at 0.001 25%"
    assert format_table(both, (1.0, 0.0), [("full", 1e-3)]).splitlines()[-1] == ("the format is under half of every rise over the "
                                                                                "base model: full at 0.001 25%")
    assert math.isnan(format_share(c, (5.0, 0.0), "lora-all", 1e-2))  # no rise, no share


def test_without_the_format_full_and_lora_all_are_compared_seed_by_seed():
    from lora_edu.paper.forgetting import format_free

    measured = {("lora-all", 1e-2, s): {"held_out_parts": {"facts": 5.0 + 0.1 * s}, "held_out_format": 1.0} for s in range(3)}
    measured |= {("full", 1e-3, s): {"held_out_parts": {"facts": 2.0 + 0.1 * s}, "held_out_format": 0.5} for s in range(3)}
    c = Comparison([Arm("lora-all", "lora-all", (1e-2,)), Arm("full", "full", (1e-3,))], {}, {"lora-all": 1e-2, "full": 1e-3}, measured)
    line, word = format_free(c, {"full": 1e-3, "lora-all": 1e-2}, "chosen")
    assert line.startswith("full beats lora-all on the fact lines' loss without the format, at the chosen rates, each run's kept "
                           "checkpoint (1.600 ± ")
    assert word == "disagrees"  # the paper's side is lora-all forgetting less
    same = {key: {"held_out_parts": {"facts": 2.0 + 0.1 * key[2]}, "held_out_format": 0.5} for key in measured}
    line, word = format_free(Comparison(c.arms, {}, c.chosen_lr, same), {"full": 1e-3, "lora-all": 1e-2}, "matched")
    assert word == "not resolved" and "at the matched rates" in line


def test_the_longer_budget_reads_learning_and_forgetting_after_the_last_step():
    from types import SimpleNamespace

    from lora_edu.paper.lora_vs_full import LongerBudget

    def report(seed, steps, val, val_loss, held_out, moved):  # one run, its last evaluation after ``steps`` steps
        evals = [(steps // 2, {"val": 0.0, "val_loss": 1.0, "held_out": 0.5}),
                 (steps, {"val": val, "val_loss": val_loss + 0.01 * seed, "held_out": held_out + 0.02 * seed})]
        return SimpleNamespace(seed=seed, update_ratio=moved, result=SimpleNamespace(evals=evals))

    def budget(long_val, long_loss, long_held):
        full = {("full", 1e-3, s): report(s, 200, 0.9, 0.02, 1.9, 0.15) for s in range(5)}
        longer = {("lora-all, 3x steps", 1e-3, s): report(s, 600, long_val, long_loss, long_held, 0.28) for s in range(5)}
        return LongerBudget(Comparison([Arm("full", "full", (1e-3,))], full, {"full": 1e-3}, {}),
                            Comparison([Arm("lora-all, 3x steps", "lora-all", (1e-3,))], longer, {"lora-all, 3x steps": 1e-3}, {}),
                            "lora-all, 3x steps", 1e-3, 200)

    same_forgetting = budget(0.8, 0.15, 1.9)  # learned less, forgot as much
    assert same_forgetting.long_steps == 600 and same_forgetting.seeds == [0, 1, 2, 3, 4] and same_forgetting.learned
    assert same_forgetting.at_end("full", "held_out").mean == pytest.approx(1.94)  # after step 200, not step 100
    assert same_forgetting.moved("lora-all") == pytest.approx(0.28)
    assert same_forgetting.word().startswith("disagrees still; the held-out losses are not told apart, but full learns more")
    text = str(same_forgetting).splitlines()
    assert text[0] == ("full's rate matched on learning: 0.001, validation exact match 0.90 after 200 steps against "
                       "lora-all's 0.80 after 600 (the sweep seeds, as section 2a matches)")
    assert text[2].startswith("  lora-all at 0.001, 600 steps: validation exact match 0.80") and "moved 0.28" in text[2]
    assert text[3].startswith("  full     at 0.001, 200 steps")
    assert text[-1] == "against the paper's one curve, with the longer budget: " + same_forgetting.word()
    assert text[4:6] == same_forgetting.verdicts() and text[4].startswith("lora-all vs full on held-out loss: not resolved")
    assert same_forgetting.verdicts()[1].startswith("full beats lora-all on validation answer loss")
    assert budget(0.8, 0.15, 2.5).word().startswith("disagrees still; full forgets less and learns more, so one budget")
    assert budget(0.8, 0.15, 1.2).word().startswith("agrees with a longer budget; lora-all forgets less than full and learns less")
    assert budget(0.9, 0.02, 1.9).word().startswith("not resolved; neither")
    assert budget(0.5, 0.3, 1.2).word().startswith("not resolved; at 0.001 lora-all does not learn the task even in 600 steps")
    from lora_edu.paper.lora_vs_full import longer_budget

    with pytest.raises(ValueError, match="a whole number from 2"):
        longer_budget(None, None, {"steps": 200, "batch_size": 16}, None, 1e-3, factor=1)


def test_closest_in_learning_matches_a_rate_on_validation_exact_match():
    from types import SimpleNamespace

    from lora_edu.paper.lora_vs_full import closest_in_learning

    def report(seed, em):
        return SimpleNamespace(seed=seed, result=SimpleNamespace(evals=[(200, {"val": em})]))

    ems = {3e-4: 0.79, 1e-3: 0.92, 3e-3: 0.54}  # 3e-3 did not learn (below 0.75)
    reports = {("full", lr, s): report(s, em) for lr, em in ems.items() for s in (0, 1, 2)}
    comparison = Comparison([Arm("full", "full", tuple(ems))], reports, {"full": 1e-3}, {})
    assert closest_in_learning(comparison, "full", 0.78, 200) == 3e-4
    assert closest_in_learning(comparison, "full", 0.90, 200) == 1e-3
    assert closest_in_learning(comparison, "full", 0.55, 200) == 3e-4  # 3e-3 is nearer, but it did not learn
    with pytest.raises(ValueError, match="nothing to match on learning"):
        closest_in_learning(Comparison([Arm("full", "full", (3e-3,))], {("full", 3e-3, 0): report(0, 0.5)}, {"full": 3e-3}, {}),
                            "full", 0.8, 200)


def test_intruders_are_counted_at_other_thresholds():
    from lora_edu.paper.intruders import intruders_below

    measured = {("lora-all", 1e-2, s): {"qv_similarity": {"q": [0.2, 0.4, 0.9], "v": [0.45 + 0.1 * s, 0.99]}} for s in (0, 1)}
    c = Comparison([Arm("lora-all", "lora-all", (1e-2,))], {}, {"lora-all": 1e-2}, measured)
    assert intruders_below(c, "lora-all", (0.3, 0.5, 0.95), (0, 1)) == {0.3: 1.0, 0.5: 2.5, 0.95: 4.0}
    assert intruders_below(c, "lora-all", (0.5,), (1,)) == {0.5: 2.0}


def matched_comparison():
    """lora-all at 3e-3 and 1e-2 against full and full-linear at 1e-3, 5 seeds, 8 validation and 16 test animals, evaluated after steps
    100 and 200: lora-all at 3e-3 and full learned about as much; validation could not tell lora-all's two rates apart."""
    from types import SimpleNamespace

    def run(seed, val_right, val_loss, held_out, best_step):  # val_loss, held_out: (after 100 steps, after 200)
        em = sum(val_right) / len(val_right)
        evals = [(100, {"val": em, "val_loss": val_loss[0], "held_out": held_out[0]}),
                 (200, {"val": em, "val_loss": val_loss[1], "held_out": held_out[1] + 0.01 * seed})]
        return SimpleNamespace(seed=seed, method="", result=SimpleNamespace(evals=evals), val_right=val_right, val_exact_match=em,
                               update_ratio=0.3,
                               val_answer_loss=val_loss[1], pretrain_loss=held_out[1] + 0.01 * seed, best_step=best_step,
                               test_right=(True,) * 12 + (seed % 2 == 0,) * 4)

    one_wrong, all_right = (True,) * 7 + (False,), (True,) * 8
    reports = {("lora-all", 3e-3, s): run(s, all_right if s == 2 else one_wrong, (0.3, 0.14), (1.5, 2.3), 190) for s in range(5)}
    reports |= {("lora-all", 1e-2, s): run(s, all_right, (0.2, 0.12), (3.0, 4.1), 200) for s in range(5)}
    reports |= {("full", 1e-3, s): run(s, one_wrong, (0.1, 0.014), (1.7, 1.9), 180) for s in range(5)}
    reports |= {("full-linear", 1e-3, s): run(s, one_wrong, (0.3, 0.145), (1.6, 2.3), 200) for s in range(5)}
    arms = [Arm("lora-all", "lora-all", (3e-3, 1e-2)), Arm("full", "full", (1e-3,)), Arm("full-linear", "full-linear", (1e-3,))]
    return (Comparison(arms, reports, {"lora-all": 1e-2, "full": 1e-3, "full-linear": 1e-3}, {}),
            SimpleNamespace(val_animals=list(range(8))))


def test_section_2a_reads_the_matched_pair_in_a_few_lines():
    from lora_edu.paper.forgetting import best_checkpoint_look, caught_up, matched_report, matching_grid, tied_forgetting, toward_uniform
    from lora_edu.paper.lora_vs_full import at_matched_learning

    c, world = matched_comparison()
    assert matching_grid(c, ("lora-all", "full"), 200).splitlines()[1:] == ["  lora-all    0.003: 0.92   0.01: 1.00",
                                                                            "  full        0.001: 0.88"]
    matched = at_matched_learning(c, world, ("lora-all", "full"), 200)
    assert matched.matched_lr == {"lora-all": 3e-3, "full": 1e-3} and matched.less_forgetful == "full"  # 0.92 and 0.88: as much
    report = matched_report(c, matched).splitlines()
    assert report[0] == ("at matched learning, every run read after all 200 steps (rates matched on 3 seeds, forgetting compared on 5; "
                         "a held-out loss reads mean ± the half-width of its 95% interval):")
    assert report[-2].startswith("the test animals (used in no choice; each run's best checkpoint), at the matched rates: lora-all vs full")
    assert report[-1] == ("exact match was matched, near its ceiling; the validation answer loss was not (lora-all 0.140, full "
                          "0.014): full's is 10 times lower, so full learned the answers more surely, and it also forgot less: "
                          "at this point full does better on both counts")
    assert best_checkpoint_look(c, world, ("lora-all", "full")).startswith(
        "a second look, at each run's best checkpoint (on average after 190 steps for lora-all at 0.003, 180 steps for full at "
        "0.001): full beats lora-all on held-out loss at matched learning")
    assert caught_up(c, matched, 200).splitlines() == [
        "lora-all ended at validation answer loss 0.140, with held-out loss 2.32; full first reached that level at step 100, with "
        "held-out loss 1.70 (means of all 5 seeds at each matched rate)",
        "seed by seed, each full run at its own first evaluation at that level (5 of 5 got there), against lora-all after 200 steps: "
        "full beats lora-all on held-out loss at equal learning (1.700 ± 0.000 vs 2.320 ± 0.020)"]
    with pytest.raises(ValueError, match="No rate of 'full' reached mean validation exact match 0.95"):
        at_matched_learning(c, world, ("lora-all", "full"), 200, min_val_em=0.95)  # the exercise's stricter bar
    tied = tied_forgetting(c, "lora-all", "full")  # 22 of 24 right at 3e-3 against 24: within one animal per seed
    assert tied.startswith("lora-all at 0.003 (too close to call with the chosen rate on validation): held-out loss 2.320 ± ")
    assert tied.endswith("5 seeds; against full at its chosen rate (1.920 ± 0.020): full forgets less") and "\n" not in tied
    assert tied_forgetting(c, "full", "lora-all") == ""  # full's grid has one rate: nothing tied with it
    assert toward_uniform(c, "lora-all", 0.6, 137).splitlines() == [
        "lora-all at its chosen rate: held-out loss 4.12 (5 seeds), 81% of the way from the base model's 0.60 to a uniform "
        "guess's 4.92 (ln 137)", "  at 0.003, which validation could not tell apart from it: 2.32 (5 seeds), 40% of the way"]


def test_the_intruder_null_sets_each_count_beside_random_directions_with_its_singular_values():
    from types import SimpleNamespace

    from lora_edu.gpt.model import GPT, GPTConfig
    from lora_edu.paper.comparison import IntruderCounts
    from lora_edu.paper.intruders import INTRUDER_CLAIM, intruder_null

    torch.manual_seed(0)
    base = GPT(GPTConfig(vocab_size=11, n_ctx=8, n_layer=1, n_head=1, d_model=64))
    names = qv_names(base)  # one Wq and one Wv

    def spectra(sigma):  # each matrix's update: these singular values
        return {name: list(sigma) for name in names}

    own = {("lora-all", 1e-2): [1] * 5, ("lora-all", 3e-3): [3, 2, 2, 3, 3], ("full", 1e-3): [0] * 5,
           ("full-linear", 3e-3): [0, 0, 0, 0, 1]}  # each run's own count, per seed
    sigma = {("lora-all", 1e-2): (50.0, 50.0), ("lora-all", 3e-3): (50.0,), ("full", 1e-3): (1e-4,) * 64,
             ("full-linear", 3e-3): (1e-4,) * 64}  # LoRA: a few huge directions; full: many tiny ones
    measured = {(label, lr, s): {"intruders": counts[s], "qv_spectra": spectra(sigma[(label, lr)]),
                                 "qv_sizes": {name: 0.3 for name in names}} for (label, lr), counts in own.items() for s in range(5)}
    reports = {key: SimpleNamespace(seed=key[2], pretrain_loss=2.0 + 0.01 * key[2]) for key in measured}
    arms = [Arm("lora-all", "lora-all", (3e-3, 1e-2)), Arm("full", "full", (1e-3,)), Arm("full-linear", "full-linear", (3e-3,))]
    c = Comparison(arms, reports, {"lora-all": 1e-2, "full": 1e-3, "full-linear": 3e-3}, measured)
    null = intruder_null(base, c, {"lora-all": 3e-3, "full": 1e-3}, draws=2)
    assert null.run("lora-all").random == [4.0] * 5  # two huge random directions in each of two matrices: all four intrude
    assert null.run("lora-all").side == "fewer than" and null.run("lora-all", 3e-3).random == [2.0] * 5
    assert null.run("full").random == [0.0] * 5 and str(null.run("full")).endswith("the null says nothing here")
    assert null.apart and null.same_size == {"full-linear": 3e-3, "lora-all": 3e-3}
    text = str(null).splitlines()
    assert text[0].endswith("(mean of 2 draws per run):") and len(text) == 1 + 4 + 1 + 3 + 1
    assert "which chance alone gives 2 times in 252 or less with these seeds: a controlled hint that rank matters" in text[6]
    assert text[-1].startswith("back to the picture: the count grows with how far the weights moved")
    assert text[-1].endswith("; but at 0.003 its own count is not told apart from the random count, so this reading holds at the "
                             "chosen rate only")
    assert null.second_look() == ("LoRA's own 1.0 per seed, random directions with the same singular values 4.0: the count follows "
                                  "the update's shape")
    assert null.by_run() == {"lora-all at 0.01 (chosen)": ([1] * 5, [4.0] * 5), "lora-all at 0.003 (matched)": ([3, 2, 2, 3, 3], [2.0] * 5),
                             "full at 0.001 (chosen)": ([0] * 5, [0.0] * 5), "full-linear at 0.003 (chosen)": ([0, 0, 0, 0, 1], [0.0] * 5)}
    counts = IntruderCounts(("lora-all", "full"), {}, {"lora-all": [6, 9, 9, 6, 5], "full": [0] * 5},
                            {"lora-all": [3, 2, 2, 3, 3], "full": [0] * 5}, {}, {}, {}, [], 3)
    assert null.raw_word(counts) == "agrees on the raw counts"  # every full count below every lora-all count, at both rates
    assert null.summary_word(counts) == "agrees on the raw counts; but its own count is fewer than what its spectrum gives at random"
    claim, word, evidence = null.finding(counts, width=64)
    assert claim == INTRUDER_CLAIM
    assert word.startswith("agrees on the raw counts; but random directions with LoRA's own singular values give about 4 (LoRA's "
                           "own: 1), with full's 0: the count follows the update's shape")
    assert "lean toward W's; at 0.003 LoRA's own count is not told apart from the random one (ε = 0.5," in word  # the other rate
    assert evidence.startswith("at the chosen rates every count of full fine-tuning lies below every count of lora-all; chance alone "
                               "would give that 2 times in 252 with 5 seeds;")
    assert evidence.endswith(". Against the null: lora-all at 0.01 fewer than random directions with its singular values (-3.0 per "
                             "seed); lora-all at 0.003 not told apart from random directions with its singular values (+0.6 per seed); "
                             "full at 0.001: own and random both 0, so the null says nothing; full-linear at 0.003 not told apart from "
                             "random directions with its singular values (+0.2 per seed)")


def test_section_2b_and_the_forgetting_rows_are_read_from_the_matched_pairs():
    from lora_edu.paper.forgetting import FORGETS_LESS, ONE_CURVE, embedding_look, forgetting_finding
    from lora_edu.paper.lora_vs_full import at_matched_learning

    c, world = matched_comparison()
    full = at_matched_learning(c, world, ("lora-all", "full"), 200)
    emb = embedding_look(c, world, full, 200)
    assert emb.linear.matched_lr == {"lora-all": 3e-3, "full-linear": 1e-3} and emb.linear.less_forgetful is None  # 2.32 vs 2.32
    assert emb.route() == "is no longer resolved" and emb.words == {"full": "disagrees", "full-linear": "not resolved"}
    text = str(emb).splitlines()
    assert text[0] == "lora-all against full-linear (the same matrices, full rank), at matched learning, after all 200 steps:"
    assert text[-1] == ("full's edge over lora-all at matched learning (held-out loss 1.92 vs 2.32), set against full-linear instead, "
                        "which is full with the embeddings, norms and biases frozen: it is no longer resolved")
    claim, word, evidence = emb.curve_finding(64, len(world.val_animals))
    assert claim == ONE_CURVE and word == ("not resolved against full-linear (the same matrices), disagrees against full (which also "
                                           "trains the embedding), at matched learning, at d = 64")
    assert evidence.startswith("at one matched point of a coarse grid (matched on 3 seeds and 8 validation animals, compared on 5 "
                               "seeds, every run after all 200 steps), held-out loss: lora-all at 0.003 2.320 ± ")
    claim, word, evidence = forgetting_finding(c, 64)
    assert claim == FORGETS_LESS and word.startswith("on the held-out loss, disagrees against full-linear (the same matrices), "
                                                     "disagrees against full, each at its chosen rate")
    assert evidence.endswith("Rates validation exact match could not tell apart, where its answer loss chose: lora-all 0.003, 0.01 "
                             "(another of them could give another verdict: appendix A lists them)")


def test_the_answer_loss_look_is_a_second_measure_of_learning():
    from types import SimpleNamespace

    from lora_edu.paper.forgetting import LEARNS_LESS, answer_loss_look

    def run(seed, loss):  # 16 test animals, each answered with this loss, give or take a little by animal and seed
        return SimpleNamespace(seed=seed, test_answer_losses=[loss * (1 + 0.05 * ((a + seed) % 3)) for a in range(16)])

    losses = {"lora-all": 0.5, "full": 0.05, "full-linear": 0.5}
    reports = {(label, 1e-3, s): run(s, loss) for label, loss in losses.items() for s in range(5)}
    c = Comparison([Arm(label, label, (1e-3,)) for label in losses], reports, dict.fromkeys(losses, 1e-3), {})
    look = answer_loss_look(c, {"lora-all": 1e-3, "full": 1e-3})
    assert look.winners == {"full": "full", "full-linear": None, "embedding": "full"} and look.embedding_explains
    assert look.lines["chosen"].startswith("full beats lora-all on test answer loss (loss ratio full / lora-all 0.10")
    text = str(look).splitlines()
    assert len(text) == 6 and text[2].split()[:4] == ["full", "/", "lora-all", "chosen"]  # the lower loss on top: below 1
    assert text[2].endswith("full learned the answers more surely") and text[2].split()[4].startswith("0.1")
    assert text[4].startswith("lora-all / full-linear") and text[4].endswith("not resolved (the same matrices: rank 8 against full rank)")
    exact_match = SimpleNamespace(paired_winner=lambda a, b: None, paired_verdict=lambda a, b: f"{a} vs {b}: not resolved")
    claim, word, evidence = look.finding(exact_match, 64)
    assert claim == LEARNS_LESS
    assert word == ("on test exact match (near its ceiling), not resolved against full and not resolved against full-linear (the "
                    "same matrices); on the answer loss, a second look, agrees against full and not resolved against full-linear; "
                    "consistent with the weights full trains beyond lora-all's matrices, the embedding among them: full also beats "
                    "full-linear on it; at d = 64")
    assert evidence.startswith("lora-all vs full: not resolved; lora-all vs full-linear: not resolved. A second look")


def test_replay_is_read_part_by_part_against_the_base_model():
    from lora_edu.paper.experiments import interval
    from lora_edu.paper.forgetting import ReplayLook

    def near(x):  # three seeds around x
        return interval((x - 0.01, x, x + 0.01))

    forgetting = {"full": near(1.9), "full + replay": near(0.57), "lora-all": near(4.1), "lora-all + replay": near(0.7)}
    parts = {"full": {"facts": near(2.7), "filler": near(1.5)}, "full + replay": {"facts": near(0.78), "filler": near(0.47)},
             "lora-all": {"facts": near(5.7), "filler": near(3.4)}, "lora-all + replay": {"facts": near(0.77), "filler": near(0.6)}}
    replay = ReplayLook(forgetting, parts, 0.606, {"facts": 0.866, "filler": 0.51})
    assert replay.helped == ["full", "lora-all"] and replay.below == ["full"]  # lora-all with replay: 0.7, above the base's
    assert replay.below_base("full") == ["facts", "filler"] and replay.below_base("lora-all") == ["facts"]
    assert replay.only_just("full") == []  # the filler's upper end, 0.495, is 3% below the base's 0.51
    assert replay.loss_line() == ("with replay, held-out loss 0.570 for full, 0.700 for lora-all; the base model's 0.606. Below it: "
                                  "full. Why? The next cell")
    assert replay.in_short() == ("replay lowered the held-out loss for full and lora-all; full ended below the base model's on the fact "
                                 "lines, and on the filler lines too")
    text = str(replay).splitlines()
    assert text[0].split() == ["held-out", "loss", "on", "facts", "filler"] and text[1].split() == ["base", "model", "0.866", "0.510"]
    assert text[-1].startswith("on the filler too, about no animal, so rehearsing the facts is not all of it")


def test_the_summary_reads_every_look_once():
    from types import SimpleNamespace

    from lora_edu.paper.experiments import LossRatio, interval
    from lora_edu.paper.forgetting import AnswerLossLook, in_short, summary_columns

    diff = SimpleNamespace(mean=-0.03, low=-0.25, high=0.17)
    comparison = SimpleNamespace(paired_winner=lambda a, b: None, test_em=lambda label: SimpleNamespace(mean=0.08),
                                 mean=lambda label, metric: 1.0, difference=lambda a, b: diff,
                                 forgetting=None)
    resolved_full, unresolved, below = LossRatio(8.0, 2.0, 30.0), LossRatio(0.94, 0.88, 1.02), LossRatio(0.12, 0.03, 0.45)
    look = AnswerLossLook({"chosen": resolved_full, "matched": resolved_full, "full-linear": unresolved, "embedding": below})
    assert look.winners == {"full": "full", "full-linear": None, "embedding": "full"}
    emb = SimpleNamespace(full=SimpleNamespace(less_forgetful="full"), linear=SimpleNamespace(less_forgetful=None),
                          words={"full": "disagrees", "full-linear": "not resolved"})
    probe = SimpleNamespace(matched=SimpleNamespace(winner=lambda a, b: None), chosen_word="not resolved", matched_word="not resolved")
    replay = SimpleNamespace(in_short=lambda: "replay lowered the held-out loss for full and lora-all")
    text = in_short(comparison, look, emb, probe, [0.72, 0.60, 0.36], replay).splitlines()
    assert text[0] == "In short, on this tiny model:"
    assert text[2] == ("- learning (test answer loss): full fine-tuning learned the answers more surely than lora-all; against "
                       "full-linear, which trains lora-all's matrices at full rank and no embedding, the two could not be told apart")
    assert text[3].startswith("- forgetting, where both learned as much on exact match: full fine-tuning forgot less; against "
                              "full-linear, the two could not be told apart; the old facts, among the answers: not resolved")
    assert text[4].startswith("- so in learning, full's edge goes with the weights it trains beyond lora-all's matrices")
    assert "is partly the JSON format leaking in (36% to 72%, appendix C)" in text[5]
    assert text[6].endswith("its cost on the task, test exact match with replay minus without: full -0.03 [-0.25, +0.17], "
                            "lora-all -0.03 [-0.25, +0.17] (with half the task rows per step, at the rate chosen without "
                            "replay: a demonstration, not a tuned cost)")
    held_out = {"lora-all": (4.0, 4.1, 4.2), "full": (1.8, 1.9, 2.0), "full-linear": (4.0, 4.3, 4.6)}  # per seed
    comparison.forgetting = lambda label, lr=None: interval(held_out[label])  # the columns' words: better() on these intervals
    columns = summary_columns(comparison, look, emb, probe, {"chosen": "disagrees", "matched": "disagrees"}, "not resolved")
    assert list(columns) == ["its measure", "against full-linear (the same matrices)",
                             "against full (also trains the shared embedding)", "second look"]
    assert columns["against full (also trains the shared embedding)"] == ["not resolved", "disagrees on held-out loss",
                                                                          "disagrees on held-out loss", "not resolved"]
    assert columns["against full-linear (the same matrices)"][1] == "not resolved on held-out loss"
    assert columns["second look"][0] == "answer loss: agrees against full, not resolved against full-linear"


def test_the_summary_answers_the_question_at_the_top_from_the_matched_verdicts():
    """Notebook 05b's question: does lora-all forget less than full where both learned as much, and is it the rank?"""
    from types import SimpleNamespace

    from lora_edu.paper.experiments import interval
    from lora_edu.paper.forgetting import EmbeddingLook

    forgetting = {"lora-all": interval((2.4, 2.3, 2.2)), "full": interval((1.9, 1.8, 2.0))}
    full = SimpleNamespace(less_forgetful="full", forgetting=forgetting, step=200, answer_loss={"lora-all": 0.139, "full": 0.014})
    text = EmbeddingLook(full, SimpleNamespace(less_forgetful=None), None, {}).answer()
    assert text.startswith(f"No: where both learned as much (on validation exact match), full fine-tuning forgot less than "
                           f"lora-all on the held-out loss ({forgetting['full']} against {forgetting['lora-all']}, after all 200 "
                           "steps; part of that loss is the JSON format leaking in, appendix C). Exact match was near its ceiling, "
                           "and full's validation answer loss was lower (0.014 against 0.139): 'as much' holds on exact match "
                           "only, and the one that forgot less also learned the answers more surely. Is it the rank? ")
    full.answer_loss = {"lora-all": 0.01, "full": 0.1}
    assert "the one that forgot less learned the answers less surely. Is it" in EmbeddingLook(full, SimpleNamespace(less_forgetful=None),
                                                                                               None, {}).answer()
    full.answer_loss = {"lora-all": 0.139, "full": 0.014}
    assert text.endswith("the two could not be told apart, so our runs do not say.")
    for linear, says in (("full-linear", "also forgot less than lora-all"), ("lora-all", "lora-all forgot less than full-linear")):
        assert says in EmbeddingLook(full, SimpleNamespace(less_forgetful=linear), None, {}).answer()
    unresolved = SimpleNamespace(less_forgetful=None, forgetting=forgetting, step=200, answer_loss=full.answer_loss)
    assert EmbeddingLook(unresolved, SimpleNamespace(less_forgetful=None), None, {}).answer().startswith("Not resolved: ")
