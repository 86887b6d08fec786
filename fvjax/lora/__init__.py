"""LoRA: low-rank adapters on the Dense layers a recipe names, trained while the base stays frozen.

- `spec.py`: `models.<role>.lora` (enable, rank, alpha, target_modules) and FastVideo's defaults;
- `targets.py`: which Dense kernels a spec adapts, found through the family's Diffusers key map (any
  family whose Linear tensors are in its key map gets LoRA, with Diffusers module names to match);
- `factors.py`: the adapter module attached to a Dense, the factor tree (A [in, r], B [r, out] beside
  each adapted kernel), and merging the delta into full weights;
- `peft_file.py`: Diffusers / PEFT `pytorch_lora_weights.safetensors` written and read.
"""
