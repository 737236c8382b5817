"""The maths of the early lessons, in NumPy only (no torch).

- ``linalg``: rank by elimination, null spaces, the SVD and the best rank-k approximation (notebooks 01-02).
- ``arch``: parameter and memory arithmetic for real architectures, with and without LoRA (notebook 03).
- ``intervals``: the Wilson interval of a rate observed on few items, Newcombe's for a paired difference (05b-07).
- ``timing``: two timings from the same interleaved rounds, compared round by round (notebooks 06-07).
- ``matching``: two methods matched on learning: the pair of learning rates that learned about as much (05b).

Imports nothing else from ``lora_edu``.
"""
