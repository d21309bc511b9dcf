"""CUB-200-2011, fixed masks: the PAMI README's CUB200 "fixed" row (R@1 / NMI 67.39 / 68.60),
`cub_learned` with the code's --fixed-mask=1 (`configs/pami/__init__.py: fixed_masks`)."""
from dnc_jax.configs.pami import fixed_masks, cub_learned

get_config = fixed_masks(cub_learned.get_config)
