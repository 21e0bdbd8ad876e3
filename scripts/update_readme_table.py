"""Rewrite the README's rule table from the rules (run after adding or renaming a rule)."""

import re
from pathlib import Path

from mllint.cli import rules_table
from mllint.registry import all_rules

readme = Path(__file__).resolve().parent.parent / "README.md"
text = readme.read_text(encoding="utf-8")
text = re.sub(r"(<!-- rules-table:start[^\n]*-->\n).*?(<!-- rules-table:end -->)",
              lambda m: m.group(1) + rules_table(all_rules()) + m.group(2), text, flags=re.S)
readme.write_text(text, encoding="utf-8")
