"""The paper's experiments at small scale (notebooks 05-06).

- ``experiments``: sweeps over methods, ranks and seeds, intervals and computed verdicts.
- ``analysis``: subspace similarity φ, intruder dimensions, ΔW alignment (the paper's section 7).
- ``comparison``: methods compared fairly (a rate chosen on validation for each), intervals that fit few animals.
- ``lora_vs_full``: notebook 05b's six methods, kept in the cache so that notebook 05c reads the same runs.
- ``houlsby``: Houlsby adapters, the baseline of the paper's latency table.

Imports ``lora_edu.gpt``, ``lora_edu.lora`` and ``lora_edu.maths``.
"""
