"""Scope and qualified-name metadata, resolved more cheaply than libcst's providers.

``seed`` fills a ``MetadataWrapper``'s store before the rules' traversal, so every rule
sees the seeded mappings through the usual ``get_metadata`` calls, with the same answers
as libcst's own providers (``tests/test_engine.py`` compares the findings,
``tests/test_fast_scope.py`` compares the scope answers node by node).

Why it is cheaper: libcst's ``ScopeProvider`` needs ``ExpressionContextProvider`` (a full
visitor pass) and then a second full visitor pass; a libcst visitor pass rebuilds every
node it walks and dispatches several hooks per node and per field. ``_ScopeBuilder`` makes
ONE plain recursive walk over the fields of each node and decides store/load context on
the way down. It fills libcst's own scope objects (``GlobalScope``, ``FunctionScope``,
``Assignment``, ``Access``...) in the same order libcst's ``ScopeVisitor`` does, and then
resolves accesses with the same algorithm, so every ``Scope`` API answer (``scope[name]``,
``assignments``, ``accesses``, ``referents``, ``references``, ``get_qualified_names_for``)
is computed by libcst's own code from identical records.

Constructs that are rare in training code and fiddly to mirror (PEP 695 type parameters,
``nonlocal`` at module level, unusual string annotations) raise ``_Fallback``: that whole
file then gets libcst's real ``ScopeProvider``.

What mllint's analyses read, and so what must (and does) match libcst exactly:
- ``QualifiedNameProvider[node]`` for any node (call funcs, attributes, names, class bases,
  ``with`` items): the ``QualifiedName`` set, names and sources (IMPORT/BUILTIN/LOCAL);
- ``ScopeProvider[node]`` for names and ``def``s, compared by identity (``id(scope)``);
- ``scope[name]`` -> assignments with ``.scope``/``.node``; ``scope.assignments[name]``
  -> ``.node`` and ``.references`` -> ``.node``; ``scope.accesses[name]`` -> ``.referents``
  -> ``.node`` (``analysis.flow``, ML006).
The walk also yields the ``ParentNodeProvider`` mapping (every node's parent).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Mapping

import libcst as cst
import libcst.helpers
from libcst.metadata import (
    ExpressionContextProvider,
    MetadataWrapper,
    ParentNodeProvider,
    QualifiedNameProvider,
    ScopeProvider,
)
from libcst.metadata.scope_provider import (
    _ASSIGNMENT_LIKE_NODES,
    Access,
    ClassScope,
    ComprehensionScope,
    FunctionScope,
    GlobalScope,
    Scope,
    _gen_dotted_names,
)

# ``type(x) in NODE_CLASSES``, not ``isinstance(x, cst.CSTNode)``: see its comment.
from mllint.engine.traversal import NODE_CLASSES


def seed(wrapper: MetadataWrapper, wanted: set) -> None:
    store = wrapper._metadata
    want_parents = ParentNodeProvider in wanted and ParentNodeProvider not in store
    want_scopes = (
        ScopeProvider in wanted or QualifiedNameProvider in wanted
    ) and ScopeProvider not in store
    if want_scopes:
        built = build(wrapper.module)
        if built is not None:
            scopes, parents = built
            store[ScopeProvider] = scopes
            # Parent links come free with the walk; fast_positions uses them too.
            if ParentNodeProvider not in store:
                store[ParentNodeProvider] = parents
                want_parents = False
            # libcst resolves a provider's dependencies even when the provider itself is
            # already in the store; nothing here reads expression contexts, so stand in a
            # mapping that computes them only if a rule ever asks.
            if ExpressionContextProvider not in store:
                store[ExpressionContextProvider] = _OnDemand(wrapper, ExpressionContextProvider)
    if want_parents:
        store[ParentNodeProvider] = parent_map(wrapper.module)
    if QualifiedNameProvider in wanted and QualifiedNameProvider not in store:
        store[QualifiedNameProvider] = _LazyQualifiedNames(wrapper.resolve(ScopeProvider))


# -- walking a libcst tree without a visitor -------------------------------------------------

# Per node type, the names of the fields libcst's own traversal visits, in its order.
_FIELDS: dict[type, tuple[str, ...]] = {}


class _FieldRecorder(cst.CSTVisitor):
    """Learns a node type's child fields from libcst itself, once per type."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[str] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        return False

    def on_leave(self, original_node: cst.CSTNode) -> None:
        pass

    def on_visit_attribute(self, node: cst.CSTNode, attribute: str) -> None:
        if attribute not in self.fields:
            self.fields.append(attribute)

    def on_leave_attribute(self, original_node: cst.CSTNode, attribute: str) -> None:
        pass


