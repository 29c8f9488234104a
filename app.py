"""SIB-Net demo: ``python app.py`` serves the Gradio app locally (127.0.0.1:7860) or as a Hugging Face Space.

Flags and their environment variables (flags win):

  --host (SIBNET_HOST or GRADIO_SERVER_NAME, default 127.0.0.1; Spaces: 0.0.0.0)
  --port (SIBNET_PORT or GRADIO_SERVER_PORT, default 7860)
  --share (SIBNET_SHARE=1): a public gradio.live link
  --device (SIBNET_DEVICE), --weights (SIBNET_WEIGHTS: folder or Hub repo with sibnet/, concat/, attention/),
  --sibnet-weights/--concat-weights/--attention-weights (SIBNET_WEIGHTS_<MODEL>), --revision, --yolo-weights

The app stays a thin entry point: models load once here (one log line per stage); the UI is demo/ui.py.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # the log's times count from here, before any heavy import

import os  # noqa: E402

# Hugging Face ZeroGPU: `spaces` must be imported before torch initialises CUDA. Elsewhere it is absent.
try:
    import spaces
except ImportError:
    spaces = None

import argparse  # noqa: E402
import logging  # noqa: E402

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # analytics stay off unless the user turns them on
# OpenMP threads sleep between the model calls instead of spinning: the web server's own threads share the
# cores (measured with one other busy process, spinning made a forward swing from 0.5 to 8.6 s; make bench).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    from demo.cli import add_analyzer_args

    on_space = bool(os.environ.get("SPACE_ID"))
    parser = argparse.ArgumentParser(
        prog="python app.py", description="SIB-Net explainable emotion recognition demo"
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("SIBNET_HOST")
        or os.environ.get("GRADIO_SERVER_NAME")
        or ("0.0.0.0" if on_space else "127.0.0.1"),
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("SIBNET_PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860),
    )
    parser.add_argument(
        "--share", action="store_true", default=_env_flag("SIBNET_SHARE"), help="public gradio.live link"
    )
    add_analyzer_args(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("sibnet.app")
    start = _STARTED
    from demo.cli import analyzer_from_args
    from demo.ui import build_ui, launch_kwargs

    log.info(
        "imports done in %.1f s (torch, torchvision, pytorch-grad-cam, gradio)", time.perf_counter() - start
    )
    analyzer = analyzer_from_args(args)
    for notice in analyzer.load_notices:
        log.warning("%s", notice)
    demo = build_ui(analyzer)
    log.info(
        "ready in %.1f s on %s; serving http://%s:%d",
        time.perf_counter() - start,
        analyzer.device,
        args.host,
        args.port,
    )
    demo.launch(**launch_kwargs(args.host, args.port, args.share))


if __name__ == "__main__":
    main()
