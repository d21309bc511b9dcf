"""Benchmarks prepared with TensorFlow Datasets: caltech_birds2011, cars196,
stanford_online_products, read through `tfds.data_source` (no TensorFlow needed to read).

Only a data set already prepared on disk is read: `<data_dir>/<name>/<version>/dataset_info.json`
must exist, with ArrayRecord files (the random-access format data sources need). Anything else
is a one-line DataError saying how to prepare it, and tfds is never asked to download (it would
retry for minutes without network, and preparing needs TensorFlow anyway).

The records hold encoded images. They are written once, as they are, to files under the cache
directory (with a manifest of labels written last, so a half-written extraction is redone), and
those files go through the same decode cache as every other source.

tfds's CUB and Cars splits are the official train/test *image* splits, which share classes; as
the papers do, all splits are merged and re-split by class (first half of the sorted classes
trains: CUB 0-99 / 100-199, Cars 0-97 / 98-195). SOP's tfds splits are already class-disjoint.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Optional

from dnc_jax.data.sources.benchmarks import OFFICIAL
from dnc_jax.errors import DataError
from dnc_jax.data.sources.image_lists import (ImageList, make_list, split_by_first_classes,
                                              warn_unofficial_counts)

DEFAULT_DATA_DIR = "~/tensorflow_datasets"
MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    title: str
    label_key: str
    official: dict
    regroup_by_class: bool                 # merge the splits and re-split by class
    skip_decoding: tuple[str, ...] = ("image",)  # kept as encoded bytes
    name_key: Optional[str] = None         # a per-record class name feature, if any
    label_offset: int = 0                  # added to the label to name a class


SPECS = {
    "caltech_birds2011": TfdsSpec("CUB-200-2011 (tfds caltech_birds2011)", "label",
                                  OFFICIAL["cub"], True,
                                  skip_decoding=("image", "segmentation_mask"),
                                  name_key="label_name"),
    "cars196": TfdsSpec("Cars196 (tfds cars196)", "label", OFFICIAL["cars"], True),
    # class_id is the official class_id - 1; the names keep the official 1-based id.
    "stanford_online_products": TfdsSpec(
        "Stanford Online Products (tfds stanford_online_products)", "class_id", OFFICIAL["sop"],
        False, label_offset=1),
}


def data_dir_of(data_config) -> str:
    """data.tfds_data_dir, else $TFDS_DATA_DIR, else tfds's default ~/tensorflow_datasets."""
    chosen = data_config.tfds_data_dir or os.environ.get("TFDS_DATA_DIR") or DEFAULT_DATA_DIR
    return os.path.abspath(os.path.expanduser(chosen))


def _version_key(version: str):
    return tuple(int(p) for p in version.split("."))


def prepared_version(name: str, data_dir: str) -> str:
    """The newest prepared version of `name` in `data_dir`, or a DataError saying how to build."""
    build = (f"prepare it once (needs TensorFlow): pip install tensorflow tensorflow-datasets "
             f"&& tfds build {name} --data_dir={data_dir} --file_format=array_record; or set "
             f"--config.data.tfds_data_dir=<the folder holding {name}/>")
    base = os.path.join(data_dir, name)
    versions = []
    if os.path.isdir(base):
        for v in os.listdir(base):
            if os.path.isfile(os.path.join(base, v, "dataset_info.json")):
                try:
                    _version_key(v)
                except ValueError:
                    continue
                versions.append(v)
    if not versions:
        raise DataError(f"tfds data set {name} is not prepared in {data_dir} (no "
                        f"{base}/<version>/dataset_info.json); {build}")
    version = max(versions, key=_version_key)
    if not any(".array_record" in f for f in os.listdir(os.path.join(base, version))):
        raise DataError(f"tfds data set {name} in {os.path.join(base, version)} has no "
                        f"ArrayRecord files (random access needs them); {build}")
    return version