# Types without child fields (whitespace, newlines, comments: about half of all nodes),
# handled inline by the walks instead of one call each.
_LEAVES: set[type] = set()


# Fields libcst visits only when set (so a first instance without them hides them).
_CONDITIONAL_FIELDS = {"FormattedStringExpression": "format_spec",
                       "TemplatedStringExpression": "format_spec"}


def _fields(t: type, node: cst.CSTNode) -> tuple[str, ...]:
    fields = _FIELDS.get(t)
    if fields is None:
        rec = _FieldRecorder()
        node._visit_and_replace_children(rec)
        extra = _CONDITIONAL_FIELDS.get(t.__name__)
        if extra is not None and extra not in rec.fields:
            rec.fields.append(extra)  # visited last, after the expression's other parts
        fields = _FIELDS[t] = tuple(rec.fields)
        if not fields and t not in _ASSIGNING:
            _LEAVES.add(t)
    return fields


def children(node: cst.CSTNode) -> list[cst.CSTNode]:
    """``node.children`` (same nodes, same order), without a visitor pass."""
    out: list[cst.CSTNode] = []
    t = type(node)
    fields = _FIELDS.get(t) or _fields(t, node)
    for f in fields:
        v = getattr(node, f)
        if type(v) in NODE_CLASSES:
            out.append(v)
        elif type(v) is tuple or type(v) is list:
            out.extend(c for c in v if type(c) in NODE_CLASSES)
    return out


def parent_map(module: cst.Module) -> dict[cst.CSTNode, cst.CSTNode]:
    """What ``ParentNodeProvider`` computes, without a visitor pass."""
    parents: dict[cst.CSTNode, cst.CSTNode] = {}
    _link(parents, [module])
    return parents


def _link(parents: dict[cst.CSTNode, cst.CSTNode], roots: list[cst.CSTNode]) -> None:
    """Record the parent of every node under each of ``roots``, one after the other
    (many calls link a few small subtrees: one call for all of them costs less)."""
    fields_of = _FIELDS
    leaves = _LEAVES
    nodes = NODE_CLASSES
    for root in roots:
        stack: list[cst.CSTNode] = [root]
        while stack:
            node = stack.pop()
            t = type(node)
            fields = fields_of.get(t)
            if fields is None:
                fields = _fields(t, node)
            for f in fields:
                v = getattr(node, f)
                vt = type(v)
                if vt in nodes:
                    parents[v] = node
                    if vt not in leaves:
                        stack.append(v)
                elif vt is tuple or vt is list:
                    for c in v:
                        ct = type(c)
                        if ct in nodes:
                            parents[c] = node
                            if ct not in leaves:
                                stack.append(c)


# -- scopes ------------------------------------------------------------------------------------


class _Fallback(Exception):
    """A construct this builder does not mirror: use libcst's ScopeProvider for the file."""


