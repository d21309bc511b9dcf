"""In-shop Clothes Retrieval, fixed masks: the PAMI README's In-Shop Clothes "fixed" row (R@1 / NMI
89.84 / 89.76), `inshop_learned` with the code's --fixed-mask=1 (`configs/pami/__init__.py:
fixed_masks`)."""
from dnc_jax.configs.pami import fixed_masks, inshop_learned

get_config = fixed_masks(inshop_learned.get_config)
