"""In-shop Clothes Retrieval: the CVPR 2019 repository's README command, exactly.

The README's command is written for In-shop (--dataset=inshop); everything else is as
configs/cvpr/sop.py, which sets every recipe key. The README expects R@1 of about 87.36.
Set --config.data.root to the folder holding Eval/list_eval_partition.txt and img/; evaluation
retrieves the 14,218 query images from the 12,612 gallery images (3,985 identities).
"""
from configs.cvpr import sop


def get_config():
    config = sop.get_config()
    config.data.name = "inshop"                 # --dataset=inshop
    # The In-shop protocol: the code logs R@1/10/20/30/50, the paper's table R@1/10/20/30.
    config.eval.recall_ks = (1, 10, 20, 30, 40, 50)
    return config