_ASSIGNING = frozenset(_ASSIGNMENT_LIKE_NODES)
# Nodes whose one field is a store target (libcst's ExpressionContextProvider).
_STORE_FIELD = {
    cst.AssignTarget: "target",
    cst.AnnAssign: "target",
    cst.AugAssign: "target",
    cst.NamedExpr: "target",
    cst.AsName: "name",
    cst.CompFor: "target",
}
# The fields each handler walks itself (the others only get parent links).
_WALKED_FUNCTION = frozenset({"params", "body", "decorators", "returns"})
_WALKED_LAMBDA = frozenset({"params", "body"})
_WALKED_PARAM = frozenset({"default", "annotation"})
_WALKED_VALUE = frozenset({"value"})
_WALKED_CLASS = frozenset({"decorators", "bases", "keywords", "body"})
_WALKED_BODY = frozenset({"body"})
_WALKED_COMP = frozenset({"for_in", "elt", "key", "value"})
_WALKED_COMP_FOR = frozenset({"target", "iter", "ifs", "inner_for_in"})
_WALKED_FOR = frozenset({"target", "iter", "body", "orelse", "asynchronous"})
_WALKED_CALL = frozenset({"func", "args"})
# The calls libcst's scope visitor treats as type hints (by qualified name, typing.*).
_TYPING_CALLS = frozenset({"cast", "NewType", "TypeVar"})
_UNSUPPORTED = (
    cst.TypeAlias,
    cst.TypeParameters,
    cst.TypeParam,
    cst.TypeVar,
    cst.TypeVarTuple,
    cst.ParamSpec,
)


def build(module: cst.Module) -> tuple[dict[cst.CSTNode, Scope], dict[cst.CSTNode, cst.CSTNode]] | None:
    """libcst's ``ScopeProvider`` and ``ParentNodeProvider`` mappings for ``module``, from
    one walk; ``None`` when the file uses a construct the builder does not mirror (the
    caller then lets libcst compute the scopes)."""
    builder = _ScopeBuilder()
    try:
        builder.walk(module)
        builder.infer_accesses()
    except _Fallback:
        return None
    except Exception:  # noqa: BLE001 - e.g. RecursionError; libcst then decides (or fails)
        return None
    return builder.scopes, builder.parents


def build_scopes(module: cst.Module) -> dict[cst.CSTNode, Scope] | None:
    built = build(module)
    return None if built is None else built[0]


