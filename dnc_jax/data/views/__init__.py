"""Views: the pixels a network sees, cut from the stored images.

In: an `ImageSet`'s images and, for training, the crop boxes of (seed, epoch, step). Out: uint8
views [B, S, S, 3]: cut on the host by worker processes from image files at their own
resolution (`host_views.py`), or on the device from rows (`augment.py`, which also flips and
normalises every view inside the jitted step). `view_cache.py` keeps eval views after their
first decode, for passes that repeat.
"""
