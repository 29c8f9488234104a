"""What a published checkpoint says about itself: its results record and its Hugging Face model card.

Both are generated from the run's ``summary.json`` (:mod:`sibnet.training.summary`), never typed by hand:

- :func:`results_record` is the record stored under ``config.json["training"]["results"]`` of a published
  checkpoint (dataset, metric, test mean ± std over the seeds, the selected seed and its val and test
  scores), so the app reads a model's worth without parsing markdown (:func:`sibnet.publish.describe`);
- :func:`model_card` is the ``README.md`` of the checkpoint folder in the Hub's model-card format: YAML
  metadata (library, licence, tags, datasets, and the scores as a ``model-index`` through
  :class:`huggingface_hub.EvalResult`) and a body with the paper's citation, the recipe, the labels, the
  input recipe and the intended use and limits of emotion recognition from images;
- :func:`repo_card` is the card at the root of a weights folder (the Figure-5 set of three models).

Scores are fractions in the summary and the record, percent in the cards (as the paper reports them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sibnet.config import ModelConfig
from sibnet.data.registry import get_dataset
from sibnet.training.config import LR_BACKBONE, LR_GAMMA, LR_MILESTONES, LR_MODULES

RESULTS_KEY = "results"  # config.json["training"][RESULTS_KEY]
RESULTS_FORMAT = 1  # bumped when the record's keys change meaning
# The three models of the paper's Figure 5, in the order the recipe trains them: key → display title.
FIGURE5: dict[str, str] = {"sibnet": "SIB-Net", "concat": "Concatenation", "attention": "Attention"}
PAPER_CITATION = """@inproceedings{li2021sibnet,
  title     = {Sequential Interactive Biased Network for Context-Aware Emotion Recognition},
  author    = {Li, Xinpeng and Peng, Xiaojiang and Ding, Changxing},
  booktitle = {IEEE International Joint Conference on Biometrics (IJCB)},
  year      = {2021}
}"""


def select_seed(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The seed whose checkpoint is published: the best *validation* score (the first such seed on a tie).

    The test score never takes part: choosing the published seed by test would be test-set selection again,
    the bias the trainer avoids within a seed.

    Raises:
        ValueError: no seed has a finite validation score.
    """
    seeds = [
        s for s in summary["seeds"] if isinstance(s.get("val"), (int, float)) and math.isfinite(s["val"])
    ]
    if not seeds:
        raise ValueError(f"run {summary.get('run')!r} has no seed with a finite validation score")
    return max(seeds, key=lambda s: s["val"])  # max() keeps the first of equal values


def recipe_deviations(summary: Mapping[str, Any], config: ModelConfig) -> list[str]:
    """How the run's recipe differs from the paper's §4.2 (empty: it is the paper's recipe)."""
    spec = get_dataset(summary["dataset"])
    r = summary["recipe"]
    paper = {
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "lr_backbone": LR_BACKBONE,
        "lr_modules": LR_MODULES,
        "lr_milestones": list(LR_MILESTONES),
        "lr_gamma": LR_GAMMA,
        "weight_decay": 0.0,
    }
    out = [f"{key} {r.get(key)!r} (paper: {want!r})" for key, want in paper.items() if r.get(key) != want]
    if r.get("max_steps_per_epoch") is not None:
        out.append(f"at most {r['max_steps_per_epoch']} steps per epoch (paper: full epochs)")
    if not r.get("pretrained", True):
        out.append("trunks trained from scratch (paper: ImageNet-pretrained ResNet-18)")
    if r.get("neutral_dropout"):
        out.append(f"each branch blanked with probability {r['neutral_dropout']} in training (paper: never)")
    if (config.input_size, config.resize) != (224, 230):
        out.append(f"inputs {config.resize} → {config.input_size} px (paper: 230 → 224)")
    if len(summary["seeds"]) != 3:
        out.append(f"{len(summary['seeds'])} seed(s) (paper: the mean of three runs)")
    return out


