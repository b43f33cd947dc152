"""Image worker pipeline vs a naive Pillow pipeline, on the same images in the same run.

Ours: ``image_worker.processing.process`` (WebP + AVIF at the four default widths, plus the
metadata). Naive: full decode, each width resized from the full image with LANCZOS, WebP and
AVIF saved with Pillow's default settings, no metadata.

The inputs are made here: a 12 MP JPEG (4000x3000, gradients plus noise, quality 90) and a
2 MP PNG. The two pipelines alternate image by image so that drift in the machine's speed hits
both alike, and the median round counts. ``python -m bench.worker_pipeline [--quick]`` prints
the result; ``python -m bench --only worker_pipeline`` runs it with the other benchmarks.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from image_worker.processing import DEFAULT_WIDTHS, process

TARGET = 2.2


def _photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 128 + 100 * np.sin(x / 300) * np.cos(y / 200)
    green = 255 * x / width
    blue = 160 + 90 * np.sin((x + y) / 500)
    pixels = np.stack([red, green, blue], axis=-1)
    pixels += rng.normal(0, 12, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _inputs() -> list[bytes]:
    jpeg = io.BytesIO()
    _photo(4000, 3000, seed=1).save(jpeg, "JPEG", quality=90)
    png = io.BytesIO()
    _photo(1600, 1250, seed=2).save(png, "PNG")
    return [jpeg.getvalue(), png.getvalue()]


def naive(data: bytes) -> int:
    """What a first attempt looks like; returns the bytes written, to keep the work honest."""
    image = Image.open(io.BytesIO(data))
    image.load()
    written = 0
    for width in DEFAULT_WIDTHS:
        if width > image.width:
            continue
        height = round(image.height * width / image.width)
        variant = image.resize((width, height), Image.Resampling.LANCZOS)
        for fmt in ("WEBP", "AVIF"):
            buf = io.BytesIO()
            variant.save(buf, fmt)
            written += buf.tell()
    return written


def ours(data: bytes) -> int:
    return sum(len(v.data) for v in process(data).variants)


def run(quick: bool) -> dict[str, Any]:
    inputs = _inputs()
    rounds = 2 if quick else 5
    pipelines: dict[str, Callable[[bytes], int]] = {"ours": ours, "naive": naive}
    # Warm-up: first-use imports (scipy for the perceptual hash) and codec set-up.
    for pipeline in pipelines.values():
        pipeline(inputs[1])
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    cpu: dict[str, float] = dict.fromkeys(pipelines, 0.0)
    for index in range(rounds):
        elapsed = dict.fromkeys(pipelines, 0.0)
        for data in inputs:
            # Alternate which pipeline goes first, so a noisy neighbour hurts both alike.
            order = list(pipelines.items())
            for name, pipeline in order if index % 2 == 0 else reversed(order):
                wall, cpu_started = time.perf_counter(), time.process_time()
                pipeline(data)
                elapsed[name] += time.perf_counter() - wall
                cpu[name] += time.process_time() - cpu_started
        for name in pipelines:
            rates[name].append(len(inputs) / elapsed[name])
    ours_rate = statistics.median(rates["ours"])
    naive_rate = statistics.median(rates["naive"])
    per_image_cpu = {name: cpu[name] / (rounds * len(inputs)) for name in pipelines}
    return {
        "name": "worker_pipeline",
        "title": "Image worker: WebP + AVIF at 4 widths + metadata vs a naive Pillow pipeline",
        "ours": round(ours_rate, 3),
        "baseline": round(naive_rate, 3),
        "unit": "images/s",
        "ratio": round(ours_rate / naive_rate, 3),
        "target": TARGET,
        "notes": (
            "a 12 MP JPEG and a 2 MP PNG, one image at a time; ours = "
            "image_worker.processing.process (AVIF speed 8 q60, WebP method 4 q80, each width "
            "from the previous, encoders on 2 helper threads, plus metadata); baseline = full "
            "decode, every width from the full image (LANCZOS), Pillow's default WebP and AVIF; "
            f"median of {rounds} alternating round(s); CPU s per image: ours "
            f"{per_image_cpu['ours']:.2f}, baseline {per_image_cpu['naive']:.2f}"
        ),
        "ours_images_per_s": round(ours_rate, 3),
        "naive_images_per_s": round(naive_rate, 3),
        "details": {
            "ours_images_per_s": [round(r, 3) for r in rates["ours"]],
            "naive_images_per_s": [round(r, 3) for r in rates["naive"]],
            "cpu_s_per_image": {k: round(v, 3) for k, v in per_image_cpu.items()},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="two rounds instead of five")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
