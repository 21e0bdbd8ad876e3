"""Validation passes: forward passes of a model whose output is only measured (ML002, ML003,
ML007).

- ``names``: what names and textual signs say (``val_loader`` is held-out data, ``.eval(``).
- ``facts``: the per-scope facts gathered in one walk of the module's ``ast`` (calls, loops, modes).
- ``passes``: which forward passes are validation passes, in which mode and grad state.
- ``flags``: shared train/eval loops switched by a flag, checked on their eval path.
- ``data``: which data a validation pass iterates, training or held-out (ML007).
- ``places``: where an evaluation runs relative to the training loop (ML007).
"""
