"""Notebook 07's QLoRA question: does LoRA on a 4-bit (NF4) base answer as well as LoRA on the fp32 base?

Dettmers et al. (2023, abstract) report that fine-tuning on a 4-bit base keeps the task performance of 16-bit
fine-tuning.  The paper reports no loss, so the claim is a tie: ours can only fail to tell the two apart (consistent
with it, not evidence for it) or resolve a winner (disagree).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..gpt.finetune import Report
from .comparison import paired_difference, paired_verdict
from .experiments import ratio_verdict, ratio_winner, runs_loss_ratio, within_noise_word

__all__ = ["nf4_base_report"]

NF4, FP32 = "NF4 base", "fp32 base"


def nf4_base_report(on_nf4: Sequence[Report], on_fp32: Sequence[Report], n_test: int) -> str:
    """LoRA on the NF4 base against LoRA on the fp32 base, the same seeds on both (``n_test`` test animals each):
    test exact match paired by animal, the verdict on Dettmers et al.'s claim, then the test answer loss, the finer
    measure when exact match sits near its ceiling."""
    if len(on_nf4) != len(on_fp32) or not on_nf4:
        raise ValueError(f"Give both bases the same seeds: got {len(on_nf4)} runs on NF4 and {len(on_fp32)} on fp32.")
    diff = paired_difference([rep.test_right for rep in on_nf4], [rep.test_right for rep in on_fp32])  # paired by animal
    finer = runs_loss_ratio(on_nf4, on_fp32)  # NF4's test answer loss over fp32's
    winner = diff.winner(NF4, FP32)
    word = within_noise_word(winner, None)
    reading = (f"; the NF4 base scored {diff.mean:+.2f} against the fp32 base, and the interval allows it to be up to "
               f"{-diff.low:.2f} lower: consistent with the paper's claim, not evidence for it" if winner is None
               else f": the {winner} resolved better")
    fp32_right = sum(round(rep.test_exact_match * n_test) for rep in on_fp32)
    finer_word = {None: "not resolved either", NF4: "the NF4 base resolved better", FP32: "the fp32 base resolved better"}
    return "\n".join([
        paired_verdict(NF4, FP32, diff),
        ratio_verdict(NF4, FP32, finer),
        f"Dettmers et al. (2023, abstract): LoRA on a 4-bit base keeps the task performance of 16-bit fine-tuning. Ours "
        f"(LoRA on an NF4 base against LoRA on an fp32 base, not their 16-bit baselines), on test exact match, "
        f"{len(on_nf4)} seeds: {word}{reading}",
        f"Exact match sits near its ceiling ({fp32_right} of {n_test * len(on_fp32)} answers on the fp32 base), so it can "
        f"show a loss but hardly a gain. The test answer loss is the finer measure: NF4 over fp32 {finer}, "
        + finer_word[ratio_winner(NF4, FP32, finer)],
    ])
