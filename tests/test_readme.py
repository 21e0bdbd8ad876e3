"""The README documents every rule, from the rules themselves."""

from __future__ import annotations

import re

from helpers import ROOT
from mllint.cli import rules_table
from mllint.registry import all_rules


def test_rule_table_is_generated_from_the_rules():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- rules-table:start[^\n]*-->\n(.*?)<!-- rules-table:end -->", text, re.S)
    assert m, "README lost its rule table markers"
    assert m.group(1) == rules_table(all_rules())
