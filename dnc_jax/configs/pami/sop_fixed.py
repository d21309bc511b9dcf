"""Stanford Online Products, fixed masks: the PAMI README command with --fixed-mask=1.

Targets the README's "fixed" row (R@1 79.50, NMI 89.59): configs/pami/sop_learned.py with the 0/1
masks of the code's --fixed-mask option, our reading of the README's "fixed" variant (each split
cuts the parent's block of ones into its two contiguous halves, mask lr and wd 0; at K=32 each
learner owns 16 dimensions).
"""
from dnc_jax.configs.pami import fixed_masks, sop_learned

get_config = fixed_masks(sop_learned.get_config)
