"""Data: images in, device batches out, in four stages, one sub-package each.

    sources/   where images come from: a data set's name -> {split: ImageSet}
    store/     how they are kept: ImageSet, the packed image-file cache, decoding
    views/     how views are cut: crops and eval views (host workers or on the device)
    sampling/  which images make each batch: the epoch's plan per learner

`feed.py` joins them: the sampler's plan (training) or every row in order (an embedding pass),
the views of those rows, placed on the devices.
"""
