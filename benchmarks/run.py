"""``make bench``: speed and memory of the demo, printed as a table and written to docs/BENCHMARKS.md.

Measured in one run, on whatever machine runs it (CPU here; CUDA adds its own section):

1. full analysis (intake, detection, three models, nine branch maps, Figure-5 rendering) of a one-person
   photo and of multi-person photos: p50/p90 over ``--runs`` runs with the per-stage split;
2. the CAM stage against its limit and against the naive way, as ratios from the same process:
   ``plain`` = one plain forward of each of the three models (what predictions alone cost);
   ``ours`` = the CAM stage from scratch (backbone forward without autograd + head-only backward);
   ``naive`` = one pytorch-grad-cam call per branch per model on the whole network (9 forward+backward);
3. model throughput (triples/s) at batch 1, 8, 32;
4. serving: cold start of ``python app.py`` to its first answer, and its peak RSS (VmHWM) after requests;
5. on CUDA: the same, plus channels-last, bf16 autocast and torch.compile, and GPU memory.

Targets on 2 CPU cores (issue: "speed you can see"): full one-person analysis ≤ 1.0 s p50; CAM stage ≤ 1.3×
plain; ≥ 5× faster than naive; cold start ≤ 15 s; RSS ≤ 2.5 GB. Each row says whether it met its target.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from demo.pipeline import MODELS, Analyzer  # noqa: E402
from demo.render import figure5  # noqa: E402
from sibnet.cam import branch_cams, model_features, naive_branch_cams  # noqa: E402

PHOTOS = {
    "grace_hopper (1 person)": ROOT / "assets" / "examples" / "grace_hopper.jpg",
}
FAITHFULNESS_HEADING = "## CAM faithfulness on planted-cue data"  # written by benchmarks/cam_faithfulness.py
TARGETS = {"full_p50_s": 1.0, "cam_vs_plain": 1.3, "naive_vs_cam": 5.0, "cold_start_s": 15.0, "rss_gb": 2.5}


def _ultralytics_asset(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / name


def percentiles(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 90))


def timed(fn: Callable[[], Any], runs: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- 1. full analysis ---


def bench_full(analyzer: Analyzer, path: Path, runs: int) -> dict[str, Any]:
    stages: dict[str, list[float]] = {}
    totals: list[float] = []
    people = 0
    for i in range(runs + 2):
        start = time.perf_counter()
        result = analyzer.analyze(path)
        t_render = time.perf_counter()
        figure5(result, 0)
        end = time.perf_counter()
        if i < 2:
            continue  # warm-up
        people = len(result.people)
        totals.append(end - start)
        merged = {
            "intake": result.timings["intake"],
            "detection": result.timings["detect faces"] + result.timings.get("detect persons", 0.0),
            "masking": result.timings["masking"],
            "forward (3 models)": sum(v for k, v in result.timings.items() if k.startswith("forward ")),
            "CAMs (9 maps/person)": sum(v for k, v in result.timings.items() if k.startswith("cam ")),
            "figure": (end - t_render) * 1e3,
        }
        for k, v in merged.items():
            stages.setdefault(k, []).append(v)
    p50, p90 = percentiles(totals)
    return {
        "people": people,
        "p50_s": p50,
        "p90_s": p90,
        "runs": runs,
        "stages_ms_p50": {k: float(np.median(v)) for k, v in stages.items()},
    }


# --- 2. CAM stage ratios ---


def bench_cam_ratios(analyzer: Analyzer, path: Path, runs: int) -> dict[str, Any]:
    result = analyzer.analyze(path)
    models = {k: m.model for k, m in analyzer.models.items()}
    device = analyzer.device
    batches = analyzer.model_inputs(result)
    targets = {k: [result.targets[p.id] for p in result.people] for k in models}

    def plain() -> None:
        with torch.no_grad():
            for key, model in models.items():
                model(*batches[key])
        sync(device)

    def ours() -> None:
        for key, model in models.items():
            feats = model_features(model, batches[key])
            branch_cams(model, None, targets[key], "gradcam", features=feats)
        sync(device)

    def head_only() -> None:
        for key, model in models.items():
            branch_cams(model, None, targets[key], "gradcam", features=features[key])
        sync(device)

    def naive() -> None:
        for key, model in models.items():
            naive_branch_cams(model, batches[key], targets[key], "gradcam")
        sync(device)

    features = {k: model_features(m, batches[k]) for k, m in models.items()}
    t_plain = float(np.median(timed(plain, runs)))
    t_ours = float(np.median(timed(ours, runs)))
    t_head = float(np.median(timed(head_only, runs)))
    t_naive = float(np.median(timed(naive, max(3, runs // 3), warmup=1)))
    return {
        "people": len(result.people),
        "plain_ms": t_plain * 1e3,
        "cam_ms": t_ours * 1e3,
        "cam_head_only_ms": t_head * 1e3,
        "naive_ms": t_naive * 1e3,
        "cam_vs_plain": t_ours / t_plain,
        "naive_vs_cam": t_naive / t_ours,
    }


# --- 3. throughput ---


def bench_throughput(
    analyzer: Analyzer, batch_sizes: tuple[int, ...], runs: int
) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    device = analyzer.device
    for key, entry in analyzer.models.items():
        model = entry.model
        size = model.config.input_size
        out[key] = {}
        for b in batch_sizes:
            x = [torch.randn(b, 3, size, size, device=device) for _ in range(3)]

            def run(model: torch.nn.Module = model, x: list = x) -> None:
                with torch.no_grad():
                    model(*x)
                sync(device)

            t = float(np.median(timed(run, runs if b < 32 else max(2, runs // 3), warmup=1)))
            out[key][b] = b / t
    return out


# --- 4. serving: cold start and RSS ---


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def bench_serving(requests: int) -> dict[str, Any]:
    from gradio_client import Client, handle_file

    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        client = None
        while client is None:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode}")
            if time.perf_counter() - start > 180:
                raise RuntimeError("app.py did not come up within 180 s")
            try:
                client = Client(url, verbose=False)
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        ready = time.perf_counter() - start
        photo = handle_file(str(PHOTOS["grace_hopper (1 person)"]))
        client.predict(photo, "gradcam", "SIB-Net's top emotion", 0, api_name="/analyze")
        first_answer = time.perf_counter() - start
        api_times = []
        for name in ("zidane.jpg", "bus.jpg"):
            client.predict(
                handle_file(str(_ultralytics_asset(name))),
                "gradcam",
                "SIB-Net's top emotion",
                0,
                api_name="/analyze",
            )
        for _ in range(requests):
            t = time.perf_counter()
            client.predict(photo, "gradcam", "SIB-Net's top emotion", 0, api_name="/analyze")
            api_times.append(time.perf_counter() - t)
        rss = _peak_rss_bytes(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        "ready_s": ready,
        "cold_start_to_first_answer_s": first_answer,
        "api_p50_s": float(np.median(api_times)),
        "peak_rss_gb": rss / 1e9,
        "requests": requests + 3,
    }


# --- 5. CUDA extras ---


def bench_cuda_variants(analyzer: Analyzer, runs: int) -> dict[str, Any]:
    device = analyzer.device
    out: dict[str, Any] = {}
    for key, entry in analyzer.models.items():
        model = entry.model
        size = model.config.input_size
        x = [torch.randn(8, 3, size, size, device=device) for _ in range(3)]
        variants: dict[str, float] = {}

        def run(m: torch.nn.Module, inputs: list, autocast: bool = False) -> Callable[[], None]:
            def go() -> None:
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                    m(*inputs)
                torch.cuda.synchronize(device)

            return go

        variants["fp32"] = 8 / float(np.median(timed(run(model, x), runs)))
        cl = [t.contiguous(memory_format=torch.channels_last) for t in x]
        model_cl = model.to(memory_format=torch.channels_last)
        variants["channels-last"] = 8 / float(np.median(timed(run(model_cl, cl), runs)))
        variants["bf16 autocast + channels-last"] = 8 / float(np.median(timed(run(model_cl, cl, True), runs)))
        try:
            compiled = torch.compile(model_cl)
            variants["torch.compile + bf16 + channels-last"] = 8 / float(
                np.median(timed(run(compiled, cl, True), runs, warmup=3))
            )
        except Exception as err:  # noqa: BLE001 - report, don't fail the bench
            variants["torch.compile"] = f"failed: {type(err).__name__}: {err}"
        model.to(memory_format=torch.contiguous_format)
        out[key] = variants
    out["gpu_memory_peak_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return out


# --- report ---


def verdict(value: float, target: float, higher_is_better: bool = False) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "**missed**"


def render_markdown(res: dict[str, Any]) -> str:
    env = res["environment"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`benchmarks/run.py`); every figure below comes from one run, so the ratios",
        "compare like with like on a shared, noisy machine. Untrained weights (the timings do not depend on them).",
        "",
        f"- date: {env['date']}",
        f"- machine: {env['machine']}, {env['cpus']} CPUs visible, torch threads {env['threads']}, device **{env['device']}**",
        f"- torch {env['torch']}, Python {env['python']}",
        f"- runs per figure: {env['runs']}",
        "",
        "## Full analysis (intake → detection → 3 models → 9 maps per person → Figure 5)",
        "",
        "| photo | people | p50 (s) | p90 (s) | target | "
        + " | ".join(next(iter(res["full"].values()))["stages_ms_p50"])
        + " |",
        "|---|---|---|---|---|" + "---|" * len(next(iter(res["full"].values()))["stages_ms_p50"]),
    ]
    for name, r in res["full"].items():
        target = (
            f"≤ {TARGETS['full_p50_s']} s: {verdict(r['p50_s'], TARGETS['full_p50_s'])}"
            if r["people"] == 1
            else "—"
        )
        stages = " | ".join(f"{v:.0f}" for v in r["stages_ms_p50"].values())
        lines.append(
            f"| {name} | {r['people']} | {r['p50_s']:.3f} | {r['p90_s']:.3f} | {target} | {stages} |"
        )
    lines += ["", "Stage columns are p50 milliseconds.", ""]
    lines += [
        "## CAM stage: against its limit and against the naive way (same process, same inputs)",
        "",
        "| photo | people | plain forward ×3 models (ms) | our CAM stage (ms) | ratio (target ≤ 1.3) | head-only part (ms) | naive (ms) | naive / ours (target ≥ 5) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["cam"].items():
        lines.append(
            f"| {name} | {r['people']} | {r['plain_ms']:.0f} | {r['cam_ms']:.0f} | {r['cam_vs_plain']:.2f}× "
            f"({verdict(r['cam_vs_plain'], TARGETS['cam_vs_plain'])}) | {r['cam_head_only_ms']:.1f} | {r['naive_ms']:.0f} | "
            f"{r['naive_vs_cam']:.1f}× ({verdict(r['naive_vs_cam'], TARGETS['naive_vs_cam'], True)}) |"
        )
    lines += [
        "",
        "*plain*: one forward of each model without autograd (what predictions alone cost). *ours*: the CAM stage",
        "from scratch, backbone forward without autograd plus one head-only backward for all branches (in the app",
        "the backbone pass is shared with the predictions, so a CAM adds only the head-only part). *naive*: one",
        "pytorch-grad-cam call per branch per model on a single-input wrapper, gradients through the backbone.",
        "",
        "## Model throughput (triples/s, forward only)",
        "",
        "| model | " + " | ".join(f"batch {b}" for b in next(iter(res["throughput"].values()))) + " |",
        "|---|" + "---|" * len(next(iter(res["throughput"].values()))),
    ]
    for key, row in res["throughput"].items():
        lines.append(f"| {MODELS[key]} | " + " | ".join(f"{v:.1f}" for v in row.values()) + " |")
    if res.get("serving"):
        s = res["serving"]
        lines += [
            "",
            "## Serving (`python app.py` in a subprocess, driven with gradio_client)",
            "",
            "| figure | value | target |",
            "|---|---|---|",
            f"| process start → server up | {s['ready_s']:.1f} s | |",
            f"| cold start → first answer (one-person /analyze) | {s['cold_start_to_first_answer_s']:.1f} s | ≤ 15 s: {verdict(s['cold_start_to_first_answer_s'], TARGETS['cold_start_s'])} |",
            f"| one /analyze over HTTP, warm (p50) | {s['api_p50_s']:.2f} s | |",
            f"| peak RSS after {s['requests']} requests (VmHWM) | {s['peak_rss_gb']:.2f} GB | ≤ 2.5 GB: {verdict(s['peak_rss_gb'], TARGETS['rss_gb'])} |",
        ]
    if res.get("cuda"):
        lines += [
            "",
            "## CUDA variants (triples/s at batch 8)",
            "",
            "| model | variant | triples/s |",
            "|---|---|---|",
        ]
        for key, variants in res["cuda"].items():
            if key == "gpu_memory_peak_gb":
                continue
            for name, v in variants.items():
                lines.append(f"| {MODELS[key]} | {name} | {v if isinstance(v, str) else f'{v:.1f}'} |")
        lines.append(f"\nPeak GPU memory allocated: {res['cuda']['gpu_memory_peak_gb']:.2f} GB")
    elif env["device"] == "cpu":
        lines += ["", "CUDA section: not run (no GPU on this machine)."]
    if res.get("notes"):
        lines += ["", "## Notes", "", *res["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=12, help="timed runs per figure (after warm-up)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--no-serving", action="store_true", help="skip the app.py cold-start/RSS measurement"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "benchmarks.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    photos = dict(PHOTOS)
    photos["zidane (2 people)"] = _ultralytics_asset("zidane.jpg")
    photos["bus (2 faces found)"] = _ultralytics_asset("bus.jpg")

    analyzer = Analyzer(device=args.device)
    res: dict[str, Any] = {
        "environment": {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "device": str(analyzer.device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "runs": args.runs,
        },
        "full": {},
        "cam": {},
    }
    for name, path in photos.items():
        print(f"full analysis: {name} ...", flush=True)
        res["full"][name] = bench_full(analyzer, path, args.runs)
    for name, path in list(photos.items())[:2]:
        print(f"CAM ratios: {name} ...", flush=True)
        res["cam"][name] = bench_cam_ratios(analyzer, path, args.runs)
    print("throughput ...", flush=True)
    res["throughput"] = bench_throughput(analyzer, (1, 8, 32), max(3, args.runs // 2))
    if analyzer.device.type == "cuda":
        print("CUDA variants ...", flush=True)
        res["cuda"] = bench_cuda_variants(analyzer, args.runs)
    if not args.no_serving:
        del analyzer
        print("serving: cold start and RSS ...", flush=True)
        res["serving"] = bench_serving(requests=max(5, args.runs // 2))
    markdown = render_markdown(res)
    print()
    print(markdown)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists():  # keep the section `make bench-cam` appended (it takes far longer to remake)
        previous = args.out.read_text()
        if FAITHFULNESS_HEADING in previous:
            markdown += "\n" + FAITHFULNESS_HEADING + previous.split(FAITHFULNESS_HEADING, 1)[1]
    args.out.write_text(markdown)
    args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(f"wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
