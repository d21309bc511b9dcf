"""In-shop Clothes Retrieval, fixed masks: the PAMI README's In-Shop Clothes "fixed" row.

Targets R@1 / NMI 89.84 / 89.76: configs/pami/inshop_learned.py (whose docstring lists what is
sourced and what is a GUESS) with the 0/1 masks of the code's --fixed-mask option: each split
cuts the parent's block of ones into its two contiguous halves, mask lr and wd 0.
"""
from dnc_jax.configs.pami import inshop_learned


def get_config():
    config = inshop_learned.get_config()
    config.divide.masks = "fixed"               # --fixed-mask=1: the README's "fixed" rows
    return config
