"""The CPU demo on glyphs whose classes fall into super-classes: nine scripts and symbol blocks.

The same run as configs/demo.py on the 'scripts' glyph set: up to 40 characters from each of
Latin, Greek, Cyrillic, Armenian, Georgian, box drawing, geometric shapes, arrows and math
operators, drawn by the 12 DejaVu faces and STIX where it has them; test characters are never
seen in training. A block plays the part of a SOP super-class (bicycles, chairs, ...). Measured
(BENCHMARKS.md, Accuracy): an untrained network's K=4 clusters keep 66% of a class together
here against 59% on 'letters', and a trained one's 94% against 92%, grouping classes by shape
rather than by block (super-class purity 54%); the premise of dividing holds on both sets once
the features are trained, which the demo's 2-epoch K=1 warm-up provides.
"""
from dnc_jax.configs import demo


def get_config():
    config = demo.get_config()
    config.data.glyphs.classes = "scripts"
    return config
