"""Stanford Online Products with the CVPR 2019 code's settings (METHOD.md §2.4).

Set --config.data.root to the folder holding Ebay_train.txt and Ebay_test.txt.
"""
from configs import default


def get_config():
    config = default.get_config()
    config.data.name = "sop"
    # The papers' SOP protocol (CVPR table: R@1/10/100/1000); the CVPR code logs R@1/2/4/8.
    config.eval.recall_ks = (1, 10, 100, 1000)
    return config
