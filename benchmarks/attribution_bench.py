"""What exact branch attributions cost next to the plain forward of the three Figure-5 models (issue 15).

``plain`` = one forward (backbone + head, no autograd) of concatenation, attention and SIB-Net for the
people of one photo: what the predictions alone cost. ``attribution`` = :func:`sibnet.attribution.
branch_attributions` for the same people and all three models, given the final maps of that plain pass (as
the demo has them): for concatenation and attention a head evaluation of the 8 coalitions, for SIB-Net one
backbone batch of its 6 mixed coalitions per person plus the head. The neutral maps are cached per model, so
they are computed during the warm-up, as in a running app. ``from_scratch`` is the same without the plain
pass's maps (each model's full triple joins the batch). Target on 2 CPU cores: ratio ≤ 2 for one person.

``precision`` (``--precision``) runs both sides on :func:`sibnet.inference.prepare`'s copies instead, as the
demo does: ``plain`` is then ``features`` + ``head`` of the prepared models, and the attributions take the
:class:`~sibnet.inference.InferenceModel` (SIB-Net's mixed coalitions through the prepared backbone).

Each repetition times plain and attribution back to back, so load from other processes hits both alike;
medians are reported. ``benchmarks/run.py`` calls :func:`bench_attribution`; run this file for a quick look:

    .venv/bin/python benchmarks/attribution_bench.py [--people 1] [--threads 2] [--reps 15] [--precision bf16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sibnet.attribution import branch_attributions  # noqa: E402
from sibnet.inference import InferenceModel, prepare  # noqa: E402
from sibnet.inference import features as model_features  # noqa: E402
from sibnet.inference import head as model_head  # noqa: E402
from sibnet.models.registry import create_model  # noqa: E402

FIGURE5 = ("concat", "attention", "sibnet")  # the three models of the paper's Figure 5, as the demo runs them
TARGET_RATIO = 2.0  # issue 15: one person, three models, ≤ 2× their plain forward on 2 cores


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def bench_attribution(
    people: int = 1,
    reps: int = 15,
    warmup: int = 3,
    threads: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    precision: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Time the attributions of the three Figure-5 models against their plain forward.

    Args:
        people: people in the batch (one photo's people; the demo analyses at most six).
        reps: timed repetitions (medians are reported).
        warmup: untimed repetitions first (the first calls are several times slower; they also fill the
            neutral-map cache, as the first request of a running app does).
        threads: torch CPU threads to use (None: leave the process's setting alone).
        device: where the models run.
        seed: seeds the untrained models and the inputs (timings do not depend on the pixel values).
        precision: None: the plain float32 models; ``"auto"``, ``"bf16"`` or ``"fp32"``: both sides on the
            prepared copies (:func:`sibnet.inference.prepare`), as the demo runs them.
        **overrides: ModelConfig fields for the three models (default: the app's, 224 px, layer4 stride 2).

    Returns:
        A dict: ``ratio`` (attribution / plain, medians), ``plain_ms``, ``attribution_ms``,
        ``per_model_ms`` (attribution per model), ``from_scratch_ms`` and ``from_scratch_ratio`` (without the
        plain pass's maps), ``target_ratio``, ``met``, and the settings (people, threads, input size, reps,
        ``precision``: ``"plain fp32"`` or the prepared models' description).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    originals = {key: create_model(key, **overrides).to(device).eval() for key in FIGURE5}
    models: dict[str, torch.nn.Module | InferenceModel] = (
        dict(originals)
        if precision is None
        else {key: prepare(model, device, precision) for key, model in originals.items()}
    )
    size = originals["sibnet"].config.input_size
    g = torch.Generator().manual_seed(seed)
    inputs = tuple(torch.randn(people, 3, size, size, generator=g).to(device) for _ in range(3))
    targets = [0] * people

    def sync() -> None:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    def plain() -> dict[str, tuple[torch.Tensor, ...]]:
        feats = {}
        for key, model in models.items():
            feats[key] = model_features(model, inputs)
            model_head(model, feats[key])
        return feats

    samples: dict[str, list[float]] = {"plain": [], "attribution": [], "from_scratch": []}
    per_model: dict[str, list[float]] = {key: [] for key in models}
    for rep in range(warmup + reps):
        sync()
        start = time.perf_counter()
        feats = plain()
        sync()
        plain_ms = _ms(start)
        total = 0.0
        for key, model in models.items():
            start = time.perf_counter()
            branch_attributions(model, inputs, targets, features=feats[key])
            sync()
            elapsed = _ms(start)
            total += elapsed
            if rep >= warmup:
                per_model[key].append(elapsed)
        start = time.perf_counter()
        for model in models.values():
            branch_attributions(model, inputs, targets)
        sync()
        scratch_ms = _ms(start)
        if rep >= warmup:
            samples["plain"].append(plain_ms)
            samples["attribution"].append(total)
            samples["from_scratch"].append(scratch_ms)
    med = {k: float(np.median(v)) for k, v in samples.items()}
    ratio = med["attribution"] / med["plain"]
    return {
        "people": people,
        "threads": torch.get_num_threads(),
        "device": device,
        "precision": "plain fp32" if precision is None else models["sibnet"].describe(),
        "input_size": size,
        "reps": reps,
        "plain_ms": round(med["plain"], 1),
        "attribution_ms": round(med["attribution"], 1),
        "ratio": round(ratio, 3),
        "per_model_ms": {k: round(float(np.median(v)), 1) for k, v in per_model.items()},
        "from_scratch_ms": round(med["from_scratch"], 1),
        "from_scratch_ratio": round(med["from_scratch"] / med["plain"], 3),
        "target_ratio": TARGET_RATIO,
        "met": ratio <= TARGET_RATIO,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default=None,
        help="run on sibnet.inference.prepare's copies, as the demo does (default: the plain fp32 models)",
    )
    args = parser.parse_args(argv)
    result = bench_attribution(
        args.people, args.reps, args.warmup, args.threads, args.device, precision=args.precision
    )
    print(json.dumps(result, indent=2))
    print(
        f"attributions of the three models: {result['attribution_ms']:.0f} ms = {result['ratio']:.2f}× their "
        f"plain forward ({result['plain_ms']:.0f} ms) for {result['people']} person(s) on {result['threads']} "
        f"thread(s), {result['precision']}; target ≤ {TARGET_RATIO:g}×: {'met' if result['met'] else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
