"""What one module's code does, read from Python's own ``ast``: the tree the prefilter
parsed already, for the rules that decide on it (``rule.AstRule``).

- ``scopes``: which binding each name of the module may refer to.
- ``flow``: following a name back to what was assigned to it (ML005).
- ``index``: where a node sits (function, class, loops, loops of the callers), which
  same-module function a call runs, where a value comes from, autograd's state.
- ``grads``: backward passes, optimizer steps and gradient clearing (ML001, ML004).
- ``loss``: which expressions hold a loss tensor still carrying its graph, and meters
  that sum what they are given (ML004).
"""