class _ScopeBuilder:
    """Mirrors ``libcst.metadata.scope_provider.ScopeVisitor`` step by step.

    ``store`` stands for libcst's expression context: True exactly where
    ``ExpressionContextProvider`` would say STORE (names then become assignments); every
    other name the scope visitor reaches (LOAD, DEL, no context) is an access.
    """

    def __init__(self) -> None:
        self.scope: Scope = GlobalScope()
        self.scopes: dict[cst.CSTNode, Scope] = {}
        # Parent links, made on the way (``ParentNodeProvider``): ``generic`` links the
        # children it walks; handlers that walk only some fields link the rest (``leave``).
        self.parents: dict[cst.CSTNode, cst.CSTNode] = {}
        self.deferred: list[tuple[Access, cst.Attribute | None, cst.BaseString | None]] = []
        self.top_attribute: list[cst.Attribute | None] = [None]
        self.in_annotation: list[bool] = [False]
        self.in_type_hint: list[bool] = [False]
        self.ignored_subscripts: set[cst.Subscript] = set()
        self.string_annotation: cst.BaseString | None = None
        self.in_string = False
        # Only names bound from ``typing``-ish sources can make a call or subscript a type
        # hint (``typing.cast``, ``TypeVar``, ``Optional[...]``); until such a name is
        # bound, libcst's per-call qualified-name look-up cannot match and is skipped.
        self.typing_seen = False
        self.dotted_roots: set[str] = set()
        self.typing_aliases: set[str | None] = set()
        self.handlers = {
            cst.Import: self.visit_import,
            cst.ImportFrom: self.visit_import,
            cst.Attribute: self.visit_attribute,
            cst.Call: self.visit_call,
            cst.Annotation: self.visit_annotation,
            cst.SimpleString: self.visit_simple_string,
            cst.ConcatenatedString: self.visit_concatenated_string,
            cst.Subscript: self.visit_subscript,
            cst.Name: self.visit_name,
            cst.FunctionDef: self.visit_function,
            cst.Lambda: self.visit_lambda,
            cst.Param: self.visit_param,
            cst.Arg: self.visit_arg,
            cst.ClassDef: self.visit_class,
            cst.Global: self.visit_global,
            cst.Nonlocal: self.visit_nonlocal,
            cst.ListComp: self.visit_comp,
            cst.SetComp: self.visit_comp,
            cst.DictComp: self.visit_comp,
            cst.GeneratorExp: self.visit_comp,
            cst.For: self.visit_for,
        }
        for t in _UNSUPPORTED:
            self.handlers[t] = self.unsupported

    # -- traversal ----------------------------------------------------------------------

    def walk(self, node: cst.CSTNode, store: bool = False) -> None:
        handler = self.handlers.get(type(node))
        if handler is None:
            self.generic(node, store)
        else:
            handler(node, store)

    def generic(self, node: cst.CSTNode, store: bool) -> None:
        t = type(node)
        fields = _FIELDS.get(t)
        if fields is None:
            fields = _fields(t, node)
        if fields:
            store_field = _STORE_FIELD.get(t)
            generic = self.generic
            handlers = self.handlers
            nodes = NODE_CLASSES
            leaves = _LEAVES
            scopes = self.scopes
            parents = self.parents
            scope = self.scope  # children that open scopes restore it before returning
            for f in fields:
                v = getattr(node, f)
                s = (f == store_field) if store_field is not None else store
                vt = type(v)
                if vt in nodes:
                    parents[v] = node
                    if vt in leaves:
                        scopes[v] = scope  # a leaf: visited, left, nothing else
                    else:
                        h = handlers.get(vt)
                        if h is None:
                            generic(v, s)
                        else:
                            h(v, s)
                elif vt is tuple or vt is list:
                    for c in v:
                        ct = type(c)
                        if ct in nodes:
                            parents[c] = node
                            if ct in leaves:
                                scopes[c] = scope
                            else:
                                h = handlers.get(ct)
                                if h is None:
                                    generic(c, s)
                                else:
                                    h(c, s)
        self.scopes[node] = self.scope
        if t in _ASSIGNING:
            self.scope._assignment_count += 1

    def leave(self, node: cst.CSTNode, walked: frozenset[str] = frozenset()) -> None:
        """libcst's ``on_leave``; also links the children of a node whose handler walked
        only the fields ``walked`` (their subtrees link themselves)."""
        self.scopes[node] = self.scope
        if type(node) in _ASSIGNING:
            self.scope._assignment_count += 1
        self._adopt(node, walked)

    def _adopt(self, node: cst.CSTNode, walked: frozenset[str]) -> None:
        parents = self.parents
        nodes = NODE_CLASSES
        leaves = _LEAVES
        unwalked: list[cst.CSTNode] = []  # linked after this node's own children
        t = type(node)
        for f in _FIELDS.get(t) or _fields(t, node):
            v = getattr(node, f)
            vt = type(v)
            if vt in nodes:
                parents[v] = node
                if f not in walked and vt not in leaves:
                    unwalked.append(v)
            elif vt is tuple or vt is list:
                for c in v:
                    ct = type(c)
                    if ct in nodes:
                        parents[c] = node
                        if f not in walked and ct not in leaves:
                            unwalked.append(c)
        if unwalked:
            _link(parents, unwalked)

    def unsupported(self, node: cst.CSTNode, store: bool) -> None:
        raise _Fallback(type(node).__name__)

    # -- bindings -------------------------------------------------------------------------

    def _note_typing(self, name: str) -> None:
        if "typing" in name:
            self.typing_seen = True

    def visit_import(self, node: cst.Import | cst.ImportFrom, store: bool) -> None:
        names = node.names
        if not isinstance(names, cst.ImportStar):
            if isinstance(node, cst.ImportFrom) and node.module is not None:
                self._note_typing(cst.helpers.get_full_name_for_node(node.module) or "")
            for alias in names:
                self.scopes[alias] = self.scope
                real = cst.helpers.get_full_name_for_node(alias.name) or ""
                self._note_typing(real)
                if alias.asname is not None and real.rpartition(".")[2] in _TYPING_CALLS:
                    self.typing_aliases.add(alias.evaluated_alias)
                asname = alias.asname
                if asname is not None:
                    target = asname.name
                    if not isinstance(target, cst.Name):
                        raise _Fallback("import alias")
                else:
                    target = alias.name
                for value, _ in _gen_dotted_names(target):
                    self._note_typing(value)
                    if "." in value:
                        self.dotted_roots.add(value.split(".", 1)[0])
                    self.scope.record_import_assignment(value, node, target)
        self.leave(node)

    def visit_global(self, node: cst.Global, store: bool) -> None:
        for item in node.names:
            self.scope.record_global_overwrite(item.name.value)
        self.leave(node)

    def visit_nonlocal(self, node: cst.Nonlocal, store: bool) -> None:
        if isinstance(self.scope, GlobalScope):
            raise _Fallback("nonlocal at module level")  # libcst raises; let it
        for item in node.names:
            self.scope.record_nonlocal_overwrite(item.name.value)
        self.leave(node)

    def visit_name(self, node: cst.Name, store: bool) -> None:
        if store and not self.in_string:
            self._note_typing(node.value)
            self.scope.record_assignment(node.value, node)
        else:
            access = Access(
                node,
                self.scope,
                is_annotation=self.in_annotation[-1],
                is_type_hint=self.in_type_hint[-1],
            )
            self.deferred.append((access, self.top_attribute[-1], self.string_annotation))
        if node.lpar or node.rpar:
            for p in (*node.lpar, *node.rpar):
                self.parents[p] = node
                self.generic(p, False)
        self.scopes[node] = self.scope  # a name is never assignment-like

    # -- scopes -----------------------------------------------------------------------------

    def _bind(self, node: cst.FunctionDef | cst.ClassDef | cst.Param) -> str:
        """``node`` binds its name in the current scope (a ``def``, ``class`` or parameter)."""
        name = node.name.value
        self._note_typing(name)
        self.scope.record_assignment(name, node)
        self.scopes[node.name] = self.scope
        return name

    def visit_function(self, node: cst.FunctionDef, store: bool) -> None:
        if node.type_parameters is not None:
            raise _Fallback("type parameters")
        name = self._bind(node)
        outer = self.scope
        self.scope = FunctionScope(outer, node, name)
        self.walk(node.params)
        self.walk(node.body)
        self.scope = outer
        for decorator in node.decorators:
            self.walk(decorator)
        if node.returns is not None:
            self.walk(node.returns)
        self.leave(node, _WALKED_FUNCTION)

    def visit_lambda(self, node: cst.Lambda, store: bool) -> None:
        outer = self.scope
        self.scope = FunctionScope(outer, node, None)
        self.walk(node.params)
        self.walk(node.body)
        self.scope = outer
        self.leave(node, _WALKED_LAMBDA)

    def visit_param(self, node: cst.Param, store: bool) -> None:
        self._bind(node)
        inner = self.scope
        self.scope = inner.parent
        if node.default is not None:
            self.walk(node.default)
        if node.annotation is not None:
            self.walk(node.annotation)
        self.scope = inner
        self.leave(node, _WALKED_PARAM)

    def visit_arg(self, node: cst.Arg, store: bool) -> None:
        self.walk(node.value)
        self.leave(node, _WALKED_VALUE)

    def visit_class(self, node: cst.ClassDef, store: bool) -> None:
        if node.type_parameters is not None:
            raise _Fallback("type parameters")
        name = self._bind(node)
        for decorator in node.decorators:
            self.walk(decorator)
        for base in node.bases:
            self.walk(base)
        for keyword in node.keywords:
            self.walk(keyword)
        outer = self.scope
        self.scope = ClassScope(outer, node, name)
        for statement in node.body.body:
            self.walk(statement)
        self.scope = outer
        self._adopt(node.body, _WALKED_BODY)
        self.leave(node, _WALKED_CLASS)

    def visit_comp(self, node, store: bool) -> None:
        for_in = node.for_in
        self.walk(for_in.iter)
        self.scopes[for_in] = self.scope
        outer = self.scope
        self.scope = ComprehensionScope(outer, node)
        self.walk(for_in.target, True)
        self.scope._assignment_count += 1
        for condition in for_in.ifs:
            self.walk(condition)
        if for_in.inner_for_in is not None:
            self.walk(for_in.inner_for_in)
        if isinstance(node, cst.DictComp):
            self.walk(node.key)
            self.walk(node.value)
        else:
            self.walk(node.elt)
        self.scope = outer
        self._adopt(for_in, _WALKED_COMP_FOR)
        self.leave(node, _WALKED_COMP)

    def visit_for(self, node: cst.For, store: bool) -> None:
        self.walk(node.target, True)
        self.scope._assignment_count += 1
        self.walk(node.iter)
        self.walk(node.body)
        if node.orelse is not None:
            self.walk(node.orelse)
        if node.asynchronous is not None:
            self.walk(node.asynchronous)
        self.leave(node, _WALKED_FOR)

    # -- attributes, calls, annotations ----------------------------------------------------

    def visit_attribute(self, node: cst.Attribute, store: bool) -> None:
        top = self.top_attribute
        if top[-1] is None:
            top[-1] = node
        self.walk(node.value)  # the value is always a load; ``attr`` is not visited
        if top[-1] is node:
            top[-1] = None
        self.leave(node, _WALKED_VALUE)

    def _qnames(self, node: cst.CSTNode) -> set[str]:
        return {q.name for q in self.scope.get_qualified_names_for(node)}

    def _may_be_typing_call(self, node: cst.Call) -> bool:
        """A cheap necessary condition for libcst's qualified names of ``node`` to hold
        ``typing.cast``/``NewType``/``TypeVar``: each qualified name ends with the call's
        last name part, except for an import bound under another name (``as``)."""
        if not self.typing_seen:
            return False
        full = cst.helpers.get_full_name_for_node(node)
        if full is None:
            return False
        return full.rpartition(".")[2] in _TYPING_CALLS or full in self.typing_aliases

    def visit_call(self, node: cst.Call, store: bool) -> None:
        self.top_attribute.append(None)
        self.in_type_hint.append(False)
        qnames = self._qnames(node) if self._may_be_typing_call(node) else ()
        if "typing.NewType" in qnames or "typing.TypeVar" in qnames:
            self.walk(node.func)
            self.in_type_hint[-1] = True
            for arg in node.args[1:]:
                self.walk(arg)
            if node.args:
                _link(self.parents, [node.args[0]])  # the one part libcst does not visit
        elif "typing.cast" in qnames:
            self.walk(node.func)
            if node.args:
                self.in_type_hint.append(True)
                self.walk(node.args[0])
                self.in_type_hint.pop()
                for arg in node.args[1:]:
                    self.walk(arg)
        else:
            self.generic(node, False)
            self.top_attribute.pop()
            self.in_type_hint.pop()
            return
        self.leave(node, _WALKED_CALL)
        self.top_attribute.pop()
        self.in_type_hint.pop()

    def visit_annotation(self, node: cst.Annotation, store: bool) -> None:
        self.in_annotation.append(True)
        self.generic(node, False)
        self.in_annotation.pop()

    def visit_subscript(self, node: cst.Subscript, store: bool) -> None:
        in_type_hint = False
        if isinstance(node.value, cst.Name) and self.typing_seen:
            qnames = self._qnames(node.value)
            if any(q.startswith(("typing.", "typing_extensions.")) for q in qnames):
                in_type_hint = True
            if "typing.Literal" in qnames or "typing_extensions.Literal" in qnames:
                self.ignored_subscripts.add(node)
        self.in_type_hint.append(in_type_hint)
        self.generic(node, False)  # value and slice are loads
        self.in_type_hint.pop()
        self.ignored_subscripts.discard(node)

    def visit_simple_string(self, node: cst.SimpleString, store: bool) -> None:
        self._string_annotation(node)
        self.leave(node)

    def visit_concatenated_string(self, node: cst.ConcatenatedString, store: bool) -> None:
        if self._string_annotation(node):
            self.leave(node)
        else:
            self.generic(node, False)

    def _string_annotation(self, node: cst.BaseString) -> bool:
        """libcst parses a string in an annotation or type hint as code and records the
        names in it as accesses of the whole string."""
        if not (self.in_type_hint[-1] or self.in_annotation[-1]) or self.ignored_subscripts:
            return False
        try:
            value = node.evaluated_value
        except Exception as exc:  # libcst would fail on it too; let it say so
            raise _Fallback("string annotation") from exc
        if not value:
            return False
        if not isinstance(value, str):
            raise _Fallback("bytes annotation")
        try:
            mod = cst.parse_module(value)
        except cst.ParserSyntaxError:
            return True
        except Exception as exc:
            raise _Fallback("string annotation") from exc
        body = mod.body
        if not (
            len(body) == 1
            and isinstance(body[0], cst.SimpleStatementLine)
            and len(body[0].body) == 1
            and isinstance(body[0].body[0], cst.Expr)
        ):
            raise _Fallback("string annotation with statements")
        top = self.string_annotation is None
        if top:
            self.string_annotation = node
        was, parents = self.in_string, self.parents
        self.in_string, self.parents = True, {}  # the parsed string is not in the tree
        self.walk(mod)
        self.in_string, self.parents = was, parents
        if top:
            self.string_annotation = None
        return True

    # -- resolution -----------------------------------------------------------------------

    def infer_accesses(self) -> None:
        """``ScopeVisitor.infer_accesses``, on the records this builder made."""
        by_scope_name: dict[tuple[Scope, str], set[Access]] = defaultdict(set)
        for access, attribute, string in self.deferred:
            name = access.node.value
            # Only ``import a.b`` binds dotted names, so only then can a longer dotted
            # name than the accessed name itself be in scope.
            if attribute is not None and name in self.dotted_roots:
                for attr_name, node in _gen_dotted_names(attribute):
                    if attr_name in access.scope:
                        access.node = node
                        name = attr_name
                        break
            if string is not None:
                access.node = string
            by_scope_name[(access.scope, name)].add(access)
            access.record_assignments(name)
            access.scope.record_access(name, access)
        for (scope, name), accesses in by_scope_name.items():
            for assignment in scope._resolve_scope_for_access(name, scope):
                assignment.record_accesses(accesses)
        self.deferred = []


