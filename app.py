"""Entry point of the SIB-Net demo (a Gradio app over demo.pipeline; the UI lands with the web-app issue)."""

from __future__ import annotations


def main() -> None:
    print(
        "SIB-Net demo: the web app (upload a photo -> people, emotions and per-branch Grad-CAM maps for SIB-Net "
        "and the concatenation/attention baselines) is not built yet. The library is usable: "
        "`python -c 'import sibnet; print(sibnet.list_models())'`."
    )


if __name__ == "__main__":
    main()
