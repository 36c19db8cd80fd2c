"""Data for the training tasks, generated or read locally (no downloads by default).

- `mqar`: Zoology's multi-query associative recall (synthetic).
- `niah`: RULER-style needle-in-a-haystack at token level (synthetic).
- `text`: a byte-level text corpus (CPython's pydoc topics by default) with a fixed split.
- `cache`: the on-disk cache of generated data, keyed by a hash of generator config + seed.

Every generator returns a dict of tensors with at least ``inputs`` [N, T] and ``targets`` [N, T]
(next-token targets; ``IGNORE`` = -100 where nothing is scored or trained). Recall generators add
``groups`` [N, T]: the index of the answer an answer token belongs to within its sequence (-1
elsewhere), so an answer spanning several tokens is scored as one exact match.
"""
from __future__ import annotations

#: target value of positions that are neither trained on nor scored (torch's ignore_index)
IGNORE = -100
