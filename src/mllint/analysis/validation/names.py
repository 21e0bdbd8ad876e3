"""Names and textual signs that the validation-pass rules (ML002, ML003, ML007) read.

Two kinds of knowledge live here: what a *name* says (``val_loader`` is held-out data,
``evaluate`` is an evaluation, ``netG`` is a model) and what torch's *qualified names*
mean (``torch.no_grad`` switches autograd off, ``torch.nn.Dropout`` depends on the mode).
Each name-based sign of evaluation is also a regex over one physical line; the analysis
counts a sign only where its line matches, and the rules' REQUIRES prefilters are built
from the same regexes, so the prefilters are sound by construction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mllint.analysis.pyast.index import ENABLE_GRAD, NO_GRAD, SET_GRAD_ENABLED
from mllint.prefilter import GAP, any_layout, as_written, both, dotted, guarded

Pos = tuple[int, int]

# -- names -------------------------------------------------------------------------------

#: What may follow a data word: ``val_loader``, ``valLoader``, ``testset``, ``val_epoch``.
_DATA_SUFFIX = (
    r"(?i:_?(?:loader|loaders|dataloader|dl|ds|set|data|dataset|datasets|iter|iterator"
    r"|batch|batches|split|x|y|gen|generator|inputs|images|imgs|samples|examples|features"
    r"|feats|labels|targets|queue|files|epoch|one_epoch|step|loop|pass|model|net))"
)
_DATA_PREFIX = (
    r"(?<![A-Za-z0-9])(?:x|y|X|Y|data|dataset|ds|loader|dl|data_loader|set|images|imgs"
    r"|labels|targets|inputs|features|split)_"
)
#: A word naming held-out data or an evaluation, in an identifier or string
#: (``val_loader``, ``testloader``, ``X_val``, ``valLoader``, ``"val"``, ``evaluate``).
#: Words that often mean something else - ``val``/``valid``/``dev`` (``max_val``,
#: ``is_valid``, ``std_dev``) and ``validate`` (``validate_config``) - count only where
#: the name around them is about data. The rules' REQUIRES prefilters are built from this
#: same pattern, so they are sound for every name-based sign of a validation pass.
VAL_WORD = (
    r"(?:(?<![a-z])(?i:validation|validating|evaluate|evaluation|eval|test|testing|holdout"
    r"|heldout)" + _DATA_SUFFIX + r"?(?![a-z])"
    r"|(?<![A-Za-z0-9_])(?i:val|valid|dev)" + _DATA_SUFFIX + r"(?![a-z])"
    r"|(?<=['\"])(?i:val|valid|dev)(?=['\"])"
    r"|" + _DATA_PREFIX + r"(?i:val|valid|dev)(?![a-z])"
    r"|(?<![A-Za-z0-9_])validate(?:_(?:epoch|one_epoch|model|loop|step|net))?(?![A-Za-z0-9_]))"
)
VAL_RE = re.compile(VAL_WORD)
#: Text that any ``no_grad``-style context or decorator must contain.
NO_GRAD_WORD = r"no_grad|inference_mode|set_grad_enabled"
#: Training data: ``train_loader``, ``X_train``, ``"train"``, ``train=True``. Not after a
#: dot: ``self.training`` is in every module, and ``self.train_loader`` is judged by use.
TRAIN_WORD = (
    r"(?<![a-z.])(?i:train|training|trn)(?i:loader|loaders|dl|ds|set|data|dataset|iter"
    r"|batches|split|x|y|gen)?(?![a-z])"
)

# Where a name-based sign of evaluation may come from, as text on one physical line. The
# analysis counts a sign only where its line matches, and the rules' REQUIRES prefilters
# use the same patterns, so the prefilters are sound by construction.
#
# Speed: the prefilters scan every file, and Python's ``re`` scans fast only for a pattern
# that starts with a literal (an alternation: where every branch does). ``\bfor`` or a
# leading lookbehind makes it try the whole pattern at every position, so keywords are
# written ``for(?<!\wfor)`` - the same language as ``\bfor``, but literal-led.


def _kw(word: str) -> str:
    r"""``word`` as a whole word at its start: ``\bword`` written literal-first."""
    return rf"{word}(?<!\w{word})"


#: ``for x, y in val_loader`` / ``[m(x) for x in test_batches]``, on the ``for`` line.
FOR_VAL = rf"{_kw('for')}\s+[\w\s,()\[\]*]+?\s+in\b[^\n]*?{VAL_WORD}"
#: Calls that wrap an iterable and yield what it yields: a loop over ``pbar`` after
#: ``pbar = tqdm(val_loader)`` is a loop over ``val_loader`` (by their last name). Only
#: these two, whose names are rare words: the prefilter finds the lines to search by them.
ITER_WRAPPERS = frozenset({"tqdm", "enumerate"})
_WRAPPED = r"(?:tqdm|enumerate)[ \t]*\("
#: ``while step < len(val_loader)``.
WHILE_VAL = rf"{_kw('while')}\b[^\n]*?{VAL_WORD}"
#: ``FOR_VAL`` for such a loop: ``pbar = tqdm(val_loader)``, then ``for x, y in pbar``.
WRAPPED_VAL = rf"{_WRAPPED}[^\n]*?{VAL_WORD}"
WRAPPED_VAL_RE = re.compile(WRAPPED_VAL)
#: The name of an evaluation function: ``evaluate``, ``validate_one_epoch``,
#: ``run_validation``, ``test``, ``eval_model`` - not ``test_vit`` or ``validate_config``.
_EVAL_SUFFIXES = (
    r"(?:_?(?i:epoch|one_epoch|step|loop|pass|model|net|loader|dataset|data|set|accuracy"
    r"|acc|metrics|score|loss|all|batch|batches|fn|func|impl))*"
)
EVAL_FUNCTION = (
    r"_*(?:(?:run|do|perform|compute)_)?"
    r"(?i:eval|evaluate|evaluation|validate|validation|val|test|testing)" + _EVAL_SUFFIXES
)
EVAL_FUNCTION_RE = re.compile(EVAL_FUNCTION)
#: ``def evaluate(``, ``def run_validation(``.
DEF_VAL = rf"{_kw('def')}\s+{EVAL_FUNCTION}\s*\("
#: ``model(X_test)``: a forward whose first argument is held-out data. (The lookahead is
#: implied by the rest; it only skips the many ``(`` not followed by one dotted name.)
ARG_VAL = rf"\((?=[ \t]*\**[\w.]*[ \t]*[,)])[ \t]*\**[\w.]*?{VAL_WORD}[\w.]*[ \t]*[,)]"
#: ``score(model, i, test_data)``: an argument in any place that is held-out data (a loop
#: handing it to the helper that runs the model). As a sign it stands for ``ARG_VAL`` too.
ARGS_VAL = rf"[(,](?=[ \t]*\**[\w.]*[ \t]*[,)])[ \t]*\**[\w.]*?{VAL_WORD}[\w.]*[ \t]*[,)]"
#: ``model.eval()``, ``model.train(False)``.
_MODE_CALL_REST = r"\s*(?:eval|train)\s*\("
MODE_CALL = r"\." + _MODE_CALL_REST
#: A loop over batches of data: ``for x, y in loader``, ``for batch in tqdm(dataloader)``.
_BATCH_WORD = r"(?i:loader|_dl\b|batches)"
#: A name of a loader or of batches (``vali_loader``, ``test_dl``), whatever the split.
BATCH_RE = re.compile(_BATCH_WORD)
_FOR_DATA_REST = rf"\s+[\w\s,()\[\]*.]+?\s+in\b[^\n]*?{_BATCH_WORD}"
FOR_DATA = _kw("for") + _FOR_DATA_REST
FOR_DATA_RE = re.compile(FOR_DATA)
#: ``FOR_DATA`` for a loop over a name bound to a wrapper's call (``ITER_WRAPPERS``), read
#: off the line where that call starts, from its column (``it = iter(dataloader)``).
WRAPPED_DATA = rf"{_WRAPPED}[^\n]*?{_BATCH_WORD}"
WRAPPED_DATA_RE = re.compile(WRAPPED_DATA)
#: ``with torch.no_grad():`` (a decorator is no sign: optimizers and initialisers use it).
_WITH_NO_GRAD_REST = rf"\b[^\n]*?(?:{NO_GRAD_WORD})"
WITH_NO_GRAD = _kw("with") + _WITH_NO_GRAD_REST
WITH_NO_GRAD_RE = re.compile(WITH_NO_GRAD)

#: ``if train:`` / ``elif not cross_valid:`` / ``if phase == "train":``: a test of a flag
#: that a shared train/eval loop may branch on (led by ``if``, so ``elif`` matches too).
FLAG_IF = r"if\s+(?:not\s+)?\w+\s*(?:[=!]=\s*(?:'\w*'|\"\w*\")\s*)?:"
FLAG_IF_RE = re.compile(FLAG_IF)

# -- the rules' REQUIRES pieces (file-wide) ------------------------------------------------


#: What may stand between a callee and its ``(``: spaces, and - inside brackets - line
#: breaks, comments and backslash continuations (``(runner\n .evaluate  # x\n (m, l))``).
#: A superset of Python's layout there, so a prefilter built on it stays sound; its three
#: branches start with different characters, so it matches in one way only (no backtracking).
CALL_LAYOUT = GAP
#: ``evaluate(model, loader)``: a call (with arguments) of an evaluation-named function,
#: i.e. ``(?<!\w){EVAL_FUNCTION}{CALL_LAYOUT}\((?!\s*\))``, led by the first two letters
#: of its core word (``ev``/``va``/``te``, any case) and checking what precedes them by
#: lookbehind: nothing word-like, or ``_`` after no letter/digit or after ``run``/``do``/
#: ``perform``/``compute`` (a superset of ``_*`` plus those prefixes).
_CORE_PRE = (r"(?:(?<!\w)|(?<=_)(?:(?<![A-Za-z0-9]_)|(?<=run_)|(?<=do_)|(?<=perform_)"
             r"|(?<=compute_)))")
_CORE_TAIL = {"e": ("[vV]", "(?i:al|aluate|aluation)"), "v": ("[aA]", "(?i:lidate|lidation|l)"),
              "t": ("[eE]", "(?i:st|sting)")}
CALL_VAL = any_layout("|".join(
    rf"{c}{_CORE_TAIL[c.lower()][0]}(?<={_CORE_PRE}..){_CORE_TAIL[c.lower()][1]}"
    rf"{_EVAL_SUFFIXES}{CALL_LAYOUT}\((?!\s*\))"
    for c in "eEvVtT"
))


def or_flag_pass(signs: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """REQUIRES entries for "one of ``signs``, or a shared train/eval loop": both a flag
    test (``if train:``) and a loop over batches (see ``analysis.validation.flags``),
    written as two entries, ``(signs | FLAG_IF) & (signs | FOR_DATA | WRAPPED_DATA)``, since entries
    are all required and each is searched once on its own. (Both are read off their
    physical lines by the analysis.)"""
    return (*signs, as_written(FLAG_IF)), (*signs, as_written(FOR_DATA), as_written(WRAPPED_DATA))


#: Any name-based sign that a loop or function evaluates: as alternatives of a REQUIRES
#: entry (each literal-led, searched once per file for all three rules), and as one regex.
#: None of them needs the prefilter's layout variants: the analysis reads the data-name
#: signs off the physical line as written (``line_matches``), and the function name is
#: searched with Python's layout between ``def`` and the name.
EVAL_SIGNS = (
    as_written(FOR_VAL),
    as_written(WRAPPED_VAL),
    as_written(WHILE_VAL),
    any_layout(rf"{_kw('def')}(?:\s|\\)+{EVAL_FUNCTION}(?!\w)"),
    as_written(ARGS_VAL),  # ``ARG_VAL``, the first argument, is one of its matches
)
EVAL_SIGN = "|".join(EVAL_SIGNS)
#: ``with torch.no_grad():`` and, somewhere, a loop over batches (both read off their
#: physical lines by the analysis).
NO_GRAD_SIGN = as_written(guarded(
    ("no_grad", "inference_mode", "set_grad_enabled"),  # what every ``with`` part names
    both(FOR_DATA, WITH_NO_GRAD),
))
#: The same, for a loop over a wrapped iterable made first (``WRAPPED_DATA``). Kept apart
#: from ``NO_GRAD_SIGN``: each part of a ``both`` is searched on its own, and a part that
#: stays within a line is searched only on the lines holding its words.
NO_GRAD_WRAPPED_SIGN = as_written(guarded(
    ("no_grad", "inference_mode", "set_grad_enabled"),
    both(WRAPPED_DATA, WITH_NO_GRAD),
))
NO_GRAD_SIGNS = (NO_GRAD_SIGN, NO_GRAD_WRAPPED_SIGN)
#: ``with torch.no_grad():`` and an ``if`` that tests held-out data on its line
#: (``if val_ds is not None:``): an evaluation that a held-out test guards.
IF_VAL = rf"{_kw('if')}\b[^\n]*?{VAL_WORD}"
IF_VAL_RE = re.compile(IF_VAL)
GUARDED_NO_GRAD_SIGN = as_written(guarded(
    ("no_grad", "inference_mode", "set_grad_enabled"),
    both(WITH_NO_GRAD, IF_VAL),
))
#: ``model.eval()`` (in any layout) and a loop over batches (on its line).
MODE_SIGN = as_written(guarded(
    ("eval", "train"),  # what every ``.eval(``/``.train(`` part names
    both(FOR_DATA, dotted(rf"(?:eval|train){GAP}\(")),
))
MODE_WRAPPED_SIGN = as_written(guarded(
    ("eval", "train"),
    both(WRAPPED_DATA, dotted(rf"(?:eval|train){GAP}\(")),
))
MODE_SIGNS = (MODE_SIGN, MODE_WRAPPED_SIGN)
FOR_VAL_RE = re.compile(FOR_VAL)
WHILE_VAL_RE = re.compile(WHILE_VAL)
ARG_VAL_RE = re.compile(ARG_VAL)
ARGS_VAL_RE = re.compile(ARGS_VAL)
TRAIN_RE = re.compile(TRAIN_WORD)

_MODEL_WORDS = (
    "model|net|network|classifier|backbone|encoder|decoder|generator|discriminator"
    "|policy|critic|actor|student|teacher|autoencoder|vae|gan|cnn|rnn|lstm|mlp|transformer"
)
_MODEL_NAME_RE = re.compile(
    rf"^(?:[a-z0-9]+_)*(?:{_MODEL_WORDS})(?:_(?:ft|ema|eval|copy|s|t|g|d|a|b|\d+))?$"
    r"|^[a-z0-9]*net\d*$|^net[A-Z0-9_].*$|^model[A-Z0-9].*$"
)


def is_val_name(name: str) -> bool:
    return bool(VAL_RE.search(name))


def is_train_name(name: str) -> bool:
    return bool(TRAIN_RE.search(name)) and not is_val_name(name)


def is_eval_function(name: str) -> bool:
    return EVAL_FUNCTION_RE.fullmatch(name) is not None


def is_loss_class(dotted: str) -> bool:
    """A class named as a loss function (``ContrastiveLoss``, ``FocalCriterion``): an
    ``nn.Module`` subclass, but a criterion, never the model evaluated (torch's own
    ``*Loss`` classes are excluded by ``is_module_constructor`` alike)."""
    name = dotted.rsplit(".", 1)[-1]
    # ``ModelWithLoss``, ``NetWithLoss``: the model and its loss in one module, run forward.
    return name.endswith(("Loss", "Criterion")) and not any(
        w in name for w in ("With", "Model", "Net"))


def is_model_name(dotted: str) -> bool:
    last = dotted.rsplit(".", 1)[-1]
    return bool(_MODEL_NAME_RE.match(last) or _MODEL_NAME_RE.match(last.lower()))


# -- what torch names mean ---------------------------------------------------------------

GRAD_OFF = NO_GRAD
GRAD_SET = SET_GRAD_ENABLED
GRAD_ON = ENABLE_GRAD
AUTOGRAD_CALLS = frozenset(
    {"torch.autograd.backward", "torch.autograd.grad", "torch.autograd.functional.vjp"}
)
#: Tensors made up on the spot: a forward on them checks shapes, it evaluates nothing.
SYNTHETIC = frozenset(
    f"torch.{f}" for f in ("randn", "rand", "randint", "zeros", "ones", "empty", "full",
                           "arange", "randn_like", "rand_like", "zeros_like", "ones_like")
)
#: Method names whose call means "this code trains": back-propagation or a parameter update.
TRAIN_METHODS = frozenset({"backward", "manual_backward", "step", "optimizer_step"})
#: Methods returning the module they are called on: aliases of the model.
MODULE_PASSTHROUGH = frozenset(
    {"to", "cuda", "cpu", "half", "float", "double", "bfloat16", "eval", "train",
     "requires_grad_", "share_memory", "to_empty", "apply", "xpu", "mps"}
)
WRAPPERS = frozenset(
    {
        "torch.nn.DataParallel", "torch.nn.parallel.DataParallel",
        "torch.nn.parallel.DistributedDataParallel", "torch.nn.parallel.data_parallel",
        "torch.compile", "torch.jit.script", "torch.jit.trace",
        "torch.nn.SyncBatchNorm.convert_sync_batchnorm",
        "torch.nn.parallel.distributed.DistributedDataParallel",
        "torch.distributed.fsdp.FullyShardedDataParallel",
        "torch.optim.swa_utils.AveragedModel",
    }
)
#: ``torch.nn`` classes that are modules but never "the model" of a validation pass.
_NOT_MODELS = frozenset(
    {"Softmax", "LogSoftmax", "Softmin", "Sigmoid", "Tanh", "ReLU", "GELU", "Identity",
     "Flatten", "Unflatten", "Module", "ModuleList", "ModuleDict", "ParameterList",
     "ParameterDict", "Parameter", "Upsample", "PixelShuffle", "CosineSimilarity",
     "PairwiseDistance"}
)
LOADER_KWARGS_SPLIT = frozenset({"sampler", "batch_sampler"})
SPLITTERS = frozenset(
    {"torch.utils.data.random_split", "torch.utils.data.Subset",
     "torch.utils.data.dataset.random_split", "torch.utils.data.dataset.Subset",
     "sklearn.model_selection.train_test_split"}
)
#: Base classes whose subclasses' hooks run inside a framework that owns the loop, the
#: model's mode and autograd (Lightning's ``validation_step``, HF ``Trainer``...).
_FRAMEWORK_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "trl.")
_FRAMEWORK_HOOKS = re.compile(
    r"^(validation_step|test_step|predict_step|eval_step|validation_epoch_end|test_epoch_end"
    r"|on_validation_\w+|on_test_\w+|on_predict_\w+|on_evaluate|prediction_step"
    r"|evaluation_loop|prediction_loop)$"
)


def is_module_constructor(qnames: Iterable[str]) -> bool:
    for q in qnames:
        parts = q.split(".")
        if q.startswith("torch.nn.") and "functional" not in parts and "init" not in parts:
            last = parts[-1]
            if last[:1].isupper() and last not in _NOT_MODELS and not last.endswith("Loss"):
                return True
        if q.startswith("torchvision.models.") and parts[-1][:1].islower():
            return True
        if q in ("timm.create_model", "timm.models.create_model", "torch.hub.load"):
            return True
    return False


def is_module_base(qnames: Iterable[str]) -> bool:
    for q in qnames:
        if q.startswith("torch.nn.") and q.split(".")[-1][:1].isupper():
            return True
        if "LightningModule" in q or q.endswith("PreTrainedModel"):
            return True
    return False


def is_framework_base(qnames: Iterable[str]) -> bool:
    for q in qnames:
        if q.startswith(_FRAMEWORK_PREFIXES) and not q.endswith(("Fabric", "LightningDataModule")):
            return True
        if q.startswith("transformers.") and q.endswith("Trainer"):
            return True
    return False


