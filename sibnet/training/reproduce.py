"""The reproduction table of docs/REPRODUCE.md, generated from the model and dataset registries: for every
number of the paper's Tables 1 and 2, the command that reproduces it and what it costs."""

from __future__ import annotations

import functools
from typing import Any

import torch

from sibnet.config import ModelConfig
from sibnet.data.registry import get_dataset
from sibnet.models.registry import TABLE1, TABLE2, build_model, model_config

# Effective training throughput assumed for one A100-class GPU with bf16 autocast: ~30 TFLOP/s, what
# ResNet-50 training reaches there (~2,500 img/s x 12.3 GFLOP per image, forward + backward).
GPU_EFFECTIVE_FLOPS = 30e12


@functools.cache
def forward_flops(config: ModelConfig) -> int:
    """FLOPs of one forward pass of one triple (counted on the meta device: no memory, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_model(config).eval()  # eval: a 1-item batch must pass BatchNorm at any input size
        inputs = [torch.empty(1, 3, config.input_size, config.input_size) for _ in range(3)]
    counter = FlopCounterMode(display=False)
    with counter:
        model(*inputs)
    return int(counter.get_total_flops())


def reproduction_rows() -> list[dict[str, Any]]:
    """One entry per number of the paper's Tables 1 and 2: the command that reproduces it and its cost."""
    common = "--seeds 0 1 2 --out runs"
    rows: list[dict[str, Any]] = []

    def add(table: str, label: str, dataset: str, selector: str, model: str, paper: float) -> None:
        spec = get_dataset(dataset)
        cfg = model_config(model, labels=spec.labels, multi_label=spec.multi_label)
        fwd = forward_flops(cfg)
        # Training ≈ 3 forward passes (forward + backward); validation once per epoch.
        total = spec.epochs * (3 * fwd * spec.train_items + fwd * spec.val_items)
        rows.append(
            {
                "table": table,
                "label": label,
                "dataset": dataset,
                "model": model,
                "paper": paper,
                "command": f"python -m sibnet.train --dataset {dataset} --data-root data/{dataset} {selector} {common}",
                "gflops_per_triple": fwd / 1e9,
                "gpu_hours_per_seed": total / GPU_EFFECTIVE_FLOPS / 3600,
            }
        )

    for label, row in TABLE2.items():
        add("2", label, "emotic", f"--variant '{label}'", row.model, row.emotic_map)
    for label, (model, loss, emotic, caer) in TABLE1.items():
        same = [r for r in TABLE2.values() if r.model == model and r.loss == loss]
        selector = f"--variant '{same[-1].label}'" if same else f"--model {model}"
        add("1", label, "emotic", selector, model, emotic)
        if caer is not None:
            add("1", label, "caer", f"--model {model}", model, caer)
    return rows


def reproduction_markdown() -> str:
    """The table of docs/REPRODUCE.md (``python -c 'from sibnet.training.reproduce import
    reproduction_markdown as m; print(m())'``)."""
    lines = [
        "| table | row | dataset | paper | GFLOPs/triple (fwd, 224 px) | est. GPU h per seed | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reproduction_rows():
        metric = "mAP" if r["dataset"] == "emotic" else "OSA"
        lines.append(
            f"| {r['table']} | {r['label']} | {r['dataset']} | {r['paper']:.2f} % {metric} | "
            f"{r['gflops_per_triple']:.1f} | {r['gpu_hours_per_seed']:.2f} | `{r['command']}` |"
        )
    return "\n".join(lines)
