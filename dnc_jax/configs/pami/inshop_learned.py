"""In-shop Clothes Retrieval, learned masks: the PAMI README's In-Shop Clothes "learn" row.

Targets R@1 / NMI 90.49 / 89.88. Unpublished for this data set (no official command; the paper,
arXiv 2109.04003, unread beyond its abstract; configs/pami/_unpublished.py says what is sourced and
what is guessed). GUESS here, besides unpublished.GUESSED_FROM_SOP:
  * divide.num_learners = 32 as the SOP command: 3,997 training classes still give about 125
    classes a cluster (SOP: about 354).
Set --config.data.root to the folder holding Eval/list_eval_partition.txt and img/.
"""
from dnc_jax.configs.pami import _unpublished as unpublished


def get_config():
    # GUESS: as the SOP command; ~125 classes a cluster
    config = unpublished.config("inshop", recall_ks=(1, 10, 20, 30, 40, 50),
                                num_learners=32)
    return config
