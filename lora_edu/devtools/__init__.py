"""Instruments for developers, not taught in the lessons.

- ``devicecheck``: records which devices each operation's tensors live on and refuses a mix.
- ``synccheck``: records host-device syncs inside a training step, on a CPU.

Used by ``tests/`` and ``benchmarks/``; no lesson imports them.
"""
