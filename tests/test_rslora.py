"""rsLoRA over a training run (notebook 06b, section 2c): the arms, and the claim read rank against rank."""

from types import SimpleNamespace

import pytest

from lora_edu.paper.comparison import Comparison
from lora_edu.paper.experiments import LossRatio
from lora_edu.paper.rslora import RSLORA_CLAIM, RankStudy, rank_arm_label, rank_arms, scaling_at


def test_both_scalings_meet_at_the_reference_rank_and_part_away_from_it():
    arms = {arm.label: arm for arm in rank_arms((1, 4, 16), 4, 2.0, 0.03, {"targets": ["q_proj", "v_proj"]})}
    assert list(arms) == ["α/r, r = 1", "α/r, r = 4", "α/r, r = 16", "α/√r, r = 1", "α/√r, r = 4", "α/√r, r = 16"]
    assert arms["α/r, r = 16"].options == {"targets": ["q_proj", "v_proj"], "r": 16, "alpha": 8.0, "rslora": False}
    assert arms["α/√r, r = 16"].options["alpha"] == 4.0 and arms["α/√r, r = 16"].options["rslora"] is True
    assert all(arm.lrs == (0.03,) for arm in arms.values())
    assert scaling_at("α/r", 4, 4, 2.0) == scaling_at("α/√r", 4, 4, 2.0) == 2.0
    assert scaling_at("α/r", 16, 4, 2.0) == 0.5 and scaling_at("α/√r", 16, 4, 2.0) == 1.0  # as LoRALinear computes α/r, α/√r
    with pytest.raises(ValueError, match="reference rank 8 must be one of the ranks"):
        rank_arms((1, 4, 16), 8, 2.0, 0.03, {})
    with pytest.raises(ValueError, match="scaling must be one of"):
        scaling_at("α", 4, 4, 2.0)


def study(factor: dict[str, float]) -> RankStudy:
    """Five seeds; the highest rank's loss is ``factor[scaling]`` times the lowest's, seed by seed, with a little noise."""
    reports = {}
    for scaling in ("α/r", "α/√r"):
        for r in (1, 4, 16):
            for seed in range(5):
                base = [0.5 + 0.02 * seed + 0.01 * animal for animal in range(16)]
                scale = 1.0 if r == 1 else factor[scaling] * (1 + 0.01 * (seed - 2)) if r == 16 else factor[scaling] ** 0.5
                reports[(rank_arm_label(scaling, r), 0.03, seed)] = SimpleNamespace(seed=seed, test_answer_losses=[x * scale for x in base])
    return RankStudy(Comparison([], reports, {label: 0.03 for label, _, _ in reports}, {}), (1, 4, 16), 4, 2.0)


def test_the_claim_is_read_where_the_scalings_part_with_each_scaling_gain_beside_it():
    rs_wins = study({"α/√r": 0.5, "α/r": 2.0})
    assert rs_wins.gain("α/√r").high < 1 < rs_wins.gain("α/r").low
    assert rs_wins.at_top().high < 1 and rs_wins.word() == "agrees"
    claim, word, evidence = rs_wins.finding(64)
    assert claim == RSLORA_CLAIM and word == "agrees at r = 16 (α/√r against α/r, one rate, d = 64)"
    assert evidence.startswith("at r = 16, α/√r's test answer loss over α/r's, 5 seeds paired: 0.2")
    assert "r = 16 over r = 4: α/√r 0.7" in evidence and "; over r = 1: α/√r 0.5" in evidence
    assert evidence.endswith("every run at the rate chosen for r = 4, where both scalings give γ = 2")
    assert study({"α/√r": 2.0, "α/r": 0.5}).word() == "disagrees"
    tie = study({"α/√r": 0.5, "α/r": 0.5})  # both gain alike from r = 1; at r = 16 an interval that holds 1, as on the CPU
    tie.at_top = lambda: LossRatio(0.99, 0.90, 1.09)
    assert tie.word() == "not resolved"
    assert tie.halves().startswith("; what the interval allows at r = 16: α/√r's loss at most 10% below α/r's; ")
    assert tie.halves().endswith("; under α/r, r = 16 learned resolvably more than r = 1: counted from r = 1, the higher rank did "
                                 "not gain little here")
    assert tie.finding(64)[2].endswith(tie.halves())
    assert rs_wins.halves() == ""  # resolved at r = 16, and α/r lost with rank there
    lines = rs_wins.table().splitlines()
    assert lines[0].split() == ["r", "γ", "under", "α/r", "γ", "under", "α/√r", "test", "answer", "loss,", "α/r", "α/√r"]
    assert lines[3].split()[:3] == ["16", "0.50", "1.00"]
    assert lines[4].startswith("r = 16 over r = 1, paired by seed (below 1: the higher rank learned more): α/r 2.0")
    assert lines[5].startswith("r = 16 over r = 4 (where the two scalings meet), paired by seed")
    assert lines[-1].startswith("at r = 16, α/√r over α/r (below 1: α/√r learned more): 0.2")
