"""Views against torchvision's transforms, re-implemented here with PIL and numpy.

torchvision is not a dependency, so its PIL code path is written out in full:
Resize(256) = `img.resize((new_w, new_h), Image.BILINEAR)` (PIL's bilinear is antialiased),
CenterCrop = crop at int(round((side - out) / 2)), RandomResizedCrop = `get_params` + crop +
bilinear resize.

Image files (host_views): the views cut from the cached bytes equal torchvision's, pixel for
pixel. Rows of an array (augment, on the device): the box samplers of both paths follow
torchvision's law, and crops resampled from rows match PIL's within a grey level.
(tests/test_crop_fidelity.py measures sharpness on real photographs.)
"""
import math

import jax
import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import stats

from dnc_jax.data.views import augment, host_views
from dnc_jax.data.store.cache import cached_images

# (width, height, mode) of the JPEGs: common aspect ratios both ways, a square one, grayscale.
JPEG_SPECS = [(500, 375, "RGB"), (333, 500, "RGB"), (256, 256, "RGB"), (640, 480, "RGB"),
              (300, 400, "L"), (1024, 683, "RGB")]


def natural_image(rng, width, height):
    """Photo-like content: 1/f noise (octaves of upsampled noise, amplitude ~ scale) plus
    hard-edged shapes."""
    acc = np.zeros((height, width, 3), np.float32)
    for octave in range(1, 8):
        step = 2 ** octave
        small = rng.normal(0, 1, (height // step + 2, width // step + 2, 3)).astype(np.float32)
        acc += step * np.stack([np.asarray(Image.fromarray(small[..., c]).resize(
            (width, height), Image.BICUBIC)) for c in range(3)], -1)
    acc = 128 + acc * (60 / acc.std())
    image = Image.fromarray(np.clip(acc, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(10, width // 3)), y0 + int(rng.integers(10, height // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    return image


@pytest.fixture(scope="module")
def jpeg_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    files = []
    for k, (width, height, mode) in enumerate(JPEG_SPECS):
        path = str(folder / f"image{k}.jpg")
        natural_image(rng, width, height).convert(mode).save(path, quality=90)
        files.append(path)
    return files


def torchvision_eval(image, out_size=224, resize_size=256):
    """Resize(resize_size) + CenterCrop(out_size) as torchvision runs them on a PIL image."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(resize_size * long / short)
    new_w, new_h = (resize_size, new_long) if width <= height else (new_long, resize_size)
    resized = image.resize((new_w, new_h), Image.BILINEAR)
    top = int(round((new_h - out_size) / 2.0))
    left = int(round((new_w - out_size) / 2.0))
    return np.asarray(resized.crop((left, top, left + out_size, top + out_size)), np.float32)


def torchvision_rrc_params(rng, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision.transforms.RandomResizedCrop.get_params, in numpy: (top, left, h, w)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            return (int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)),
                    h, w)
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def grey_level_error(ours, reference):
    """Mean |difference| after rounding ours to uint8, as a stored image would be."""
    return float(np.abs(np.clip(np.round(ours), 0, 255) - reference).mean())


def test_host_eval_views_equal_torchvision_pil(jpeg_files, tmp_path):
    images, sizes = cached_images(jpeg_files, str(tmp_path), "jpegs", workers=1, progress=False)
    views = host_views.ViewLoader(224, 256).views(images, np.arange(len(jpeg_files)))
    for view, path in zip(views, jpeg_files):
        np.testing.assert_array_equal(view, torchvision_eval(Image.open(path).convert("RGB")))
    # Another crop fraction, on the portrait and the wide image.
    views = host_views.ViewLoader(200, 240).views(images, np.array([1, 5]))
    for view, k in zip(views, [1, 5]):
        np.testing.assert_array_equal(view, torchvision_eval(
            Image.open(jpeg_files[k]).convert("RGB"), 200, 240))


def test_host_train_crops_equal_torchvision_pil(jpeg_files, tmp_path):
    """RandomResizedCrop boxes drawn by the host sampler, cut from the cached bytes in worker
    processes, against PIL's crop + bilinear resize of the original file."""
    images, sizes = cached_images(jpeg_files, str(tmp_path), "jpegs", workers=1, progress=False)
    rows = np.tile(np.arange(len(jpeg_files)), 3)
    boxes = host_views.random_resized_crop_boxes(np.random.default_rng(0), sizes[rows])
    loader = host_views.ViewLoader(224, 256, workers=2)
    try:
        views = loader.views(images, rows, boxes)
        streamed = list(loader.stream(images, [(rows[:9], boxes[:9]), (rows[9:], boxes[9:])]))
    finally:
        loader.close()
    np.testing.assert_array_equal(np.concatenate(streamed), views)
    for view, row, (top, left, h, w) in zip(views, rows, boxes):
        original = Image.open(jpeg_files[row]).convert("RGB")
        reference = original.crop((left, top, left + w, top + h)).resize((224, 224),
                                                                          Image.BILINEAR)
        np.testing.assert_array_equal(view, np.asarray(reference))


def device_boxes(seed, sizes):
    return np.asarray(jax.jit(augment.random_resized_crop_boxes)(jax.random.key(seed), sizes))


def host_boxes(seed, sizes):
    return host_views.random_resized_crop_boxes(np.random.default_rng(seed), sizes)


def test_train_crop_of_fixed_boxes_matches_pil(tmp_path):
    """Known content (coordinate ramps and a smooth pattern), fixed boxes: the device resample
    of a 256 x 256 row (with the original's size) equals PIL's crop + bilinear resize of the
    original."""
    height, width = 300, 400
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    original = np.stack([xx * 255 / width, yy * 255 / height,
                         127.5 + 100 * np.sin(xx / 23.0) * np.cos(yy / 17.0)], -1)
    path = str(tmp_path / "ramp.png")
    Image.fromarray(np.round(original).astype(np.uint8)).save(path)
    row = np.asarray(Image.open(path).convert("RGB").resize((256, 256), Image.LANCZOS))
    # (top, left, height, width): downsampled, upsampled, elongated both ways, the whole image.
    boxes = np.array([[10, 20, 250, 300], [100, 150, 60, 50], [0, 0, 300, 120],
                      [200, 5, 90, 390], [0, 0, 300, 400]], np.int32)
    source = Image.open(path)
    references = [np.asarray(source.crop((l, t, l + bw, t + bh)).resize((224, 224),
                                                                         Image.BILINEAR),
                             np.float32) for t, l, bh, bw in boxes]
    ours = augment.resample_boxes(np.repeat(row[None], len(boxes), 0),
                                  np.full((len(boxes), 2), (height, width), np.int32), boxes, 224)
    for view, reference in zip(np.asarray(ours), references):
        assert grey_level_error(view, reference) < 0.6
    # sizes=None: the rows are the originals, so only the crop-border handling differs.
    square = np.asarray(source.resize((256, 256), Image.LANCZOS))
    box = np.array([[30, 40, 150, 120]], np.int32)
    reference = np.asarray(Image.fromarray(square).crop((40, 30, 160, 180)).resize(
        (64, 64), Image.BILINEAR), np.float32)
    ours = augment.resample_boxes(square[None], None, box, 64)
    assert grey_level_error(np.asarray(ours[0]), reference) < 0.3


@pytest.mark.parametrize("sampler", [device_boxes, host_boxes])
@pytest.mark.parametrize("height,width", [(375, 500), (500, 333), (100, 1000)])
def test_box_sampler_matches_torchvision_distribution(height, width, sampler):
    """20k boxes from ours (device and host) and from torchvision's algorithm: same laws of
    area fraction, aspect ratio and position (the 100 x 1000 image mostly takes the
    fallback)."""
    num = 20_000
    ours = sampler(1, np.full((num, 2), (height, width), np.int32))
    rng = np.random.default_rng(1)
    theirs = np.array([torchvision_rrc_params(rng, height, width) for _ in range(num)])

    def laws(b):
        top, left, h, w = b.T.astype(np.float64)
        return {"area": h * w / (height * width), "aspect": w / h,
                "centre_y": top + h / 2, "centre_x": left + w / 2}

    for name, (a, b) in {k: (laws(ours)[k], laws(theirs)[k]) for k in laws(ours)}.items():
        assert stats.ks_2samp(a, b).pvalue > 0.01, name
    top, left, h, w = ours.T
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    fallback = (ours[:, 2] == 100) & (ours[:, 3] == 133) & (ours[:, 1] == (1000 - 133) // 2)
    if height == 100:  # in_ratio 10 > 4/3: h = 100, w = round(100 * 4 / 3), centered
        their_fallback = (theirs[:, 2] == 100) & (theirs[:, 3] == 133) & (theirs[:, 1] == 433)
        assert abs(fallback.mean() - their_fallback.mean()) < 0.015
        assert fallback.mean() > 0.5


@pytest.mark.parametrize("sampler", [device_boxes, host_boxes])
def test_box_sampler_uses_each_rows_size(sampler):
    sizes = np.array([[375, 500], [500, 333], [64, 64], [100, 1000], [1000, 30]] * 400, np.int32)
    boxes = sampler(2, sizes)
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= sizes[:, 0]).all() and (left + w <= sizes[:, 1]).all()
    assert (h[sizes[:, 0] == 64] <= 64).all() and (h[sizes[:, 0] == 500] > 64).any()
    tall = sizes[:, 0] == 1000  # in_ratio 0.03 < 3/4: always the fallback, w = 30, h = 40
    assert (w[tall] == 30).all() and (h[tall] == 40).all() and (top[tall] == 480).all()


def test_flip_half_and_whole_image_crop_is_identity():
    """scale = ratio = 1 crops the whole image: the view is the row itself, mirrored half the
    time."""
    ramp = np.broadcast_to(np.arange(8, dtype=np.uint8)[None, :, None] * 30, (8, 8, 3))
    images = np.broadcast_to(ramp, (2000, 8, 8, 3))
    views = np.asarray(jax.jit(lambda x, k: augment.train_views(
        x, None, k, 8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True, normalization=None))(
        images, jax.random.key(3)))
    mirrored = np.all(np.abs(views - ramp[:, ::-1]) < 1e-3, axis=(1, 2, 3))
    unchanged = np.all(np.abs(views - ramp) < 1e-3, axis=(1, 2, 3))
    assert (mirrored ^ unchanged).all()
    assert abs(mirrored.mean() - 0.5) < 0.04


def test_eval_views_on_originals_and_normalisation():
    """sizes=None (the glyph demo): resize == out == S is the identity; normalisation is
    ImageNet's mean/std in RGB order."""
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    raw = augment.eval_views(images, None, 32, 32, normalization=None)
    np.testing.assert_array_equal(np.asarray(raw), images.astype(np.float32))
    normalised = np.asarray(augment.eval_views(images, None, 32, 32))
    # torchvision's ImageNet constants, written out: not read from the code under test.
    expected = (images / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(normalised, expected, atol=1e-5)
    # Resize(36) + CenterCrop(32) of a 32 x 32 original, against PIL.
    ours = np.asarray(augment.eval_views(images, None, 32, 36, normalization=None))
    for view, image in zip(ours, images):
        assert grey_level_error(view, torchvision_eval(Image.fromarray(image), 32, 36)) < 1.0


def test_normalisation_constants_are_the_published_ones():
    """Written out from their sources (torchvision's ImageNet transforms; OpenAI CLIP's
    preprocessing; Inception/timm's 0.5), not read from the code under test."""
    published = {
        "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
        "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    }
    assert set(augment.NORMALIZATIONS) == set(published)
    for name, (mean, std) in published.items():
        np.testing.assert_array_equal(augment.normalization_constants(name), (mean, std))
