"""How reclustering and exact evaluation grow with N: seconds and peak memory, N = 60k to 1M.

    python bench/scaling.py --recluster=60000,120000,500000,1000000 --evaluate=60000,120000

Each point is a fresh process of `bench/recluster.py` (k-means K=32 on N x 2048 L2-normalised
features already on the device, 100 iterations, matching, singleton removal; the embedding pass
excluded) or `bench/evaluate.py` (exact leave-one-out R@1/10/100/1000 and MAP@R of N x 128
embeddings); its peak resident memory is the child's (`getrusage`), which on the CPU is also
the device's. Points not measured are extrapolated from the last two measured ones by the
growth law the algorithm has (k-means: linear in N; exact retrieval: quadratic), and labelled
"extrapolated". `--embed_images_per_s` adds the embedding pass at a measured throughput
(`bench/train_step.py --embed`: ResNet-50's eval forward pass on the device at hand), for the
"with the embedding pass" column. Prints one Markdown table.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


_WRAPPER = ("import resource, runpy, sys; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__'); "
            "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            "file=sys.stderr)")


def run_child(args) -> tuple[float, str]:
    """(peak RSS GiB of this child alone, its table row)."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True,
                         text=True, check=True)
    peak_kib = int(re.search(r"peak_rss_kib (\d+)", out.stderr).group(1))
    row = [line for line in out.stdout.splitlines() if line.startswith("|")][-1]
    return peak_kib / 2**20, row


def steady_seconds(row: str, column: int) -> float:
    cells = [c.strip() for c in row.strip("|").split("|")]
    return float(re.match(r"[\d.]+", cells[column]).group())


def extrapolate(points, n, power):
    (n1, t1, m1), (n2, t2, m2) = points[-2:]
    # t = a * n^power fitted to the last point; memory grows linearly in both (blocked).
    return t2 * (n / n2) ** power, m2 + (m2 - m1) * (n - n2) / (n2 - n1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--recluster", default="60000,120000,500000,1000000")
    p.add_argument("--evaluate", default="60000,120000")
    p.add_argument("--targets", default="60000,120000,500000,1000000")
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--embed_images_per_s", type=float, default=0.0)
    args = p.parse_args()
    targets = [int(n) for n in args.targets.split(",")]
    import jax

    machine = (f"{jax.devices()[0].device_kind} x{jax.device_count()}, {os.cpu_count()} cores, "
               f"python {platform.python_version()}, jax {jax.__version__}")
    rows = []
    for kind, sizes, power in (("recluster", args.recluster, 1), ("evaluate", args.evaluate, 2)):
        measured = []
        for n in (int(s) for s in sizes.split(",") if s):
            if kind == "recluster":
                child = [os.path.join(HERE, "recluster.py"), f"--n={n}", f"--iters={args.iters}"]
                column = 4
            else:
                child = [os.path.join(HERE, "evaluate.py"), f"--num_images={n}", "--dim=128"]
                column = 4
            peak, row = run_child(child)
            seconds = steady_seconds(row, column)
            measured.append((n, seconds, peak))
            print(f"{kind} N={n}: {seconds:.1f} s, peak {peak:.2f} GiB", file=sys.stderr,
                  flush=True)
        for n in targets:
            hit = next((m for m in measured if m[0] == n), None)
            if hit:
                seconds, peak, how = hit[1], hit[2], "measured"
            elif len(measured) >= 2:
                seconds, peak = extrapolate(measured, n, power)
                how = f"extrapolated (x N^{power})"
            else:
                continue
            embed = (f"{seconds + n / args.embed_images_per_s:.0f} s"
                     if kind == "recluster" and args.embed_images_per_s else "-")
            rows.append(f"| {kind} | {n:,} | {seconds:.1f} s | {embed} | {peak:.2f} GiB | {how} |")
    command = " ".join(["python bench/scaling.py", *sys.argv[1:]])
    print(f"\n`{command}` ({machine})\n")
    print("| what | N | seconds (embedding pass excluded) | with the embedding pass | "
          "peak memory | |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
