"""Derived-feature expressions: a small arithmetic language, parsed with ``ast``, never ``eval``ed.

An expression comes from ``params.yaml`` (``featurize.derived``) or from a model's
``feature_spec.json``, an artifact that whoever can write the model store can also write. So it
is admitted only as arithmetic (``+ - * / // % **``, unary minus), comparisons, numbers, column
names and calls of a few numpy functions (:data:`FUNCTIONS`), and it is computed by the tiny
evaluator here over float64 arrays: no attribute, subscript, string, lambda, comprehension,
keyword argument or dunder name can reach Python. The featurize stage, the training pipeline and
the service's numpy replay all call :func:`evaluate`, so they compute identical features.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from functools import lru_cache

import numpy as np

MAX_LENGTH = 1000  # characters; a feature formula is a line, not a program
MAX_DEPTH = 50  # nesting of the parsed tree, so evaluation never recurses deeply

# What a (sub)expression evaluates to: a column, or a constant (a numpy scalar).
Value = np.ndarray | np.float64
# name -> (numpy function, number of positional arguments it takes)
FUNCTIONS: dict[str, tuple[Callable[..., Value], int]] = {
    "log": (np.log, 1),
    "log1p": (np.log1p, 1),
    "exp": (np.exp, 1),
    "sqrt": (np.sqrt, 1),
    "abs": (np.abs, 1),
    "floor": (np.floor, 1),
    "ceil": (np.ceil, 1),
    "minimum": (np.minimum, 2),
    "maximum": (np.maximum, 2),
    "clip": (np.clip, 3),
    "where": (np.where, 3),
}
BINARY: dict[type[ast.operator], Callable[[Value, Value], Value]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
COMPARE: dict[type[ast.cmpop], Callable[[Value, Value], Value]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
UNARY: dict[type[ast.unaryop], Callable[[Value], Value]] = {
    ast.USub: np.negative,
    ast.UAdd: np.positive,
}


class ExpressionError(ValueError):
    """An expression is not valid syntax or uses something outside the admitted language."""


def _part(node: ast.AST, source: str) -> str:
    """The source text of ``node`` (what a message quotes), or its kind when none is known."""
    return ast.get_source_segment(source, node) or type(node).__name__


def _refusals(node: ast.AST, source: str, depth: int = 0) -> list[str]:
    """Every part of ``node`` outside the language, each named as its source text and why."""
    if depth > MAX_DEPTH:
        return [f"nesting deeper than {MAX_DEPTH} levels"]
    found: list[str] = []
    children: list[ast.AST] = []
    if isinstance(node, ast.Expression):
        children = [node.body]
    elif isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        children = [node.left, node.right]
    elif isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        children = [node.operand]
    elif isinstance(node, ast.Compare) and all(type(op) in COMPARE for op in node.ops):
        children = [node.left, *node.comparators]
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            found.append(f"the constant {_part(node, source)} (only numbers are allowed)")
        elif isinstance(value, int) and abs(value) > 2**53:
            found.append(f"the constant {_part(node, source)} (integers beyond 2**53 lose "
                         "precision as float64)")
    elif isinstance(node, ast.Name):
        if node.id.startswith("_"):
            found.append(f"the name {node.id!r} (names may not start with '_')")
        elif node.id in FUNCTIONS:
            found.append(f"the function name {node.id!r} used as a value")
    elif isinstance(node, ast.Call):
        found += _call_refusals(node, source)
        children = [a for a in node.args if not isinstance(a, ast.Starred)]
    else:
        found.append(f"{_part(node, source)!r} ({_kind(node)} is not allowed: only arithmetic, "
                     f"comparisons, numbers, column names and {sorted(FUNCTIONS)} calls)")
    for child in children:
        found += _refusals(child, source, depth + 1)
    return found


def _kind(node: ast.AST) -> str:
    """A reader's name for a node that is not allowed."""
    kinds = {ast.Attribute: "an attribute", ast.Subscript: "a subscript", ast.Lambda: "a lambda",
             ast.BoolOp: "and/or", ast.IfExp: "if/else", ast.NamedExpr: "an assignment",
             ast.JoinedStr: "an f-string", ast.Starred: "unpacking"}
    for cls, kind in kinds.items():
        if isinstance(node, cls):
            return kind
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        return "a comprehension"
    if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
        return "a container"
    if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Compare)):
        return "this operator"
    return f"{type(node).__name__}"


