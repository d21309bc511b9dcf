"""Inference: a trained run's folder in; embeddings, neighbours, metrics and exports out.

`restore.py` reads a run (its config and checkpoint) into an embedder; `embedding.py` is the
embedding pass that training also uses; the tools, each a module with its `main()` behind
`dnc-jax <tool>`: `evaluate.py` (the full protocol, `--report`), `embed.py` (image files to
.npy), `search.py` (the nearest images of a query; `vector_index.py`: an optional HNSW
index), `export.py` (ONNX) and `backbone.py` (the backbone as a `model.pretrained` file).
Nothing here imports `dnc_jax.training` (tests/test_layout.py).
"""
