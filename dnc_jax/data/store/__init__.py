"""Store: how images are kept between reading the data set and cutting their views.

In: a source's image files or rendered arrays. Out: an `ImageSet` (labels, class names, paths
and `images`: uint8 rows [N, S, S, 3] or `EncodedImages`, the files' own bytes packed in one
memory-mapped, checked cache, `cache.py`), with each image's original size. `encoded.py`
decodes those bytes as torchvision's PIL loader does.
"""
