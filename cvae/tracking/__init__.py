"""Where a run's metrics, media and summary go: the Tracker interface and the local history, Weights &
Biases (a run per run folder, a W&B sweep agent's environment), the terminal's progress, the GIFs
and plots.
"""
