"""PKU VehicleID, learned masks: the PAMI README's VID (Large eval set) "learn" row.

Targets R@1 / NMI 93.93 / 90.70. No official command exists for this data set: the PAMI README
gives one for SOP only and says to check the paper for the others, and the paper's text (arXiv
2109.04003) could not be read here beyond its abstract, so its settings for this data set are
unknown. What is sourced and what is a GUESS: configs/pami/_unpublished.py. GUESS here,
besides the SOP command's values of unpublished.GUESSED_FROM_SOP:
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
