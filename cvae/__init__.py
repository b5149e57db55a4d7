"""cvae-sweeps: run, track and search experiments with the Lab4 pose-conditioned video CVAE.

Importing the package imports nothing heavy: torch and wandb load only inside the commands
that need them (``cvae --help`` stays fast).
"""

__version__ = "0.1.0"
