"""What one module's code does, read from Python's own ``ast``: the tree the prefilter
parsed already, for the rules that decide on it (``rule.AstRule``).

- ``scopes``: which binding each name of the module may refer to.
- ``flow``: following a name back to what was assigned to it.
"""
