"""Evaluation of SEED as its paper measures it: metrics, evaluation sets and the resumable runner of `seed-hf evaluate`."""
