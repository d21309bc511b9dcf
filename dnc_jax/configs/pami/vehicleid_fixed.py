"""PKU VehicleID, fixed masks: the PAMI README's VID (Large eval set) "fixed" row.

Targets R@1 / NMI 94.01 / 90.78: configs/pami/vehicleid_learned.py (whose docstring lists what
is sourced and what is a GUESS) with the 0/1 masks of the code's --fixed-mask option: each split
cuts the parent's block of ones into its two contiguous halves, mask lr and wd 0.
"""
from dnc_jax.configs.pami import vehicleid_learned


def get_config():
    config = vehicleid_learned.get_config()
    config.divide.masks = "fixed"               # --fixed-mask=1: the README's "fixed" rows
    return config
