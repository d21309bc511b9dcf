"""Why the host decodes JPEGs with PIL: simplejpeg against PIL on the training crop's path.

    pip install simplejpeg && python bench/jpeg_decoders.py [--count=300] [--repeats=3]

simplejpeg is not a dependency; this bench is the measurement behind not making it one. On real
photographs (scikit-learn's china.jpg and flower.jpg, matplotlib's grace_hopper.jpg) resized to
each benchmark's typical size and saved as JPEG quality 90 (as `bench/input_pipeline.py` does),
for each benchmark: whether simplejpeg's RGB pixels equal PIL's `convert('RGB')` exactly (same
libjpeg-turbo IDCT and chroma upsampling), ms per image and core for decoding alone and for the
whole 224 px train crop from the bytes (decode + torchvision's RandomResizedCrop in PIL), both
decoders interleaved, the best of `--repeats` rounds. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import input_pipeline  # noqa: E402

from dnc_jax.data.views import host_views  # noqa: E402
from dnc_jax.data.store.encoded import decode_bytes  # noqa: E402


def simplejpeg_image(data):
    import simplejpeg
    from PIL import Image

    return Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False,
                                                  fastupsample=False))


def best_ms(work, count, repeats):
    """{name: best ms per item over the rounds}, the workloads interleaved within each round."""
    best = {}
    for _ in range(repeats):
        for name, fn in work.items():
            start = time.perf_counter()
            for i in range(count):
                fn(i)
            ms = (time.perf_counter() - start) / count * 1e3
            best[name] = min(best.get(name, ms), ms)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=300, help="images timed per figure and round")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    photos = input_pipeline.photographs()
    rng = np.random.default_rng(0)
    print(f"\n`python bench/jpeg_decoders.py {' '.join(sys.argv[1:])}` "
          f"({os.cpu_count()} cores)\n")
    print("| benchmark | typical size | same pixels | decode ms: PIL | simplejpeg | PIL / "
          "simplejpeg | crop ms: PIL | simplejpeg | PIL / simplejpeg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (_, size) in input_pipeline.BENCHMARKS.items():
        encoded = input_pipeline.encode_at(photos, size)
        same = all(np.array_equal(np.asarray(decode_bytes(b)), np.asarray(simplejpeg_image(b)))
                   for b in encoded)
        boxes = host_views.random_resized_crop_boxes(
            rng, np.tile([size[1], size[0]], (args.count, 1)))
        item = lambda i: encoded[i % len(encoded)]  # noqa: E731
        ms = best_ms({
            "decode pil": lambda i: decode_bytes(item(i)),
            "decode simplejpeg": lambda i: simplejpeg_image(item(i)),
            "crop pil": lambda i: host_views.train_view(decode_bytes(item(i)), boxes[i], 224),
            "crop simplejpeg": lambda i: host_views.train_view(simplejpeg_image(item(i)),
                                                               boxes[i], 224),
        }, args.count, args.repeats)
        print(f"| {name} | {size[0]} x {size[1]} | {'yes' if same else 'NO'} | "
              f"{ms['decode pil']:.2f} | {ms['decode simplejpeg']:.2f} | "
              f"{ms['decode pil'] / ms['decode simplejpeg']:.2f} | {ms['crop pil']:.2f} | "
              f"{ms['crop simplejpeg']:.2f} | {ms['crop pil'] / ms['crop simplejpeg']:.2f} |")


if __name__ == "__main__":
    main()
