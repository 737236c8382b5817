"""Seeds and intervals, computed verdicts, progress lines, and the GPU-check / portability tooling."""

import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from lora_edu.gpt.progress import Progress, in_notebook, progress
from lora_edu.maths.intervals import T95
from lora_edu.paper.experiments import interval, log_interval, verdict

ROOT = Path(__file__).resolve().parents[1]


def test_interval_is_the_t_interval_of_the_mean():
    iv = interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.values == (1.0, 2.0, 3.0)
    assert iv.half_width == pytest.approx(T95[2] * 1.0 / math.sqrt(3))  # sample std 1, three seeds: t(0.975, 2) = 4.303
    assert interval([0.5, 0.5, 0.5]).half_width == 0.0
    assert str(interval([1.0, 3.0])) == f"2.000 ± {T95[1] * math.sqrt(2) / math.sqrt(2):.3f}"
    with pytest.raises(ValueError, match="at least 2 seeds"):
        interval([1.0])


def test_a_loss_interval_is_made_on_the_log_scale_and_stays_positive():
    losses = [0.1, 0.2, 0.9]  # the t-interval of these three reaches below zero
    assert interval(losses).low < 0
    iv = log_interval(losses)
    assert iv.mean == pytest.approx(0.018 ** (1 / 3)) and iv.values == (0.1, 0.2, 0.9)  # the geometric mean
    logs = interval(np.log(losses))
    assert (iv.low, iv.high) == pytest.approx((math.exp(logs.low), math.exp(logs.high)))
    assert 0 < iv.low < iv.mean < iv.high and iv.errors == pytest.approx((iv.mean - iv.low, iv.high - iv.mean))
    assert str(log_interval([2.0, 2.0])) == "2.000 [2.000, 2.000]"
    assert verdict("A", log_interval([0.1, 0.11, 0.12]), "B", log_interval([0.5, 0.52, 0.55]), False).startswith("A beats B")
    for bad in ([0.0, 1.0], [1.0, float("nan")], [-1.0, 1.0]):
        with pytest.raises(ValueError, match="positive finite values"):
            log_interval(bad)


def test_t_quantiles_fall_towards_the_normal_one():
    values = [T95[k] for k in sorted(T95)]
    assert values == sorted(values, reverse=True) and values[-1] > 1.96
    assert interval(np.arange(40.0)).half_width == pytest.approx(T95[29] * np.arange(40.0).std(ddof=1) / math.sqrt(40))


def test_verdict_needs_separate_intervals():
    low, high = interval([0.1, 0.12, 0.11]), interval([0.5, 0.52, 0.51])
    assert verdict("A", high, "B", low, higher_is_better=True).startswith("A beats B")
    assert verdict("A", high, "B", low, higher_is_better=False).startswith("B beats A")
    wide = interval([0.0, 1.0, 0.5])
    assert "not resolved (" in verdict("A", wide, "B", low, higher_is_better=True, what="exact match")
    assert "on exact match" in verdict("A", wide, "B", low, True, "exact match")


def test_progress_outside_a_notebook_falls_back_to_tqdm(capsys):
    assert not in_notebook()
    assert list(progress(range(3), "items")) == [0, 1, 2]
    assert "items" in capsys.readouterr().err
    bar = Progress(10, "steps")
    bar.update(5, loss="0.5")
    assert "5/10" in bar.line() and "loss 0.5" in bar.line()
    bar.close(best="1.0")
    assert bar.line(done=True).endswith("done")
    quiet = Progress(3, "quiet", disable=True)
    quiet.update(3)
    quiet.close()
    assert quiet.handle is None and quiet.bar is None


