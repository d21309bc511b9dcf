"""The PAMI 2021 configs: one module per row of the PAMI README's table (`<set>_learned`,
`<set>_fixed`)."""


def fixed_masks(get_learned):
    """The "fixed" row of a "learn" config: the code's --fixed-mask=1 (0/1 masks, each split
    cutting the parent's block of ones into its two contiguous halves, mask lr and wd 0)."""

    def get_config():
        config = get_learned()
        config.divide.masks = "fixed"
        return config

    return get_config
