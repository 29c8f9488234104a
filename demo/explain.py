"""``python -m demo.explain --images DIR_OR_FILES --out DIR``: Figure-5 PNGs for every person of every photo.

Writes ``<out>/<name>_person<k>.png`` per person and ``<out>/<name>.json`` per photo, where ``<name>`` is the
photo's stem when that is unique among the inputs, else lengthened until it is (:func:`output_names`): the
suffix when the stems differ only by it (``grace.webp``, ``grace.tiff``), then the folders above it
(``a__photo``, ``b__photo``). Names are sanitised to one path component, so nothing is written outside
``--out`` and no output overwrites another of the same run; a photo given twice is analysed once. Unreadable
files are skipped with a message and counted; the exit code is 1 when any photo failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from demo.cli import analyzer_from_args, photo_cli_parser, setup_logging, target_arg

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif"}
FOLDER_JOIN = "__"  # between folder names in an output name: a/photo.jpg -> a__photo
MAX_NAME = 120  # characters of an output name (filesystems allow 255 bytes; "_person12.json" must fit)


def collect_images(paths: list[Path]) -> list[Path]:
    """Files as given (whatever their suffix: the loader decides), folders expanded to their image files,
    each file once (by resolved path), in the order given."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            )
        else:
            found.append(path)
    # A photo named twice (given directly and inside a folder given too) is one photo: analysed once.
    seen: set[Path] = set()
    out: list[Path] = []
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def _clean(text: str) -> str:
    """One safe file-name component: letters, digits, ``.``, ``-``, ``_``; no leading dot (no ``..``)."""
    text = re.sub(r"[^\w.-]+", "_", text, flags=re.ASCII).lstrip(".")
    return text[-MAX_NAME:].lstrip(".") or "image"  # the end names the file itself: keep that


def output_names(images: list[Path]) -> dict[Path, str]:
    """A unique output name per input, saying which input it came from (see the module docstring).

    Each input starts as its stem; while names clash (compared case-insensitively, as macOS and Windows
    do), every clashing input is lengthened: by its suffix if the clashing suffixes differ, else by one
    more folder above it. Inputs that still clash (the same name after sanitising) get ``-2``, ``-3``...

    Args:
        images: the inputs, distinct paths.

    Returns:
        ``{input: name}``; a name is one path component, never empty, at most ``MAX_NAME`` characters
        plus a counter.
    """
    folders = {p: [part for part in p.resolve().parent.parts if part not in ("/", "\\")] for p in images}
    depth = dict.fromkeys(images, 0)  # folders above the file included in its name
    with_suffix = dict.fromkeys(images, False)

    def name(p: Path) -> str:
        above = folders[p][len(folders[p]) - depth[p] :] if depth[p] else []
        last = p.name if with_suffix[p] else (p.stem or p.name)
        return _clean(FOLDER_JOIN.join([*above, last]))

    while True:
        names = {p: name(p) for p in images}
        counts = Counter(n.casefold() for n in names.values())
        groups: dict[str, list[Path]] = {}
        for p, n in names.items():
            if counts[n.casefold()] > 1:
                groups.setdefault(n.casefold(), []).append(p)
        progressed = False
        for members in groups.values():
            if len({p.suffix.casefold() for p in members}) > 1 and not all(with_suffix[p] for p in members):
                for p in members:
                    progressed |= not with_suffix[p]
                    with_suffix[p] = True
                continue
            if len({tuple(f.casefold() for f in folders[p]) for p in members}) == 1:
                continue  # one folder (x.jpg and x.JPG, "a b" and "a_b"): folders cannot tell them apart
            for p in members:
                if depth[p] < len(folders[p]):
                    depth[p] += 1
                    progressed = True
        if not groups or not progressed:
            break
    taken = {n.casefold() for n in names.values() if counts[n.casefold()] == 1}
    unique: dict[Path, str] = {}
    for p in images:
        n = candidate = names[p]
        if counts[n.casefold()] > 1:  # still clashing: the first keeps the name, the others are numbered
            k = 2
            while candidate.casefold() in taken:
                candidate = f"{n}-{k}"
                k += 1
            taken.add(candidate.casefold())
        unique[p] = candidate
    return unique


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
    names = output_names(images)
    failed: list[tuple[Path, str]] = []
    figures = no_person = 0
    for path in tqdm(images, desc="photos", unit="photo", file=sys.stderr):
        try:
            analysis = analyzer.analyze(path, target=target_arg(args.target), method=args.method)
            analysis = analyzer.attribute(analysis)
        except (ValueError, OSError) as err:
            failed.append((path, str(err)))
            tqdm.write(f"skipped {path}: {err}", file=sys.stderr)
            continue
        stem = names[path]
        (args.out / f"{stem}.json").write_text(
            json.dumps({"image": str(path), **analysis.to_json()}, indent=2) + "\n"
        )
        if not analysis.people:
            no_person += 1
        for person in analysis.people:
            save_png(figure5(analysis, person.id), args.out / f"{stem}_person{person.id + 1}.png")
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
