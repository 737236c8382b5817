"""The LoRA layer, its variants and the adapter on disk.

- ``layer``: ``LoRALinear`` (ΔW = B A, B (d_out × r), A (r × d_in), scaling α/r) and the functions that inject,
  merge, unmerge, disable, remove and count it.
- ``variants``: rsLoRA, LoRA+, PiSSA, DoRA and the first-step update size.
- ``fit``: fitting a LoRA to a target matrix by gradient descent (notebook 04).
- ``quant``: a LoRA on a 4-bit NF4 base (QLoRA, torchao).
- ``adapter``, ``peft_format``, ``atomic_dir``: adapters in PEFT's format, written atomically and durably.
- ``peft_bridge``: importing PEFT quietly and pairing its layers with ours.

Imports only ``lora_edu.maths``; knows nothing of the GPT or the lessons.
"""
