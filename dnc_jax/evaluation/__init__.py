"""Evaluation (docs/method.md §4): exact blocked k-NN retrieval metrics, NMI, benchmark
protocols."""
