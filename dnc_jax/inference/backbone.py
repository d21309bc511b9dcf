"""A trained run's backbone as a weight file that `model.pretrained` reads: the pretraining half
of "train on one corpus, fine-tune on another", as the papers start from ImageNet weights.

    dnc-jax backbone --workdir=runs/pretrain --out=runs/pretrained/model.safetensors
    python -m dnc_jax.main --config=configs/demo_finetune.py \\
        --config.model.pretrained=runs/pretrained/model.safetensors

Writes the newest checkpoint's backbone (not the embedding head, not the loss's proxies) in
safetensors, in the layout its weights are read from: a ResNet as torchvision's state dict
(convolutions, BatchNorm scale/bias and running statistics), a ViT or a ConvNeXt as timm's.
Beside it goes timm's `config.json` (architecture, mean/std of `augment.normalization`, the
`model.vit` options a ViT needs to be rebuilt, source run and epoch): a fine-tuning run then
refuses another normalisation, as it does for timm's files. A ResNet trained here loads into
torchvision's ResNet of the same depth and width with `strict=True`, a ViT or ConvNeXt into
timm's model of the same layout.
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import flags

from dnc_jax import cli
from dnc_jax.errors import UserError


class BackboneExportError(UserError):
    """A run whose backbone cannot be written as asked."""


def config_json_path(out_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(out_path)), "config.json")


def _check_beside(out_path: str) -> None:
    """config.json beside the weights is timm's place for their normalisation; a config.json
    there that is not such a file (a training run's own) must not be overwritten."""
    path = config_json_path(out_path)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            ours = "pretrained_cfg" in json.load(f)
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise BackboneExportError(
            f"--out={out_path}: {path} exists and is not a weight description (a training "
            f"run's config?); write the backbone into a folder of its own")


def export_backbone(workdir: str, out_path: str) -> dict:
    """Writes the backbone of the run in `workdir` to `out_path` (+ config.json beside it);
    returns what config.json says."""
    from safetensors.numpy import save_file

    from dnc_jax.data.views import augment
    from dnc_jax import defaults
    from dnc_jax.models import convnext, convnext_import, pretrained, vit, vit_import
    from dnc_jax.inference.restore import load_trained

    if not out_path.endswith(".safetensors"):
        raise BackboneExportError(f"--out={out_path}: the file must end in .safetensors")
    _check_beside(out_path)
    trained = load_trained(workdir)
    trained.embed_fn.close()
    config = trained.config
    backbone_options = {"model.pooling": config.model.pooling}
    if vit.is_vit(config.model.name):  # timm's layout, as model.pretrained reads it
        tensors = vit_import.backbone_state_dict(trained.model_params["backbone"])
        backbone_options.update({f"model.vit.{k}": v for k, v in
                                 defaults.filled(config.model, "model").vit.items()})
    elif convnext.is_convnext(config.model.name):
        tensors = convnext_import.backbone_state_dict(trained.model_params["backbone"])
    else:
        tensors = pretrained.backbone_state_dict(trained.model_params["backbone"],
                                                 trained.batch_stats["backbone"])
    mean, std = augment.normalization_constants(config.augment.normalization)
    description = {
        "architecture": config.model.name,
        "pretrained_cfg": {"mean": list(mean), "std": list(std),
                           "input_size": [3, config.augment.image_size,
                                          config.augment.image_size]},
        "dnc_jax": {"workdir": os.path.abspath(workdir), "epoch": trained.embed_fn.epoch,
                    "step": trained.embed_fn.step, "model.width": config.model.width,
                    "model.stem": config.model.stem, **backbone_options,
                    "data": config.data.name, "num_tensors": len(tensors),
                    "num_values": int(sum(np.size(t) for t in tensors.values()))},
    }
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    # Written beside, then renamed: an interrupted export leaves no half file to fine-tune from.
    tmp = out_path + ".tmp"
    save_file(tensors, tmp)
    os.replace(tmp, out_path)
    with open(config_json_path(out_path) + ".tmp", "w") as f:
        json.dump(description, f, indent=1)
    os.replace(config_json_path(out_path) + ".tmp", config_json_path(out_path))
    return description


def main():
    FLAGS = flags.FLAGS
    description = export_backbone(FLAGS.workdir, FLAGS.out)
    info = description["dnc_jax"]
    print(f"{FLAGS.out}: {description['architecture']} backbone, {info['num_tensors']} tensors "
          f"({info['num_values']:,} values) of {FLAGS.workdir} at epoch {info['epoch']}; "
          f"normalisation in {config_json_path(FLAGS.out)}", flush=True)


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "Training run folder (config.json, checkpoints/).")
    flags.DEFINE_string("out", None, "Output .safetensors file; config.json is written beside it.")
    flags.mark_flags_as_required(["workdir", "out"])
    cli.run(main)
