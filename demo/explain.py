"""``python -m demo.explain --images DIR_OR_FILES --out DIR``: Figure-5 PNGs for every person of every photo.

Writes ``<out>/<photo stem>_person<k>.png`` per person and ``<out>/<photo stem>.json`` per photo. Unreadable
files are skipped with a message and counted; the exit code is 1 when any photo failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from demo.cli import analyzer_from_args, photo_cli_parser, setup_logging, target_arg

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif"}


def collect_images(paths: list[Path]) -> list[Path]:
    """Files as given (whatever their suffix: the loader decides), folders expanded to their image files."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            )
        else:
            out.append(path)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = photo_cli_parser("python -m demo.explain", __doc__.split("\n")[0])
    parser.add_argument(
        "--images", nargs="+", type=Path, required=True, help="photos and/or folders of photos"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    images = collect_images(args.images)
    if not images:
        print("error: no images found in " + ", ".join(map(str, args.images)), file=sys.stderr)
        return 2
    try:
        analyzer = analyzer_from_args(args)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from demo.render import figure5, save_png

    args.out.mkdir(parents=True, exist_ok=True)
    failed: list[tuple[Path, str]] = []
    figures = no_person = 0
    for path in tqdm(images, desc="photos", unit="photo", file=sys.stderr):
        try:
            analysis = analyzer.analyze(path, target=target_arg(args.target), method=args.method)
        except (ValueError, OSError) as err:
            failed.append((path, str(err)))
            tqdm.write(f"skipped {path}: {err}", file=sys.stderr)
            continue
        stem = path.stem if path.stem else "image"
        (args.out / f"{stem}.json").write_text(
            json.dumps({"image": str(path), **analysis.to_json()}, indent=2) + "\n"
        )
        if not analysis.people:
            no_person += 1
        for person in analysis.people:
            save_png(figure5(analysis, person.id), args.out / f"{stem}_person{person.id}.png")
            figures += 1
    ok = len(images) - len(failed)
    print(
        f"{ok} of {len(images)} photos analysed, {figures} figures written to {args.out}"
        + (f", {no_person} with no person" if no_person else "")
        + (f", {len(failed)} failed" if failed else "")
    )
    for path, why in failed:
        print(f"  failed: {path}: {why}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
