"""Weight-import parity against torchvision's own ResNet-50, on whatever device is present.

    python bench/torchvision_parity.py [--out=parity.json]

Builds `torchvision.models.resnet50()` with random weights and random BatchNorm statistics,
saves its state dict as safetensors, imports it with `dnc_jax.models.pretrained`, runs both
networks in float32 eval mode on the same images (torch on CUDA when available, ours on the
default JAX device) and prints the max abs difference of the pooled 2048-d features, and the
same for our bfloat16 compute. Needs torch and torchvision (the GPU machine has both).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnc_jax.models.embedder import make_embedder  # noqa: E402
from dnc_jax.models.variables import initial_variables  # noqa: E402


def main():
    import torch
    import torchvision
    from safetensors.numpy import save_file

    p = argparse.ArgumentParser()
    p.add_argument("--out", default="")
    args = p.parse_args()
    torch.manual_seed(0)
    net = torchvision.models.resnet50()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.0)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    net.fc = torch.nn.Identity()
    net.eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = net.to(device)
    images = np.random.default_rng(0).normal(size=(8, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(images).to(device)).cpu().numpy()
    result = {"torch_device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "jax_device": jax.devices()[0].device_kind}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "resnet50.safetensors")
        state = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
        save_file(state, path)
        for dtype in ("float32", "bfloat16"):
            cfg = ml_collections.ConfigDict(dict(
                name="resnet50", width=64, stem="imagenet", bn_frozen=True, pooling="avg",
                dropout=0.01, embedding_dim=128, head_init="pt_default", pretrained=path))
            model = make_embedder(cfg, jnp.dtype(dtype).type)
            params, stats = initial_variables(model, cfg, 1, jax.random.key(0), 224)
            variables = {"params": params, "batch_stats": stats}
            got = jax.jit(lambda x, v, m=model: m.apply(v, x, train=False)["pooled"])(
                jnp.asarray(images.transpose(0, 2, 3, 1)), variables)
            diff = float(np.abs(np.asarray(got, np.float32) - want).max())
            result[f"max_abs_diff_{dtype}"] = diff
            result["feature_abs_mean"] = float(np.abs(want).mean())
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
