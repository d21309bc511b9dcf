"""Small configs shared by the tests: a tiny network on tiny images."""
from dnc_jax.configs import demo


def tiny_config():
    config = demo.get_config()
    config.num_epochs = 2
    config.progress = False
    config.data.image_size = 16
    config.data.view_workers = 0  # image files cut in the test process: no worker start-up
    # The tests' runs keep the joint step (one compiled step serves all learners at once) and
    # cluster at epoch 0, whatever the demo's defaults.
    config.divide.learner_schedule = "joint"
    config.optim.joint_lr_rule = "none"
    config.divide.warmup_epochs = 0
    config.data.batch_size = 32
    config.data.eval_batch_size = 64
    config.data.glyphs.max_classes = 24
    config.data.glyphs.min_faces = 12
    config.augment.image_size = 16
    config.model.width = 8
    config.model.embedding_dim = 16
    config.divide.num_learners = 2
    config.divide.recluster_every = 1
    config.divide.full_embedding_epoch = -1
    config.divide.finetune_epoch = -1
    config.divide.kmeans_iterations = 10
    config.eval.block_size = 64
    return config


def train_tiny_run(root, epochs: int = 1):
    """(config, workdir) of a tiny run trained for `epochs` under `root` (its own glyph cache
    there too), for the tests that use a trained model."""
    from dnc_jax.training import train

    config = tiny_config()
    config.data.cache_dir = str(root / "cache")
    config.num_epochs = epochs
    workdir = str(root / "run")
    train.train_and_evaluate(config, workdir)
    return config, workdir


# So that `--config=tests/helpers.py` works for the tests that run the command line.
get_config = tiny_config
