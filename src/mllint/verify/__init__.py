"""``mllint --verify``: run the user's script under runtime probes (torch needed only here)."""
