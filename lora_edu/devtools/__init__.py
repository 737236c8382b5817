"""Instruments for developers, not taught in the lessons.

- ``devicecheck``: records which devices each operation's tensors live on and refuses a mix.
- ``synccheck``: records host-device syncs inside a training step, on a CPU.
- ``portable``: compares a notebook cell's trained figures within a declared tolerance (used by ``conftest.py``
  and ``benchmarks/portability.py``).

Used by ``tests/`` and ``benchmarks/``; no lesson imports them.
"""
