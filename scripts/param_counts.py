"""Print the parameter counts of PIADE per block, for both presets, both image sizes and 1 / 2 vectors.

Usage: ``PYTHONPATH=. python scripts/param_counts.py`` (a markdown table, pasted into
docs/reproduction-notes.md section 3). Models are built with ``pretrained=False``: counts do not
depend on the weights.
"""

from __future__ import annotations

import torch
from torch import nn

from piade_lib.model.network import PIADE, build_model

CONFIGS = [(p, s, n) for p in ("paper", "authors_code") for s in (120, 32) for n in (2, 1)]
BLOCKS = ("total", "trainable", "encoder", "of which SE", "pyramid", "routing", "upsampling", "decoder")


def count(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def block_counts(model: PIADE) -> dict[str, int]:
    """Parameters per block (the encoder includes its SE blocks, also shown on their own)."""
    return {
        "total": count(model),
        "trainable": count(model, trainable_only=True),
        "encoder": count(model.encoder),
        "of which SE": count(model.encoder.se),
        "pyramid": count(model.pyramid),
        "routing": count(model.routing),
        "upsampling": count(model.upsampling),
        "decoder": count(model.decoder),
    }


def main() -> None:
    torch.set_grad_enabled(False)
    rows = []
    for preset, size, n_vectors in CONFIGS:
        model = build_model(preset, size, n_vectors, pretrained=False)
        counts = block_counts(model)
        assert counts["total"] == sum(counts[k] for k in ("encoder", "pyramid", "routing", "upsampling", "decoder"))
        rows.append((f"`{preset}`", str(size), str(n_vectors), str(model.n_caps), *(f"{counts[k]:,}" for k in BLOCKS)))
    header = ("preset", "image", "vectors", "capsules", *BLOCKS)
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i < 1 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