def results_record(summary: Mapping[str, Any], key: str, config: ModelConfig) -> dict[str, Any]:
    """The results of a run, as stored in the published checkpoint's ``config.json["training"]``.

    Args:
        summary: the run's ``summary.json``.
        key: the model's Figure-5 slot (``"sibnet"``, ``"concat"``, ``"attention"``).
        config: the published checkpoint's model config (its input recipe is part of the recipe check).
    """
    spec = get_dataset(summary["dataset"])
    chosen = select_seed(summary)
    return {
        "format": RESULTS_FORMAT,
        "model": key,
        "title": FIGURE5.get(key, key),
        "variant": summary["variant"],
        "run": summary["run"],
        "dataset": spec.name,
        "dataset_title": spec.title,
        "metric": summary["metric"],
        "selection": "the seed with the best validation score; within a seed the best validation epoch",
        "test": summary["test"],  # {"mean", "std", "n"} over the seeds, None without a test split
        "val": summary["val"],
        "selected": {
            "seed": chosen["seed"],
            "epoch": chosen["best_epoch"],
            "val": chosen["val"],
            "test": chosen["test"],
        },
        "seeds": [
            {"seed": s["seed"], "epoch": s["best_epoch"], "val": s["val"], "test": s["test"]}
            for s in summary["seeds"]
        ],
        "paper": summary["paper"].get(spec.paper_key),  # percent, None where the paper gives none
        "deviations": recipe_deviations(summary, config),
    }


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def _eval_results(record: Mapping[str, Any]) -> list[Any]:
    """The record as ``model-index`` entries (percent): test mean, std, this checkpoint's test and val."""
    from huggingface_hub import EvalResult

    metric, n = record["metric"], len(record["seeds"])
    common = {
        "task_type": "image-classification",
        "task_name": "Context-aware emotion recognition",
        "dataset_type": record["dataset"],
        "dataset_name": record["dataset_title"],
    }
    chosen = record["selected"]
    results = []
    if record["test"] is not None:
        test = record["test"]
        results += [
            EvalResult(
                **common,
                dataset_split="test",
                metric_type=metric,
                metric_name=f"test {metric} (%), mean over {n} seeds",
                metric_value=round(100 * test["mean"], 2),
            ),
            EvalResult(
                **common,
                dataset_split="test",
                metric_type=f"{metric}_std",
                metric_name=f"test {metric} (%), standard deviation over {n} seeds",
                metric_value=round(100 * test["std"], 2),
            ),
        ]
        if chosen["test"] is not None:
            results.append(
                EvalResult(
                    **common,
                    dataset_split="test",
                    metric_type=metric,
                    metric_name=f"test {metric} (%) of this checkpoint (seed {chosen['seed']})",
                    metric_value=round(100 * chosen["test"], 2),
                )
            )
    results.append(
        EvalResult(
            **common,
            dataset_split="validation",
            metric_type=metric,
            metric_name=f"validation {metric} (%) of this checkpoint (seed {chosen['seed']})",
            metric_value=round(100 * chosen["val"], 2),
        )
    )
    return results


def _card_data(record: Mapping[str, Any], license: str, model_name: str) -> Any:
    from huggingface_hub import ModelCardData

    return ModelCardData(
        # The Hub has no "sibnet" library integration: the weights are plain PyTorch tensors in safetensors,
        # loaded with sibnet.load_model (said in the body and by the "sibnet" tag).
        library_name="pytorch",
        license=license,
        pipeline_tag="image-classification",
        tags=[
            "sibnet",
            "emotion-recognition",
            "context-aware-emotion-recognition",
            "safetensors",
            "resnet18",
        ],
        datasets=[record["dataset"]],
        metrics=[record["metric"]],
        model_name=model_name,
        eval_results=_eval_results(record),
    )


def _score_line(record: Mapping[str, Any]) -> str:
    test, metric = record["test"], record["metric"]
    if test is None:
        return f"validation {metric} {_pct(record['val']['mean'])} ± {_pct(record['val']['std'])} % (no test split)"
    return f"test {metric} {_pct(test['mean'])} ± {_pct(test['std'])} % over {test['n']} seeds"


def _results_table(record: Mapping[str, Any]) -> list[str]:
    metric = record["metric"]
    lines = [f"| seed | selected epoch | val {metric} (%) | test {metric} (%) | |", "|---|---|---|---|---|"]
    for s in record["seeds"]:
        mark = "**published**" if s["seed"] == record["selected"]["seed"] else ""
        lines.append(f"| {s['seed']} | {s['epoch']} | {_pct(s['val'])} | {_pct(s['test'])} | {mark} |")
    test = record["test"]
    lines.append(
        f"| mean ± std | | {_pct(record['val']['mean'])} ± {_pct(record['val']['std'])} | "
        f"{_pct(test['mean']) + ' ± ' + _pct(test['std']) if test else '–'} | |"
    )
    return lines


