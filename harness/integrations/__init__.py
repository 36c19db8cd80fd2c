"""The harness's edges to other projects: flash-linear-attention (GPU kernels and its pure-torch
references), checkpoint conversion from fla / Hugging Face, the Hub's online/offline policy, and
lm-evaluation-harness (adapter, CLI wrapper, local tasks)."""
