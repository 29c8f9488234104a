"""Data for SIB-Net: the input recipe (paper Eq. 3, §4.2), EMOTIC and CAER-S (§4.1), their box caches, and
planted-cue synthetic datasets in the same on-disk formats.

- :mod:`sibnet.data.masking`: :class:`~sibnet.data.masking.InputTransform` and :func:`make_triple`, the one
  place the face, body and scene tensors are built, for training, evaluation, the CLI and the demo alike.
- :mod:`sibnet.data.base`: the dataset base (records → the model's transform → items).
- :mod:`sibnet.data.emotic`, :mod:`sibnet.data.caer`: the two benchmarks.
- :mod:`sibnet.data.registry`: the datasets by name (labels, recipe, metric, box-cache job).
- :mod:`sibnet.data.boxcache` (the cache format) and :mod:`sibnet.data.boxes` (``python -m sibnet.data.boxes``,
  its builder): the face/body boxes the datasets lack, detected once.
- :mod:`sibnet.data.synthetic` (``python -m sibnet.data.synthetic``): planted-cue data.

Import what you need from its module; this package imports nothing itself.
"""