def _recipe_lines(summary: Mapping[str, Any], record: Mapping[str, Any]) -> list[str]:
    r = summary["recipe"]
    steps = r.get("max_steps_per_epoch")
    lines = [
        f"- Optimiser: Adam, lr {r['lr_backbone']:g} for the three ResNet-18 trunks and {r['lr_modules']:g} for "
        f"the context modules and classifiers, × {r['lr_gamma']:g} at "
        f"{', '.join(f'{100 * m:g} %' for m in r['lr_milestones'])} of the steps; weight decay "
        f"{r['weight_decay']:g}.",
        f"- Epochs: {r['epochs']}, batch {r['batch_size']}"
        f"{f', at most {steps} steps per epoch' if steps is not None else ''}; trunks "
        f"{'ImageNet-pretrained' if r['pretrained'] else 'trained from scratch'}.",
        f"- Loss: {summary['loss'].get('fused', 'bce').upper()} on the fused score"
        + (
            f", plus BCM ({summary['loss']['bcm']}, {summary['loss']['bcm_loss'].upper()} on the branch heads, "
            f"weight {summary['loss']['bcm_weight']:g})"
            if summary["loss"].get("bcm")
            else ""
        )
        + ".",
        f"- Selection: {record['selection']} (the test split is scored once, on the selected checkpoint).",
    ]
    if record["deviations"]:
        lines.append("")
        lines.append(
            "**This run does not follow the paper's recipe (§4.2)**, so its scores are not comparable with "
            "the paper's: " + "; ".join(record["deviations"]) + "."
        )
    return lines


def _input_lines(config: ModelConfig) -> list[str]:
    t = config.transform
    return [
        "Each person is three masked images (paper Eq. 3), in the branch order face → body → scene:",
        "",
        "- **face**: the face box cropped from the photo;",
        "- **body**: the person box cropped, with the face box inside it set to 0;",
        "- **scene**: the whole photo with the person box set to 0.",
        "",
        f"Each is resized to {t.resize}×{t.resize}, center-cropped to {t.size}×{t.size} (random crops in "
        f"training) and normalised with mean {list(t.mean)} and std {list(t.std)} after scaling to [0, 1]. "
        "`sibnet.data.masking.InputTransform` (built from this folder's `config.json` as "
        "`model.config.transform`) does exactly this; the demo finds faces with MTCNN and persons with YOLO.",
    ]


LIMITS = """\
These weights are for research on context-aware emotion recognition and for demonstrating what each
branch of the model looks at (the app draws a Grad-CAM map per branch). They are **not** fit to judge the
emotional state of real people, nor to inform decisions about them (hiring, admission, policing, credit,
health, surveillance):

- The labels are *perceived* emotions: what annotators guessed from a single photo, not what the person felt.
  Expressions differ between people, cultures and situations; a photo shows one moment without its context.
- Scores on one benchmark's test split say little about other photos, and even at the paper's level
  (35 % mAP on EMOTIC, 75 % accuracy on CAER-S) many predictions are wrong, unevenly across people.
- The training data are web photos and film frames with their own biases (who is pictured, in which settings,
  acted or not); performance on other populations or image sources is unknown.
- Predictions depend on the detected face and person boxes; a missed or wrong box changes the result.
- Emotion recognition from images is restricted in some jurisdictions and settings (for example, the EU AI
  Act prohibits it in workplaces and education institutions). The dataset's own terms of use (EMOTIC and
  CAER-S are distributed for research) may also restrict the use of weights trained on it."""