def test_gpu_check_reads_the_notebooks_code_without_magics(monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    for name in gpu_check.NOTEBOOKS.values():
        cells = gpu_check.code_cells(ROOT / "notebooks" / name)
        assert cells and not any(line.lstrip().startswith(("%", "!")) for c in cells for line in c.splitlines())
        source = "\n".join(cells)
        compile(source, name, "exec")  # the whole notebook is valid Python once magics are gone
        assert re.search(r"\b(finetune|compare_methods|tuned_sweep)\(", source)  # it fine-tunes: collect_reports sees each run
    environment = dict(os.environ)
    for flags in ([], ["--cuda-graphs"]):
        monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--notebooks", "05", *flags])
        with pytest.raises(SystemExit, match="needs a CUDA GPU"):
            gpu_check.main()
        assert dict(os.environ) == environment  # a CPU machine is refused before anything is set (notebook kernels inherit it)


def test_gpu_check_drops_magics_but_keeps_a_comparison_continued_on_a_new_line(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    source = "%matplotlib inline\n!pip list\nsame = (1\n        != 2)\n  %time x = 1"
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": source}]}), encoding="utf-8")
    assert gpu_check.code_cells(path) == ["same = (1\n        != 2)"]


def test_gpu_check_reports_how_many_runs_replayed_a_cuda_graph():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    rows = [{"cuda_graph": graphed} for graphed in (True, True, False)]
    nb = {"failure": None, "minutes": 1.5, "runs": 3, "max_peak_memory_mb": 300.0, "median_tokens_per_second": 1000,
          "median_mfu": 0.05, "reports": rows}
    results = {"device": "GPU", "date": "today", "torch": "2", "precision": "bf16", "cuda_graphs": True, "notebooks": {"05": nb}}
    text = gpu_check.markdown(results)
    assert "with `LORA_EDU_CUDA_GRAPHS=1`" in text and "| 05 | 1.50 | 3 | 2 of 3 | 300.0 | 1000 | 0.05 |" in text


def test_portability_check_applies_the_suites_rules():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import portability

    def nb(text_exact, text_trained, text_ignored):
        cells = [({}, text_exact), ({"lora_edu": {"trained_figures": {"rel": 0, "abs": 0.01}}}, text_trained),
                 ({"tags": ["nbval-ignore-output"]}, text_ignored)]
        return {"cells": [{"cell_type": "code", "metadata": m, "source": "print(1)",
                           "outputs": [{"output_type": "stream", "name": "stdout", "text": t}]} for m, t in cells]}

    committed = nb("exact 1\n", "loss 0.500\n", "12.3 ms\n")
    same = json.loads(json.dumps(committed))
    assert portability.check(committed, nb("exact 1\n", "loss 0.505\n", "99 ms\n"), lambda s: s) == []
    assert portability.check(committed, nb("exact 2\n", "loss 0.500\n", "1 ms\n"), lambda s: s) == ["code cell 0: exact output differs"]
    assert "outside the declared tolerance" in portability.check(committed, nb("exact 1\n", "loss 0.600\n", "1 ms\n"), lambda s: s)[0]
    spread = portability.spreads([committed, nb("exact 1\n", "loss 0.505\n", "x\n"), same])
    assert spread[1]["spread_abs"] == pytest.approx(0.005) and spread[1]["declared_abs"] == 0.01


def test_gpu_budget_is_calibrated_and_follows_the_notebooks_plan():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_budget

    from lora_edu.gpt.pretrain import PRETRAIN_SIZES
    from lora_edu.gpt.train import TrainConfig, train
    from lora_edu.paper.experiments import PAPER

    ops = {(m, "bf16"): gpu_budget.ops_per_step(m, "bf16") for m in ("lora-qv", "full")}
    assert 500 < ops[("lora-qv", "bf16")] < 5000 and 500 < ops[("full", "bf16")] < 5000
    assert ops[("lora-qv", "bf16")] < gpu_budget.H100_LORA_STEP_OPS  # each LoRA branch now adds its product inside one addmm
    cal = gpu_budget.calibrate(ops[("full", "bf16")])
    h100 = gpu_budget.GPUS["H100"]
    spec = PRETRAIN_SIZES["gpu"]
    assert cal["per_op"] * gpu_budget.H100_LORA_STEP_OPS == pytest.approx(gpu_budget.H100_LORA_STEP_S)  # reproduces what was measured
    pretraining = spec.steps * gpu_budget.step_seconds(h100, cal["per_op"], cal["efficiency"], ops[("full", "bf16")], "full",
                                                       spec.batch_size, spec.model.n_ctx)
    assert pretraining == pytest.approx(gpu_budget.H100_PRETRAIN_S) and 0 < cal["efficiency"] < 1
    kernels = {("lora-qv", "bf16"): gpu_budget.ops_per_step("lora-qv", "bf16", kernels=True)}
    graphs = gpu_budget.Graphs(gpu_budget.ops_outside_graph_per_step(), kernels)
    assert graphs.outside_ops < 10 < graphs.kernels[("lora-qv", "bf16")] < ops[("lora-qv", "bf16")]  # views launch nothing
    plain, replayed = (gpu_budget.run_seconds(h100, cal["per_op"], cal["efficiency"], ops, "lora-qv", 400, 64, 32, g)
                       for g in (None, graphs))
    assert plain == pytest.approx(400 * cal["per_op"] * ops[("lora-qv", "bf16")]) and replayed < plain / 4
    eval_ops = gpu_budget.evaluation_ops()  # scoring takes one forward pass, not one per answer token
    assert eval_ops["val"] == eval_ops["test"] == eval_ops["train"] < ops[("full", "bf16")] / 2
    # evaluations per run: what finetune's schedule (every steps // 6, and the last step) makes train() do
    import torch

    from lora_edu.gpt.model import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=11, n_ctx=8, n_layer=1, n_head=1, d_model=8))
    x = torch.randint(0, 11, (8, 8))
    for steps in (13, 20):
        res = train(model, x, x, TrainConfig(steps=steps, batch_size=2, eval_every=max(1, steps // 6)), evaluate=lambda m: {"score": 0.0},
                    progress=False, device=torch.device("cpu"))
        assert len(res.evals) == gpu_budget.evaluations_per_run(steps)
        res = train(model, x, x, TrainConfig(steps=steps, batch_size=2, eval_every=4), evaluate=lambda m: {"score": 0.0},
                    progress=False, device=torch.device("cpu"))
        assert len(res.evals) == gpu_budget.evaluations_per_run(steps, 4)
    # the plans were written from the notebooks' code: run counts per notebook
    plans = gpu_budget.plans()
    from lora_edu.paper.lora_vs_full import COMPARED, CONTROL, LORA_VS_FULL, SEEDS, SWEEP_SEEDS

    nb05 = "\n".join(gpu_check_cells("05b"))
    assert "lora_vs_full(base, world, RUN" in nb05 and (SWEEP_SEEDS, SEEDS) == ((0, 1, 2), (0, 1, 2, 3, 4))
    grids = {a.label: (len(a.lrs), a.headline) for a in (*LORA_VS_FULL, CONTROL)}
    assert grids == {"lora-all": (4, True), "full": (3, True), "full-linear": (4, False), "lora-qv": (3, False),
                     "last-block": (3, False), "control": (3, False)}
    # every grid x 3 seeds, + 2 seeds for each headline arm; replay: 2 methods x 3 seeds; then 2 more seeds at every rate
    # (not the chosen one) where lora-all, full or full-linear learned, counted as if all of them had
    assert "replays = [Arm(" in nb05 and 'for label in ("full", "lora-all")]' in nb05
    assert COMPARED == ("lora-all", "full", "full-linear")
    most = 2 * sum(grids[label][0] - grids[label][1] for label in COMPARED)  # a headline arm's chosen rate has its seeds already
    assert "longer_budget(base, world, RUN, comparison," in nb05  # section 2d: lora-all for 3 times the steps, 5 seeds
    assert sum(r.count for r in plans["05b"]["runs"]) == sum(n * 3 + 2 * head for n, head in grids.values()) + 2 * 3 + most + 5
    nb05c = "\n".join(gpu_check_cells("05c"))  # 05b's runs from the cache, then lora-all retrained for PEFT's intruder mitigation
    assert "lora_vs_full(base, world, RUN)" in nb05c
    assert 'intruder_mitigation(base, world, "json", chosen, SEEDS, kept=(1.0, 0.75, 0.5, 0.0)' in nb05c
    assert 'intruder_mitigation(base, world, "json", lower_lr, SEEDS, kept=(1.0, 0.75, 0.5, 0.0)' in nb05c  # and at the matched rate
    assert sum(r.count for r in plans["05c"]["runs"]) == 2 * len(SEEDS) and {r.steps for r in plans["05c"]["runs"]} == {400}
    assert {r.steps for r in plans["05b"]["runs"]} == {400, 1200}
    lab = "\n".join(gpu_check_cells("05"))  # notebook 05: three fine-tunes and the 30-step loop written out, twice
    assert lab.count("finetune(base, world,") == 3 and "TrainConfig(steps=30," in lab and "Arm(" not in lab
    assert "compare_step_time(" in lab  # 7 rounds x (10 + 3) steps of each model, as compare_step_time's defaults
    assert sum(r.count for r in plans["05"]["runs"]) == 3 + 2 + 2 and {r.steps for r in plans["05"]["runs"]} == {400, 30, 91}
    nb06 = "\n".join(gpu_check_cells("06"))
    assert 'STEPS = {"tiny": 100, "gpu": 200}' in nb06 and "ranks = (1, 2, 4, 8, HIGH)" in nb06
    placements = len(PAPER["table5_wikisql"])
    assert "tuned_sweep(base, world, placements, TUNE_SEEDS, STEPS, lrs=(1e-2, 3e-2), extend=1," in nb06
    assert "TUNE_SEEDS = (3, 4)" in nb06 and nb06.count("score_seeds=SEEDS)") == 3 and "SEEDS = (0, 1, 2, 5, 6)" in nb06
    # placements at 2 rates, then 1 beyond the edge, x 2 seeds, then 5 scored seeds; 2 of the rank sweep ran as placements
    # r = 1 and 2 retuned for Wq and Wq+Wv (2 rates, then 1 beyond, x 2 seeds, then 5 scored); r = 1, 2 and 4 trained 4 times
    # longer (their rates chosen at that length: 2 rates x 2 seeds, 1 beyond, then 5 scored seeds); the card-task adapters of
    # sections 3 and 4; Table 7's small-update runs
    assert "lrs=(next_rate(rank_rate[t], up=False), rank_rate[t])" in nb06 and nb06.count("extend=1,") == 3
    assert "low_ranks = (1, 2)" in nb06
    assert "LONG = 4 * STEPS" in nb06 and nb06.count('task="card")') == 2 and "lr=SMALL_RATE)" in nb06
    assert ('long_tuned = tuned_sweep(base, world, [(("q", "v"), r) for r in (*low_ranks, tuned_r)], TUNE_SEEDS, LONG, '
            'lrs=(1e-2, 3e-2),') in nb06
    assert sum(r.count for r in plans["06"]["runs"]) == ((3 * 2 + 5) * placements + 5 * (2 * 5 - 2) + 2 * 2 * (3 * 2 + 5)
                                                        + 3 * (2 * 2 + 2 + 5) + 5 + 5 + 5)
    nb06b = "\n".join(gpu_check_cells("06b"))  # LoRA and LoRA+ at 5 ratios (4 rates each), 3 seeds; then 3 arms x 10 fresh seeds
    assert 'STEPS = {"tiny": 100, "gpu": 200}' in nb06b and "PLUS_RATIOS = (0.5, 2, 4, 8, 16)" in nb06b
    assert "for ratio in (1, *PLUS_RATIOS):" in nb06b
    assert "(1e-3, 3e-3, 1e-2, 3e-2) if ratio >= 8 else (3e-3, 1e-2, 3e-2, 1e-1)" in nb06b
    assert "FRESH_SEEDS = tuple(range(3, 13))" in nb06b and '["LoRA", *study.compared], FRESH_SEEDS' in nb06b
    assert "EVAL_EVERY = STEPS // 25" in nb06b and '"eval_every": EVAL_EVERY, "checkpoint_by": "answer loss"}' in nb06b
    assert nb06b.count("**RUN)") == 3  # 8 of the gpu size's 200 steps
    assert 'RANKS, REFERENCE = (1, 4, 16), RUN["r"]' in nb06b and "RANK_SEEDS = FRESH_SEEDS[:5]" in nb06b and "done=reused" in nb06b
    assert {r.eval_every for r in plans["06b"]["runs"]} == {200 // 25}
    # at most 4 arms run on fresh seeds; then ranks 1 and 16 under two scalings on 5 of them (r = 4 is reused)
    assert sum(r.count for r in plans["06b"]["runs"]) == 4 * 3 + 5 * 4 * 3 + 4 * 10 + 2 * 2 * 5
    assert {r.steps for r in plans["06b"]["runs"]} == {200}
    assert {r.steps for r in plans["06"]["runs"]} == {200, 800}


def gpu_check_cells(number: str) -> list[str]:
    import gpu_check

    return gpu_check.code_cells(ROOT / "notebooks" / gpu_check.NOTEBOOKS[number])
