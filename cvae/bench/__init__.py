"""Measurement: ``cvae bench`` (the published loop against ours), its tables, the reference loop it
times, and the scripts behind docs/performance.md (``python -m cvae.bench.<script>``).
"""
