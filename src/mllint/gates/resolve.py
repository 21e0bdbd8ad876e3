"""Import-based name resolution over Python's ``ast``, for the gates.

A coarse over-approximation of what libcst's ``QualifiedNameProvider`` answers: every
import anywhere in the module (top level, in functions, under ``try``) binds its alias
for the whole module, and no local assignment shadows it. So for any expression the
libcst analysis resolves to ``torch.save``, ``qualified`` includes ``torch.save`` too;
it may include names libcst would not give (a gate then admits the file, which is safe).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field


def dotted(expr: ast.expr) -> str | None:
    """``a.b.c`` for a chain of names and attributes, else ``None``."""
    parts: list[str] = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if isinstance(expr, ast.Name):
        parts.append(expr.id)
        return ".".join(reversed(parts))
    return None


@dataclass
class Imports:
    #: local name -> the qualified names it may stand for
    aliases: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def of(cls, tree: ast.Module) -> "Imports":
        out = cls()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        out.aliases[alias.asname].add(alias.name)
                    else:
                        # ``import a.b.c`` binds ``a``; ``a.b.c.f`` then resolves in full.
                        head = alias.name.split(".", 1)[0]
                        out.aliases[head].add(head)
            elif isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                for alias in node.names:
                    if alias.name == "*":
                        continue
                    full = f"{base}.{alias.name}" if base and not base.endswith(".") else base + alias.name
                    out.aliases[alias.asname or alias.name].add(full)
        return out

    def qualified(self, expr: ast.expr) -> set[str]:
        """The imported qualified names ``expr`` may denote (empty if none)."""
        name = dotted(expr)
        if name is None:
            return set()
        head, _, rest = name.partition(".")
        found = self.aliases.get(head)
        if not found:
            return set()
        return {f"{q}.{rest}" if rest else q for q in found}

    def resolves_to(self, expr: ast.expr, targets: frozenset[str] | set[str]) -> bool:
        return bool(self.qualified(expr) & targets)
