"""Sweeps: search a spec's settings with Optuna (one machine or many) or W&B sweep agents.

- ``file``: the sweep file (``sweeps/*.yaml``), its checks, the spec of one trial;
- ``study``: storages, sampler, pruner, the study, its status and best trial;
- ``trial``: the objective, one training run per trial, and the pruning callback;
- ``workers``: worker processes, their lock, and the recovery of stopped trials;
- ``confirm``: retrain the best settings over fresh seeds, paired with the base, and say which
  differences hold;
- ``wandb_export``: the same search space as a W&B sweep config;
- ``cli``: the ``cvae sweep`` commands.

optuna and torch are imported inside functions only (``cvae --help`` stays fast).
"""