def _call_refusals(node: ast.Call, source: str) -> list[str]:
    """Why a call is refused: not a plain name of :data:`FUNCTIONS`, keywords, wrong arity."""
    text = _part(node, source)
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        return [f"the call {text!r} (only {sorted(FUNCTIONS)} may be called)"]
    found = []
    if node.keywords:
        found.append(f"keyword arguments in {text!r}")
    if any(isinstance(a, ast.Starred) for a in node.args):
        found.append(f"unpacking in {text!r}")
    arity = FUNCTIONS[node.func.id][1]
    if len(node.args) != arity:
        found.append(f"{text!r} ({node.func.id} takes {arity} argument{'s' * (arity > 1)})")
    return found


def _syntax_tree(expression: str) -> ast.Expression:
    """``expression`` parsed as Python syntax only; ExpressionError when it is too long or not valid."""
    if len(expression) > MAX_LENGTH:
        raise ExpressionError(f"expression is longer than {MAX_LENGTH} characters")
    try:
        return ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"{expression!r} is not a valid expression: {exc.msg}") from exc
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        raise ExpressionError(f"{expression!r} is not a valid expression: {exc}") from exc


@lru_cache(maxsize=256)
def parse_expression(expression: str) -> ast.Expression:
    """The checked tree of ``expression``; ExpressionError naming every part that is not allowed."""
    if not isinstance(expression, str):
        raise ExpressionError(f"{expression!r} is not a string expression")
    tree = _syntax_tree(expression)
    refused = _refusals(tree, expression.strip())
    if refused:
        raise ExpressionError(f"{expression!r} uses {'; '.join(refused)}")
    return tree


def names_in(expression: str) -> list[str]:
    """Column names ``expression`` reads, in order of appearance (function names excluded).

    Only the syntax is checked here, so a caller can name the columns of an expression it also
    refuses (params check reports both); :func:`parse_expression` checks the language.
    """
    return list(_names(str(expression)))


@lru_cache(maxsize=256)
def _names(expression: str) -> tuple[str, ...]:
    """:func:`names_in`, parsed once per expression (the service calls it for every batch)."""
    tree = _syntax_tree(expression)
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    names = [node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and id(node) not in called]
    return tuple(dict.fromkeys(names))


def evaluate(expression: str, columns: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
    """``expression`` over float64 ``columns`` (NaN for null): a float64 array of ``rows`` values.

    Comparisons give 1.0 or 0.0 (0.0 when a side is null, as numpy compares NaN); arithmetic on a
    null gives NaN. Floating-point warnings (log of 0, division by 0) are silenced: the result
    holds inf or NaN there, as numpy (and pandas before this) gives.
    """
    tree = parse_expression(expression)
    missing = [n for n in names_in(expression) if n not in columns]
    if missing:
        raise ExpressionError(f"{expression!r} reads columns {missing} that the input lacks")
    with np.errstate(all="ignore"):
        value = _value(tree.body, columns)
    result = np.broadcast_to(np.asarray(value, dtype=np.float64), (rows,))
    return np.array(result, dtype=np.float64)


def _value(node: ast.AST, columns: Mapping[str, np.ndarray]) -> Value:
    """Evaluate one checked node (only the node types :func:`_refusals` admits reach here)."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ExpressionError(f"unexpected constant {node.value!r} in a checked expression")
        return np.float64(node.value)  # numpy scalars overflow to inf where Python floats raise
    if isinstance(node, ast.Name):
        return np.asarray(columns[node.id], dtype=np.float64)
    if isinstance(node, ast.BinOp):
        return BINARY[type(node.op)](_value(node.left, columns), _value(node.right, columns))
    if isinstance(node, ast.UnaryOp):
        return UNARY[type(node.op)](_value(node.operand, columns))
    if isinstance(node, ast.Compare):
        left = _value(node.left, columns)
        result: np.ndarray | bool = True
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _value(comparator, columns)
            result = np.logical_and(result, COMPARE[type(op)](left, right))
            left = right
        return np.asarray(result, dtype=np.float64)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        function = FUNCTIONS[node.func.id][0]
        return function(*(_value(arg, columns) for arg in node.args))
    raise ExpressionError(f"unexpected {type(node).__name__} in a checked expression")
