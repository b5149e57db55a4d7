"""Training a run: the loop and its epochs, one step (forward, loss, backward), the KL and
teacher-forcing schedules, non-finite losses, validation rollouts and their PSNR, checkpoints.

``loop.train`` is the one training callable; ``rollout`` and ``validation`` also serve
``cvae evaluate`` and ``cvae predict``.
"""
