"""The CPU demo on glyphs whose classes fall into super-classes: nine scripts and symbol blocks.

The same run as configs/demo.py (a tiny ResNet from scratch, K=4 learners, 30 epochs) on the
'scripts' glyph set: up to 40 characters from each of Latin, Greek, Cyrillic, Armenian,
Georgian, box drawing, geometric shapes, arrows and math operators, drawn by the 12 DejaVu
faces and STIX where it has them; test characters are never seen in training. A block is what
a SOP super-class (bicycles, chairs, ...) is to its products: classes of one block share their
strokes, so clusters can hold whole classes, the premise of dividing the data among learners.
configs/demo.py's 'letters' set lacks that structure (its clusters split classes by font face)
and stays as the counter-example; BENCHMARKS.md compares both.
"""
from configs import demo


def get_config():
    config = demo.get_config()
    config.data.glyphs.classes = "scripts"
    return config
