"""The paper's experiments at small scale (notebooks 05-06).

- ``experiments``: sweeps over methods, ranks and seeds, intervals and computed verdicts.
- ``analysis``: subspace similarity φ, intruder dimensions, ΔW alignment (the paper's section 7).
- ``houlsby``: Houlsby adapters, the baseline of the paper's latency table.

Imports ``lora_edu.gpt``, ``lora_edu.lora`` and ``lora_edu.maths``.
"""
