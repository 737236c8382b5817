"""The paper's experiments at small scale (notebooks 05-06).

- ``experiments``: sweeps over methods, ranks and seeds, intervals and computed verdicts.
- ``analysis``: subspace similarity φ, intruder dimensions, ΔW alignment (the paper's section 7).
- ``comparison``: methods compared fairly (a rate chosen on validation for each), intervals that fit few animals.
- ``lora_vs_full``: notebook 05b's six methods, kept in the cache so that notebook 05c reads the same runs; the
  matching at equal learning and the longer budget.
- ``forgetting``: how notebook 05b reads those runs: the matched pair, the embeddings, the answer loss, the fact
  probe, the held-out loss split into the format's part and the rest, replay, and the summary.
- ``coverage``: notebook 05b's check of the difference interval on simulated methods whose true gap is known.
- ``intruders``: how notebook 05c reads their intruder dimensions: each count beside a null of random directions.
- ``loraplus``: notebook 06b's LoRA+ against plain LoRA (the ratio chosen on validation, fresh seeds paired by seed).
- ``rank_tie``: notebook 06's Table 6 claim as a tie (a smaller rank within a margin of a larger one's loss).
- ``phi``: notebook 06's subspace overlap φ between two ranks, beside chance, two seeds, the start and another task.
- ``table7``: notebook 06's Table 7 (ΔW's directions against W's, random ones and another task's).
- ``qlora``: notebook 07's QLoRA question, LoRA on a 4-bit (NF4) base against LoRA on the fp32 base.
- ``houlsby``: Houlsby adapters, the baseline of the paper's latency table.

Imports ``lora_edu.gpt``, ``lora_edu.lora`` and ``lora_edu.maths``.
"""