class _OnDemand(Mapping):
    """A batchable provider's mapping, computed by libcst on first use."""

    def __init__(self, wrapper: MetadataWrapper, provider: type) -> None:
        self._wrapper = wrapper
        self._provider = provider
        self._mapping: Mapping | None = None

    def _resolved(self) -> Mapping:
        if self._mapping is None:
            provider = self._provider()
            self._wrapper.visit_batched([provider])
            self._mapping = dict(provider._computed)
        return self._mapping

    def __getitem__(self, node: cst.CSTNode) -> object:
        return self._resolved()[node]

    def __iter__(self) -> Iterator[cst.CSTNode]:
        return iter(self._resolved())

    def __len__(self) -> int:
        return len(self._resolved())


class _LazyQualifiedNames(Mapping):
    """What ``QualifiedNameProvider`` gives, computed only for the nodes rules ask about.

    The provider walks the whole tree to attach a lazy value to every node; rules ask for a
    few hundred calls at most. Same answers: a node's scope's ``get_qualified_names_for``,
    or an empty set for a node without a scope.
    """

    def __init__(self, scopes: Mapping[cst.CSTNode, object]) -> None:
        self._scopes = scopes
        self._cache: dict[cst.CSTNode, object] = {}

    def __getitem__(self, node: cst.CSTNode) -> object:
        try:
            return self._cache[node]
        except KeyError:
            scope = self._scopes.get(node)
            names = set() if scope is None else scope.get_qualified_names_for(node)
            self._cache[node] = names
            return names

    def get(self, node: cst.CSTNode, default: object = None) -> object:
        return self[node]

    def __iter__(self) -> Iterator[cst.CSTNode]:
        return iter(self._scopes)

    def __len__(self) -> int:
        return len(self._scopes)


_parent_map = parent_map  # the name tests/test_engine.py imports
