"""``make bench-cam``: how faithful each model's branch maps are, SIB-Net against the two baselines.

Trains concatenation, attention and SIB-Net on planted-cue data (CAER-S format: the class is a coloured
square placed in the face, the body or the scene, and ``cues.json`` records where) with the library's own
training command, or loads checkpoints given with ``--weights``. Then, on the held-out test split, for each
model and each branch that holds a cue:

- **pointing game**: the share of items whose branch map (for the true class) peaks inside the cue;
- **ROAD** (Rong et al. 2022, pytorch-grad-cam's ``ROADCombined``): confidence change when the most vs. the
  least relevant pixels of the branch input are removed and in-filled, averaged over 10-90 %; higher = the
  map ranks pixels by what the model uses;
- **confidence drop** (pytorch-grad-cam's ``DropInConfidence``): the score lost when the branch input is
  multiplied by its map; lower = the map keeps what matters.

- **attribution**: the share of items whose cue's branch gets the largest exact Shapley attribution for the
  true class (:mod:`sibnet.attribution`). The models are trained with ``--neutral-dropout`` (default 0.1: each
  branch of each item made the neutral input with that probability; 0 is the paper's recipe). A model trained
  without it never sees a blank face or body, so its answer to one is arbitrary and the Shapley value then
  splits the credit between the branch with the cue and the one it needs beside it (the module docstring has
  the planted-cue figures); with it, "absent" means "no evidence" to the model.

Untrained models are measured too, as the floor. Figures go to stdout and ``docs/BENCHMARKS.md`` (appended
section). These are small CPU models on synthetic data: they show the machinery ranks maps sensibly, not how
the paper's models behave on EMOTIC.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence  # noqa: E402
from pytorch_grad_cam.metrics.road import ROADCombined  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget  # noqa: E402

import sibnet  # noqa: E402
from sibnet.attribution import branch_attributions  # noqa: E402
from sibnet.cam import branch_cams, pointing_hit  # noqa: E402
from sibnet.data.caer import CaerDataset  # noqa: E402
from sibnet.data.masking import BRANCHES, InputTransform  # noqa: E402
from sibnet.data.synthetic import make_synthetic_caer  # noqa: E402

MODELS = {"concat": "Concatenation", "attention": "Attention", "sibnet": "SIB-Net"}


class _OneBranch(torch.nn.Module):
    """The model as a function of one branch's input, the other two fixed (what ROAD perturbs)."""

    def __init__(self, model: torch.nn.Module, inputs: list[torch.Tensor], branch: int) -> None:
        super().__init__()
        self.model, self.inputs, self.branch = model, inputs, branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        args = [x if b == self.branch else t[: x.shape[0]] for b, t in enumerate(self.inputs)]
        return self.model(*args).logits


