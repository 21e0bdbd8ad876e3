"""What one module's code does, read from its libcst tree during the engine's traversal,
or (``pyast``) from Python's own ``ast`` for the rules that decide on it.

Rules ask these questions of the file they are checking; questions about *other* modules
(what a factory returns, which class a model is, whether a checkpoint is loaded back)
go to the project model in ``mllint.project``, which these analyses consult.

- ``syntax``: resolving dotted and qualified names, call arguments.
- ``flow``: following a name back to what was assigned to it.
- ``training``: where training steps run, and which optimizer each belongs to (ML006, ML008).
- ``validation``: validation passes, their mode, autograd state and data (ML002, ML003, ML007).
- ``pyast``: the same questions on Python's ``ast``, for the rules that decide on it
  (ML001, ML004, ML005): scopes, value flow, the module index, gradient events, losses.

The cheap stages that decide whether a file needs this analysis at all are in
``mllint.prefilter`` (literal signs) and ``mllint.gates`` (Python's ``ast``).
"""
