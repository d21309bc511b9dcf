"""PKU VehicleID, fixed masks: the PAMI README's VID (Large eval set) "fixed" row (R@1 / NMI 94.01 /
90.78), `vehicleid_learned` with the code's --fixed-mask=1 (`configs/pami/__init__.py:
fixed_masks`)."""
from dnc_jax.configs.pami import fixed_masks, vehicleid_learned

get_config = fixed_masks(vehicleid_learned.get_config)
