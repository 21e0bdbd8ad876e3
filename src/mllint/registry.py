"""Rule discovery: every ``Rule`` subclass defined in a module of ``mllint.rules``.

Nothing lists rules by hand; adding a rule means adding one module to ``rules/``.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, Sequence, TypeVar

if TYPE_CHECKING:
    from mllint.rule import Rule
    from mllint.runtime_check import RuntimeCheck

R = TypeVar("R")


class UnknownRuleError(KeyError):
    pass


@functools.lru_cache(maxsize=1)
def all_rules() -> tuple[type["Rule"], ...]:
    import mllint.rules as package

    found: dict[str, type[Rule]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        for obj in _rules_defined_in(info.name):
            if obj.code in found and found[obj.code] is not obj:
                raise RuntimeError(
                    f"rule code {obj.code} defined twice: {found[obj.code]} and {obj}"
                )
            found[obj.code] = obj
    return tuple(found[c] for c in sorted(found))


@functools.lru_cache(maxsize=None)
def _rules_defined_in(name: str) -> tuple[type["Rule"], ...]:
    """The rule classes the module ``mllint.rules.<name>`` defines (imported once)."""
    from mllint.rule import Rule

    module = importlib.import_module(f"mllint.rules.{name}")
    return tuple(
        obj for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, Rule) and obj is not Rule
        and obj.__module__ == module.__name__ and getattr(obj, "code", None)
    )


def rule_classes(infos: Sequence[Any]) -> list[type["Rule"]]:
    """The rule classes ``infos`` (manifest entries) describe, importing only their own
    modules: a file that only ML001 could flag does not pay for the validation analyses.
    An entry that names no module, or a module without its rule, falls back to
    ``all_rules``."""
    classes = []
    for info in infos:
        try:
            own = _rules_defined_in(info.module) if info.module else ()
        except ImportError:
            own = ()
        found = next((r for r in own if r.code == info.code), None)
        classes.append(found or next(r for r in all_rules() if r.code == info.code))
    return classes


@functools.lru_cache(maxsize=1)
def all_checks() -> tuple[type["RuntimeCheck"], ...]:
    """Every ``RuntimeCheck`` subclass defined in a module of ``mllint.rules.runtime``
    (the checks ``--verify`` performs on every run), by code."""
    import mllint.rules.runtime as package
    from mllint.runtime_check import RuntimeCheck

    found: dict[str, type[RuntimeCheck]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, RuntimeCheck)
                    and obj is not RuntimeCheck and obj.__module__ == module.__name__):
                if obj.code in found and found[obj.code] is not obj:
                    raise RuntimeError(
                        f"check code {obj.code} defined twice: {found[obj.code]} and {obj}")
                found[obj.code] = obj
    return tuple(found[c] for c in sorted(found))


def rule_by_code(code: str) -> type["Rule"]:
    """A rule, or a runtime check, by its code or name."""
    wanted = code.strip().upper()
    for rule in (*all_rules(), *all_checks()):
        if rule.code == wanted or rule.name == code.strip().lower():
            return rule  # type: ignore[return-value]
    raise UnknownRuleError(code)


def select_rules(
    select: list[str] | None, ignore: list[str] | None, rules: Sequence[R] | None = None
) -> tuple[R, ...]:
    """Rules chosen by code prefixes (``ML``, ``ML00``, ``ML001``) or names; ``ALL`` is all.

    ``rules`` may be rule classes or anything with ``code`` and ``name`` (the manifest).
    """
    if rules is None:
        rules = all_rules()  # type: ignore[assignment]

    def matches(rule, selector: str) -> bool:
        s = selector.strip()
        if s.upper() == "ALL":
            return True
        return rule.code.startswith(s.upper()) or rule.name == s.lower()

    for selector in [*(select or []), *(ignore or [])]:
        if not any(matches(r, selector) for r in rules):
            raise UnknownRuleError(selector)
    chosen = [r for r in rules if not select or any(matches(r, s) for s in select)]
    return tuple(r for r in chosen if not any(matches(r, s) for s in ignore or []))


def select_rules_and_checks(
    select: list[str] | None, ignore: list[str] | None, rules: Sequence[R],
) -> tuple[tuple[R, ...], tuple[type["RuntimeCheck"], ...]]:
    """``select_rules`` over the static rules and the runtime checks together: a selector
    may name either (``ML1`` only checks, ``ML`` both); one that names neither is an
    ``UnknownRuleError``. With a selection, what it does not name is left out."""
    checks = all_checks()

    def known(items: Sequence, selector: str) -> bool:
        try:
            select_rules([selector], None, items)
        except UnknownRuleError:
            return False
        return True

    for selector in [*(select or []), *(ignore or [])]:
        if not known(rules, selector) and not known(checks, selector):
            raise UnknownRuleError(selector)

    def choose(items: Sequence[Any]) -> tuple:
        chosen = [s for s in select or [] if known(items, s)]
        ignored = [s for s in ignore or [] if known(items, s)]
        if select and not chosen:
            return ()
        return select_rules(chosen or None, ignored, items)

    return choose(rules), choose(checks)