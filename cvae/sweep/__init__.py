"""Sweeps: search a spec's settings with Optuna (one machine or many) or W&B sweep agents.

- ``file``: the sweep file (``sweeps/*.yaml``), its checks, the spec of one trial;
- ``study``: storages, sampler, pruner, the study, its base spec and best trial;
- ``trial``: the objective, one training run per trial, and the pruning callback;
- ``workers``: worker processes, their lock, and the recovery of stopped trials;
- ``progress``: the live view of a running sweep; ``status``: what ``cvae sweep status`` computes
  and prints; ``text``: how trials and parameters read in lines and tables;
- ``confirm``: retrain the best settings over fresh seeds, paired with the base, raced;
  ``stats``: its statistics (paired intervals, verdicts, the race's looks); ``confirm_report``:
  confirm.json, confirm.png and its table;
- ``dashboard``: what optuna-dashboard shows of a trial; ``wandb_export``: the same search space as
  a W&B sweep config.

optuna and torch are imported inside functions only (``cvae --help`` stays fast).
"""
