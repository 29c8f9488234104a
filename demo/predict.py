"""``python -m demo.predict IMAGE``: each person's top emotions per model, optionally a JSON and a Figure 5.

Beside each model's emotions: how much the face, the body and the scene each moved its probability of the
target emotion (exact Shapley values, :mod:`sibnet.attribution`; they add up to the score minus the model's
score with no evidence at all).

Exit codes: 0 success, 2 bad input (unreadable image, unknown target...), with a one-line ``error:`` message.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from demo.cli import analyzer_from_args, photo_cli_parser, setup_logging, target_arg
from demo.pipeline import MODELS
from sibnet.boxes import scale_box
from sibnet.data.masking import BRANCHES


def build_parser() -> argparse.ArgumentParser:
    parser = photo_cli_parser("python -m demo.predict", __doc__.split("\n")[0])
    parser.add_argument("image", help="photo to analyse (JPEG, PNG, WebP, ...)")
    parser.add_argument("--json", type=Path, default=None, help="write everything shown as JSON here")
    parser.add_argument("--figure", type=Path, default=None, help="write the Figure-5 PNG of --person here")
    parser.add_argument(
        "--person", type=int, default=1, help="person of the figure, as printed (default 1, the leftmost)"
    )
    parser.add_argument("--top-k", type=int, default=3, help="emotions listed per model (default 3)")
    parser.add_argument(
        "--no-contributions",
        action="store_true",
        help="skip the face/body/scene contributions to the target (exact Shapley values; about half a "
        "second per photo on a small CPU)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        analyzer = analyzer_from_args(args)
        analysis = analyzer.analyze(args.image, target=target_arg(args.target), method=args.method)
        if not args.no_contributions:
            analysis = analyzer.attribute(analysis)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for notice in analysis.notices:
        print(f"note: {notice}")
    if not analysis.people:
        print("no person found")
    for p in analysis.people:
        estimated = [name for name, flag in (("face", p.face_estimated), ("body", p.body_estimated)) if flag]
        extra = f" (estimated {', '.join(estimated)})" if estimated else ""
        face = tuple(round(v) for v in scale_box(p.face_box, analysis.scale))  # the photo's own pixels
        print(f"person {p.id + 1}: face {face}{extra}")
        rows = []
        for key, pred in analysis.predictions.items():
            tops = ", ".join(
                f"{name} {score:.2f}" for name, score in pred.top(p.id, analysis.labels, args.top_k)
            )
            rows.append((key, tops))
        width = max(len(tops) for _, tops in rows)
        if analysis.attributions:
            header = "  ".join(f"{b:>6}" for b in BRANCHES)
            print(
                f"  {'':<14} {'top emotions':<{width}}   {header}   (contributions to {analysis.target_name(p.id)})"
            )
        for key, tops in rows:
            line = f"  {MODELS[key]:<14} {tops:<{width}}"
            contribution = analysis.attribution(key, p.id)
            if contribution is not None:
                line += "   " + "  ".join(f"{contribution['values'][b]:+6.3f}" for b in BRANCHES)
            print(line.rstrip())
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(analysis.to_json(args.top_k), indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.figure is not None:
        if not analysis.people:
            print("error: no person found, no figure written", file=sys.stderr)
            return 2
        from demo.render import figure5, save_png

        try:
            save_png(figure5(analysis, args.person - 1), args.figure)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
