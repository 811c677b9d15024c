#!/usr/bin/env python
"""Copy a Llama checkpoint with wider attention heads that compute exactly the same function.

vLLM's CPU attention kernels take head sizes of 32 and up; ``demo-lm`` has 4 heads of 16. This
pads every head from ``d`` to ``d' = r * d`` dimensions with zeros so that the model's outputs do
not change (up to float rounding):

* queries and keys: original rotary pair ``i`` (frequency ``theta^(-2i/d)``) moves to pair
  ``r * i`` of the wider head, whose frequency ``theta^(-2ri/d')`` is the same; the other pairs
  are zero, so they add nothing to ``q . k``;
* the attention scale ``1/sqrt(d')`` is compensated by multiplying the queries by ``sqrt(r)``;
* values: the same positions; ``o_proj`` reads only those columns.

Usage::

    python examples/widen_heads.py examples/models/demo-lm /tmp/demo-lm-h32 --head-dim 32
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path


def _positions(old: int, ratio: int) -> list[int]:
    """Where each original head dimension lands in the wider head (rotate-half layout)."""
    half, wide_half = old // 2, old * ratio // 2
    return [i * ratio for i in range(half)] + [wide_half + i * ratio for i in range(half)]


def widen_heads(src: Path, dst: Path, head_dim: int) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    config = json.loads((src / "config.json").read_text())
    if config.get("model_type") != "llama":
        raise ValueError(f"only Llama checkpoints are supported, not {config.get('model_type')!r}")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", "default") != "default" or config.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("only the default rotary embedding over whole heads is supported")
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    old = config.get("head_dim") or config["hidden_size"] // heads
    if head_dim <= old or head_dim % old or old % 2:
        raise ValueError(f"--head-dim must be a multiple of the current head size {old} and larger")
    ratio = head_dim // old
    where = torch.tensor(_positions(old, ratio))

    def rows(weight: torch.Tensor, n: int, scale: float = 1.0) -> torch.Tensor:
        """[n*old, in] projection -> [n*head_dim, in] with zero rows in the new dimensions."""
        out = torch.zeros(n, head_dim, *weight.shape[1:], dtype=weight.dtype)
        out[:, where] = weight.reshape(n, old, *weight.shape[1:]) * scale
        return out.reshape(n * head_dim, *weight.shape[1:])

    tensors = {}
    for file in sorted(src.glob("*.safetensors")):
        tensors.update(load_file(file))
    widened = {}
    for name, tensor in tensors.items():
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            tensor = rows(tensor, heads, math.sqrt(ratio))
        elif name.endswith(("k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias")):
            tensor = rows(tensor, kv_heads)
        elif name.endswith("o_proj.weight"):
            tensor = rows(tensor.T.contiguous(), heads).T
        widened[name] = tensor.contiguous()

    dst.mkdir(parents=True, exist_ok=True)
    for file in src.iterdir():
        if file.is_file() and file.suffix != ".safetensors" and file.name != "config.json":
            shutil.copy2(file, dst / file.name)
    config["head_dim"] = head_dim
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(widened, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--head-dim", type=int, default=32)
    args = parser.parse_args()
    print(widen_heads(args.src, args.dst, args.head_dim))


if __name__ == "__main__":
    main()