def load(name: str, data_config) -> dict[str, ImageList]:
    """{split: ImageList} of extracted image files, class-disjoint splits."""
    if name not in SPECS:
        raise DataError(f"data.tfds_name={name!r} is not one of {sorted(SPECS)}; set "
                        f"--config.data.tfds_name=")
    spec = SPECS[name]
    data_dir = data_dir_of(data_config)
    version = prepared_version(name, data_dir)
    with open(os.path.join(data_dir, name, version, "dataset_info.json"), "rb") as f:
        info_hash = hashlib.sha256(f.read()).hexdigest()[:12]
    out_dir = os.path.join(os.path.expanduser(data_config.cache_dir), "tfds", name,
                           f"{version}-{info_hash}")
    manifest = _read_manifest(out_dir)
    if manifest is None:
        manifest = _extract(name, version, data_dir, spec, out_dir)
    paths = [os.path.join(out_dir, f) for f in manifest["files"]]
    labels, splits = manifest["labels"], manifest["splits"]
    names = {int(k): v for k, v in manifest["names"].items()}
    if spec.regroup_by_class:
        out = split_by_first_classes(paths, labels, len(set(labels)) // 2, names=names)
    else:
        out = {}
        for split in sorted(set(splits)):
            rows = [i for i, s in enumerate(splits) if s == split]
            out[split] = make_list([paths[i] for i in rows], [labels[i] for i in rows],
                                   names=names)
        if set(out) != {"train", "test"}:
            raise DataError(f"tfds data set {name} has splits {sorted(out)}, expected train "
                            f"and test")
    warn_unofficial_counts(spec.title, out, spec.official)
    return out


def _read_manifest(out_dir: str):
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        manifest = json.load(f)
    if not all(os.path.isfile(os.path.join(out_dir, p)) for p in manifest["files"]):
        return None  # files removed since: extract again
    return manifest


def _extension(data: bytes) -> str:
    """PIL reads by content; the extension only helps a person browsing the folder."""
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    return ".img"


def _class_names(source, spec: TfdsSpec) -> Optional[list[str]]:
    """The ClassLabel's names from the split's DatasetInfo, when it has real ones."""
    try:
        names = list(source.dataset_info.features[spec.label_key].names)
    except (AttributeError, KeyError, TypeError):
        return None
    return None if names == [str(i) for i in range(len(names))] else names


def _extract(name: str, version: str, data_dir: str, spec: TfdsSpec, out_dir: str) -> dict:
    """Writes every record's encoded image to out_dir/<split>/<index>.<ext>; the manifest last."""
    import tensorflow_datasets as tfds
    from tqdm.auto import tqdm

    decoders = {key: tfds.decode.SkipDecoding() for key in spec.skip_decoding}
    try:
        sources = tfds.data_source(f"{name}:{version}", data_dir=data_dir, download=False,
                                   decoders=decoders)
    except Exception as e:  # tfds raises many types; the user needs the one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"tfds could not read {name}:{version} from {data_dir}: {first}") \
            from None
    files, labels, splits, names = [], [], [], {}
    # Train first, then the rest in name order, so the file list (and cache key) is stable.
    for split in sorted(sources, key=lambda s: (s != "train", s)):
        source = sources[split]
        os.makedirs(os.path.join(out_dir, split), exist_ok=True)
        label_names = _class_names(source, spec)
        for i in tqdm(range(len(source)), desc=f"extract {name} {split}", leave=False):
            record = source[i]
            data = bytes(record["image"])
            label = int(record[spec.label_key])
            rel = os.path.join(split, f"{i:06d}{_extension(data)}")
            with open(os.path.join(out_dir, rel), "wb") as f:
                f.write(data)
            files.append(rel)
            labels.append(label)
            splits.append(split)
            if label not in names:
                if spec.name_key and spec.name_key in record:
                    names[label] = _text(record[spec.name_key])
                elif label_names is not None:
                    names[label] = label_names[label]
                else:
                    names[label] = str(label + spec.label_offset)
    manifest = {"files": files, "labels": labels, "splits": splits,
                "names": {str(k): v for k, v in names.items()}}
    tmp = os.path.join(out_dir, MANIFEST + ".partial")
    with open(tmp, "w") as f:
        json.dump(manifest, f)
    os.replace(tmp, os.path.join(out_dir, MANIFEST))
    return manifest


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
