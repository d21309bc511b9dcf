"""PKU VehicleID, learned masks: the PAMI README's VID (Large eval set) "learn" row.

Targets R@1 / NMI 93.93 / 90.70. Unpublished for this data set (no official command; the paper,
arXiv 2109.04003, unread beyond its abstract; configs/pami/_unpublished.py says what is sourced and
what is guessed). GUESS here, besides unpublished.GUESSED_FROM_SOP:
  * divide.num_learners = 32 as the SOP command: 13,164 training classes give about 411 classes
    a cluster (SOP: about 354).
Set --config.data.root to the VehicleID_V1.0 folder (image/ and train_test_split/).
"""
from dnc_jax.configs.pami import _unpublished as unpublished


def get_config():
    # GUESS: as the SOP command; ~411 classes a cluster
    config = unpublished.config("vehicleid", recall_ks=(1, 5),
                                num_learners=32)
    config.data.vehicleid_test = "large"  # the README's "Large eval set"
    return config
