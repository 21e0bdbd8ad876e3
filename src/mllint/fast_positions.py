"""Position metadata for the rules' traversal.

``seed`` may fill the wrapper's ``PositionProvider`` entry with a cheaper equivalent
before the traversal; when it does not, libcst resolves the provider itself.
"""

from __future__ import annotations

from libcst.metadata import MetadataWrapper


def seed(wrapper: MetadataWrapper, wanted: set) -> None:
    """Nothing yet: libcst's own ``PositionProvider`` is used."""
