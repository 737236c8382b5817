"""Scaling out (notebook 07).

- ``distributed``: data-parallel and FSDP fine-tuning with ``torch.distributed``, launched by ``torchrun``
  (``python -m lora_edu.scale.distributed``).
- ``serving``: many adapters in one batch (batched, merge-swap, one request at a time).

Imports ``lora_edu.gpt``, ``lora_edu.lora`` and ``lora_edu.maths``.
"""
