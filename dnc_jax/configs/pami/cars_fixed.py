"""CARS196, fixed masks: the PAMI README's Cars196 "fixed" row (R@1 / NMI 87.22 / 70.57),
`cars_learned` with the code's --fixed-mask=1 (`configs/pami/__init__.py: fixed_masks`)."""
from dnc_jax.configs.pami import fixed_masks, cars_learned

get_config = fixed_masks(cars_learned.get_config)
