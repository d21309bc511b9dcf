"""Data: images in, device batches out, in four stages, one sub-package each.

    sources/   where images come from: a data set's name -> {split: ImageSet}
    store/     how they are kept: ImageSet, the packed image-file cache, decoding
    views/     how views are cut: crops and eval views (host workers or on the device)
    sampling/  which images make each batch: the epoch's plan per learner

`dnc_jax/feed.py` joins them for training: the sampler's plan, the views of its rows, placed
on the devices.
"""
