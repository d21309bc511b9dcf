"""Our ResNet-50 train step against a PyTorch step of the official recipe, same device, one run.

    python bench/torch_step.py --batch=80 --image_size=224      # the papers' batch
    python bench/torch_step.py --batch=16 --peak_tflops=989     # + the fraction of a peak

PyTorch side (the official CVPR recipe, as its train loop runs a batch): torchvision's
ResNet-50 (or, without torchvision, the same network written here in torch.nn) with frozen
BatchNorm statistics, dropout 0.01, Linear(2048 -> 128), K=8 separately normalised slices, the
margin loss (alpha 0.2, beta 1.2) over EasyPeasy negatives (the closest beyond 0.5), Adam 1e-5
with coupled weight decay 1e-4, float32, on a batch already augmented (the official code
augments in its DataLoader workers). Ours: the jitted `steps.make_train_step` of the same
recipe (configs/cvpr/sop.py's loss and optimiser), float32 unless --dtype, augmenting on the
device from uint8 rows. Prints one Markdown row: both times, the ratio, our step's FLOPs an
image twice, from XLA's cost analysis and counted from the step's jaxpr (bench/flops.py: 2 x
the multiply-adds of its convolutions and matrix products; on a GPU XLA's figure misses the
cuDNN convolutions, 0.2-0.3 GFLOP/image for ResNet-50), and from the counted FLOPs the rate
achieved (and the fraction of --peak_tflops when given).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flops import jaxpr_flops  # noqa: E402 - bench/flops.py (this script's folder)


def torch_resnet50(torch):
    try:
        import torchvision

        return torchvision.models.resnet50(), "torchvision"
    except Exception:  # noqa: BLE001 - no torchvision (its CPU wheel does not load beside torch)
        pass
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(width * 4)
            self.down = None
            if stride != 1 or cin != width * 4:
                self.down = nn.Sequential(nn.Conv2d(cin, width * 4, 1, stride, bias=False),
                                          nn.BatchNorm2d(width * 4))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                   nn.MaxPool2d(3, 2, 1)], 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for b in range(blocks):
            layers.append(Bottleneck(cin, width, stride if b == 0 else 1))
            cin = width * 4
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.fc = nn.Identity()
    return net, "torch.nn (torchvision layout)"


def torch_step_seconds(args, steps):
    import torch

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backbone, which = torch_resnet50(torch)
    backbone.fc = torch.nn.Identity()
    head = torch.nn.Linear(2048, 128)
    model = torch.nn.Sequential(backbone, torch.nn.Dropout(0.01), head).to(device)
    for m in model.modules():  # BatchNorm frozen at its statistics, scale and bias trained
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
            m.train = lambda mode=True, m=m: m
    opt = torch.optim.Adam(model.parameters(), lr=1e-5, weight_decay=1e-4)
    b, k = args.batch, 8
    x = torch.randn(b, 3, args.image_size, args.image_size, device=device)
    labels = torch.arange(b, device=device) // 4
    same = labels[:, None] == labels[None, :]

    def step():
        out = model(x)
        out = torch.cat([torch.nn.functional.normalize(c, dim=1) for c in out.chunk(k, 1)], 1)
        view = torch.nn.functional.normalize(out[:, :128 // k], dim=1)  # learner 0's slice
        d = torch.cdist(view, view).clamp_min(1e-4)
        neg = d + 1e6 * (same | (d < 0.5))
        n_idx = neg.topk(3, largest=False).indices
        pos = (same & ~torch.eye(b, dtype=bool, device=device)).float().topk(3).indices
        d_ap, d_an = d.gather(1, pos), d.gather(1, n_idx)
        terms = torch.relu(d_ap - 1.2 + 0.2) + torch.relu(1.2 - d_an + 0.2)
        loss = terms.sum() / ((terms > 0).sum() + 1e-9)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps, which, f"torch {torch.__version__} {device}"


def jax_step_seconds(args, steps):
    import jax
    import jax.numpy as jnp

    from dnc_jax import api, parallel
    from dnc_jax.training import optim, steps as steps_lib
    from dnc_jax.divide import masks, schedule
    from dnc_jax.losses import make_loss
    from dnc_jax.models.embedder import make_embedder
    from dnc_jax.models.variables import initial_variables

    config = api.get_config("cvpr/sop")
    config.model.pretrained = ""
    config.augment.image_size = args.image_size
    mesh = parallel.make_mesh()
    model = make_embedder(config.model, jnp.dtype(args.dtype).type)
    optimizer = optim.make_optimizer(config.optim)
    k, m = config.divide.num_learners, config.data.samples_per_class
    loss_fn = make_loss(config.loss, k, m)
    step = jax.jit(steps_lib.make_train_step(model, optimizer, loss_fn, config.augment),
                   donate_argnums=(0,))
    params, stats = initial_variables(model, config.model, k, jax.random.key(0),
                                      args.image_size)
    state = parallel.put_replicated(
        steps_lib.create_train_state({"model": params}, stats, optimizer), mesh)
    b = args.batch
    rng = np.random.default_rng(0)
    batch = parallel.put_batch({
        "images": rng.integers(0, 256, (b, args.image_size + 32, args.image_size + 32, 3),
                               np.uint8),
        "labels": np.repeat(np.arange(b // m), m).astype(np.int32),
        "learners": np.zeros(b, np.int32),  # round robin: the whole batch is one learner's
        "valid": np.ones(b, bool)}, mesh)
    phase = parallel.put_replicated(
        masks.phase_arrays(config, schedule.phase(config.divide, 0)), mesh)
    key = jax.random.key(1)
    counted = jaxpr_flops(step, state, batch, phase, key)  # traced only
    compiled = step.lower(state, batch, phase, key).compile()  # run too: compiled once
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float((cost or {}).get("flops", float("nan")))
    for _ in range(2):
        state, metrics = compiled(state, batch, phase, key)
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch, phase, key)
    jax.block_until_ready(metrics)
    return ((time.perf_counter() - t0) / steps, flops, counted,
            f"{jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=80)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--peak_tflops", type=float, default=0.0,
                   help="the device's peak, for the achieved fraction (H200 bf16 dense: 989)")
    args = p.parse_args()
    ours, flops, counted, jax_where = jax_step_seconds(args, args.steps)
    theirs, which, torch_where = torch_step_seconds(args, args.steps)
    achieved = counted / ours / 1e12
    peak = f"{achieved / args.peak_tflops:.1%}" if args.peak_tflops else "-"
    command = " ".join(["python bench/torch_step.py", *sys.argv[1:]])
    print(f"| {jax_where}; {torch_where} ({which}); {os.cpu_count()} cores, python "
          f"{platform.python_version()} | `{command}` | {args.batch} x {args.image_size} px, "
          f"ours {args.dtype} | {args.batch / ours:.1f} | {args.batch / theirs:.1f} | "
          f"{theirs / ours:.2f} | {flops / args.batch / 1e9:.1f} GFLOP/image | "
          f"{counted / args.batch / 1e9:.1f} GFLOP/image | {achieved * 1e3:.1f} GFLOP/s | "
          f"{peak} |")


if __name__ == "__main__":
    main()