def evaluate(model: torch.nn.Module, data: CaerDataset, cues: dict, road_items: int) -> dict[str, dict]:
    model.eval()
    by_branch: dict[str, dict[str, list]] = {b: {"hits": [], "attributed": [], "items": []} for b in BRANCHES}
    correct = 0
    for i in range(len(data)):
        triple, record = data.triple(i), data.records[i]
        with torch.no_grad():
            correct += int(model(*triple.as_batch()).logits.argmax(1).item() == record.label)
        cue = cues[record.key]["cues"][0]
        b = BRANCHES.index(cue["region"])
        cams = branch_cams(model, triple.as_batch(), [record.label], "gradcam")
        by_branch[cue["region"]]["hits"].append(pointing_hit(cams.maps[0, b], triple.regions[b], cue["box"]))
        # Exact Shapley attribution (sibnet.attribution): does the cue's branch get the largest share?
        shares = branch_attributions(model, triple.as_batch(), [record.label]).values[0]
        by_branch[cue["region"]]["attributed"].append(int(np.argmax(shares)) == b)
        by_branch[cue["region"]]["items"].append((triple, record.label, cams.maps[0, b]))
    out: dict[str, dict] = {}
    road, drop = ROADCombined(percentiles=[10, 30, 50, 70, 90]), DropInConfidence()
    for name, entry in by_branch.items():
        if not entry["hits"]:  # no cue in this region in the data
            continue
        b = BRANCHES.index(name)
        items = entry["items"][:road_items]
        inputs = [torch.stack([t.stack()[k] for t, _, _ in items]) for k in range(3)]
        cams = np.stack([m for _, _, m in items]).astype(np.float32)
        targets = [ClassifierOutputSoftmaxTarget(label) for _, label, _ in items]
        wrapper = _OneBranch(model, inputs, b).eval()
        out[name] = {
            "n": len(entry["hits"]),
            "pointing": float(np.mean(entry["hits"])),
            "attribution": float(np.mean(entry["attributed"])),
            "road": float(np.mean(road(inputs[b], cams, targets, wrapper))),
            "confidence_drop": float(np.mean(drop(inputs[b], cams, targets, wrapper))),
            "accuracy": correct / len(data),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--weights", type=Path, default=None, help="folder with concat/, attention/, sibnet/ (skip training)"
    )
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument(
        "--road-items", type=int, default=24, help="items per branch for ROAD (its in-filling is slow)"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="where data and runs go (default: a temp dir)"
    )
    parser.add_argument(
        "--neutral-dropout",
        type=float,
        default=0.1,
        help="training's --neutral-dropout (each branch blank with this probability; 0: the paper's recipe)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="sibnet-faithfulness-"))
    data_root = work / "caer"
    if not data_root.is_dir():
        make_synthetic_caer(data_root, n_train=280, n_val=70, n_test=105, seed=1)
    cues = {item["key"]: item for item in json.loads((data_root / "cues.json").read_text())["items"]}
    size = args.input_size
    test = CaerDataset(data_root, "test", transform=InputTransform(size, size + 4))
    results: dict[str, dict] = {}
    for key, title in MODELS.items():
        torch.manual_seed(0)
        untrained = sibnet.create_model(key, num_classes=7, input_size=size, resize=size + 4, layer4_stride=1)
        results[f"{title} (untrained)"] = evaluate(untrained, test, cues, args.road_items)
        if args.weights is not None:
            model = sibnet.load_model(args.weights / key)
        else:
            start = time.perf_counter()
            from sibnet.train import main as train_main

            code = train_main(
                [
                    "--dataset", "caer", "--data-root", str(data_root), "--model", key, "--out", str(work / "runs"),
                    "--run-name", key, "--no-pretrained", "--epochs", str(args.epochs), "--batch-size", "32",
                    "--lr-backbone", "1e-3", "--input-size", str(size), "--resize", str(size + 4),
                    "--layer4-stride", "1", "--val-fraction", "0.2", "--workers", "0", "--no-progress", "--no-test",
                    "--seeds", "0", "--neutral-dropout", str(args.neutral_dropout),
                ]
            )  # fmt: skip
            if code != 0:
                raise SystemExit(f"training {key} failed ({code})")
            print(f"trained {title} in {time.perf_counter() - start:.0f} s", flush=True)
            model = sibnet.load_model(work / "runs" / key / "seed0" / "best")
        results[title] = evaluate(model, test, cues, args.road_items)
        print(title, json.dumps(results[title]), flush=True)

    lines = [
        "",
        "## CAM faithfulness on planted-cue data (`make bench-cam`)",
        "",
        f"Grad-CAM of the true class, test split of synthetic CAER-S ({len(test)} items, {size} px inputs, models "
        f"trained from scratch for {args.epochs} epochs on CPU). Pointing game: map peak inside the cue (higher is "
        "better); attribution: the cue's branch gets the largest exact Shapley attribution (`sibnet.attribution`, "
        f"higher is better; trained with `--neutral-dropout {args.neutral_dropout}`, see `sibnet.attribution` for why); "
        "ROAD combined (higher is better); confidence drop (lower is better).",
        "",
        "| model | test accuracy | branch holding the cue | items | pointing game | attribution | ROAD | "
        "confidence drop |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model_name, per_branch in results.items():
        for branch, r in per_branch.items():
            lines.append(
                f"| {model_name} | {r['accuracy']:.2f} | {branch} | {r['n']} | {r['pointing']:.2f} | {r['attribution']:.2f} | {r['road']:.3f} | {r['confidence_drop']:.3f} |"
            )
    lines += [
        "",
        "Reading it: an untrained model's scores are nearly uniform, so removing pixels changes little and its ROAD",
        "and confidence drop sit near 0; compare trained rows with each other. Test accuracy says how far each",
        "model learned the cues (chance is 1/7), and a branch whose cue the model barely uses cannot have a map that",
        "points at it: the scene cue, a small share of the scene branch's input, is learned least.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out.exists():
        existing = args.out.read_text()
        marker = "\n## CAM faithfulness on planted-cue data"
        existing = existing.split(marker)[0].rstrip("\n") + "\n"
        args.out.write_text(existing + text)
    else:
        args.out.write_text("# Benchmarks\n" + text)
    print(f"appended to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
