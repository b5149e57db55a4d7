"""The dataset: the Lab4 folder layout, its frames decoded once into memory, the clips an epoch
trains on, the synthetic dancer that stands in for the real data, and the checks on a data folder.

``layout`` (file names only) -> ``frames`` (uint8 tensors, cached) -> ``clips`` (an epoch's batches);
``root`` is the folder a run uses (generated, scanned and fingerprinted once); ``tools`` serves
``cvae data``.
"""