def model_card(
    summary: Mapping[str, Any],
    record: Mapping[str, Any],
    config: ModelConfig,
    *,
    license: str = "mit",
) -> Any:
    """The ``README.md`` of one published checkpoint folder, as a :class:`huggingface_hub.ModelCard`.

    Args:
        summary: the run's ``summary.json`` (recipe and loss).
        record: :func:`results_record` of the run.
        config: the checkpoint's model config (labels, input recipe).
        license: the ``license`` field of the card's metadata (a Hub licence identifier).
    """
    from huggingface_hub import ModelCard

    title = f"{record['title']} ({record['dataset_title']})"
    data = _card_data(record, license, title)
    paper = record["paper"]
    kind = "multi-label: one sigmoid per label" if config.multi_label else "single-label: softmax over labels"
    body = [
        f"# {title}",
        "",
        f"The **{record['title']}** model of the paper's Figure 5 (`{config.name}`, Table-2 row "
        f"*{record['variant']}*), trained on **{record['dataset_title']}** with `python -m sibnet.recipe`: "
        f"{_score_line(record)}. This folder holds the checkpoint of seed {record['selected']['seed']}, the "
        "seed with the best validation score.",
        "",
        "```python",
        "import sibnet",
        f'model = sibnet.load_model("path/or/owner/repo", subfolder="{record["model"]}")  # or the folder itself',
        "```",
        "",
        "## Results",
        "",
        *_results_table(record),
        "",
        f"The paper reports {paper:.2f} % on this dataset (selected on test by the released code; here selection "
        "uses validation only)."
        if paper is not None
        else "The paper reports no number for this model on this dataset.",
        "",
        "## Training recipe",
        "",
        *_recipe_lines(summary, record),
        "",
        f"## Labels ({len(config.labels)}, {kind}, in logit order)",
        "",
        *(f"{i}. {label}" for i, label in enumerate(config.labels, start=1)),
        "",
        "## Input recipe",
        "",
        *_input_lines(config),
        "",
        "## Intended use and limits",
        "",
        LIMITS,
        "",
        "## Citation",
        "",
        "```bibtex",
        PAPER_CITATION,
        "```",
        "",
        f"Generated by `sibnet` from `{record['run']}/summary.json`; the same numbers are stored in "
        f'`config.json["training"]["{RESULTS_KEY}"]`.',
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def repo_card(entries: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], *, license: str = "mit") -> Any:
    """The ``README.md`` at the root of a weights folder: the Figure-5 set, one line per model.

    Args:
        entries: ``(summary, record)`` per model, SIB-Net first; the metadata's ``model-index`` is SIB-Net's.
        license: the ``license`` field of the card's metadata.
    """
    from huggingface_hub import ModelCard

    _, main = entries[0]
    data = _card_data(main, license, f"{main['title']} ({main['dataset_title']})")
    lines = [
        f"# SIB-Net and its two baselines on {main['dataset_title']} (the paper's Figure-5 set)",
        "",
        "Three checkpoints, one per folder, each with its own model card; the SIB-Net demo loads this repository "
        "as a whole (`python app.py --weights <this repo>`, or `SIBNET_WEIGHTS=<this repo>` on a Space).",
        "",
        "| folder | model | result | published seed |",
        "|---|---|---|---|",
    ]
    for _, record in entries:
        lines.append(
            f"| [`{record['model']}/`]({record['model']}/README.md) | {record['title']} | {_score_line(record)} | "
            f"{record['selected']['seed']} |"
        )
    if main["deviations"]:
        lines += [
            "",
            "**These runs do not follow the paper's recipe (§4.2)**: " + "; ".join(main["deviations"]) + ".",
        ]
    lines += [
        "",
        "```python",
        "import sibnet",
        'model = sibnet.load_model("path/or/owner/repo", subfolder="sibnet")',
        "```",
        "",
        "## Intended use and limits",
        "",
        LIMITS,
        "",
        "## Citation",
        "",
        "```bibtex",
        PAPER_CITATION,
        "```",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def _short(value: Any, limit: int = 40) -> str | None:
    """A display string from a checkpoint's notes, or None (the file may hold anything)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = " ".join(value.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def describe_results(results: Any, model_name: str | None = None) -> str | None:
    """One line for a results record: ``"SIB-Net · EMOTIC · test mAP 35.1 ± 0.3"``; None without results.

    The test score (mean ± std over the seeds, percent) when the run had a test split, else the validation
    score, labelled so. Runs that left the paper's recipe say so (``" · not the paper's recipe"``), so a short
    or planted-cue run is never shown as a reproduction. Names come from the registries where they can (the
    record is read from a file that may hold anything), and anything malformed gives None.

    Args:
        results: ``config.json["training"]["results"]`` (:func:`results_record`).
        model_name: the checkpoint's model name, used when the record names no Figure-5 model.
    """
    if not isinstance(results, Mapping):
        return None
    key = results.get("model")
    title = FIGURE5.get(key) if isinstance(key, str) else None
    title = title or FIGURE5.get(model_name or "") or _short(results.get("title")) or _short(model_name)
    try:
        dataset = get_dataset(results.get("dataset")).title  # type: ignore[arg-type]
    except (ValueError, TypeError):
        dataset = _short(results.get("dataset_title")) or _short(results.get("dataset"))
    metric = results.get("metric")
    if title is None or dataset is None or metric not in ("mAP", "accuracy"):
        return None
    for split, scores in (("test", results.get("test")), ("val", results.get("val"))):
        if isinstance(scores, Mapping) and _finite(scores.get("mean")) and _finite(scores.get("std")):
            line = f"{title} · {dataset} · {split} {metric} {100 * scores['mean']:.1f} ± {100 * scores['std']:.1f}"
            if results.get("deviations"):
                line += " · not the paper's recipe"
            return line
    return None
