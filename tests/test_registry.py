"""One registry of contsnap's process-wide state (contsnap._registry.STATE), and its reset.

Every module-level mutable object of contsnap is registered next to its definition, with how
it is reset; constants are listed here by name, with the reason they are constants.
"""

from __future__ import annotations

import ast
import collections
import contextvars
import importlib
import itertools
import pkgutil
import threading
import types
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import contsnap
from contsnap._registry import STATE, Registry

#: what looks like state but is not: filled when the module is imported, then only read
CONSTANTS = {
    # tables built at import
    "contsnap._codec._STATE_CODES",
    "contsnap._envelope.KINDS",
    "contsnap._envelope._HEADERS",
    "contsnap._envelope._JSON_KINDS",
    "contsnap._envelope._PACKED_AT",
    "contsnap._keys._ENVIRON",  # the process environment's own mapping, read
    "contsnap._moved.MOVED",
    "contsnap._roundtrip._DRIVERS",
    "contsnap._snapshot._pickler._HELPER_MEANING",
    "contsnap._snapshot._capture._AWAITING",
    "contsnap._snapshot._capture._NOUN",
    "contsnap._snapshot._capture._PREFIX",
    "contsnap._snapshot._functions._FAST_REDUCERS",
    "contsnap._transform._positions._AST_KINDS",
    "contsnap._views.REDUCERS",
    "contsnap._views._DICT_ITERATORS",
    "contsnap._views._DICT_VIEWS",
    "contsnap._views._VIEWS",
    "contsnap.testing._compound._COMPOUND",
}

_MUTABLE = (
    dict,
    list,
    set,
    bytearray,
    collections.deque,
    weakref.WeakValueDictionary,
    weakref.WeakKeyDictionary,
    weakref.WeakSet,
    threading.local,
    itertools.count,
)
#: values that hold no state of their own: markers, locks, context variables, loggers
_STATELESS = (
    contextvars.ContextVar,
    type(threading.Lock()),
    type(threading.RLock()),
)


def _modules() -> Iterator[types.ModuleType]:
    for info in pkgutil.walk_packages(contsnap.__path__, "contsnap."):
        try:
            yield importlib.import_module(info.name)
        except ImportError:  # an optional dependency (celery) is missing
            assert info.name.startswith("contsnap.integrations"), info.name


def _module_state(module: types.ModuleType) -> Iterator[tuple[str, Any]]:
    """Module-level names of ``module`` bound to mutable objects, and rebound globals."""
    tree = ast.parse(Path(str(module.__file__)).read_text())
    rebound = {
        name for node in ast.walk(tree) if isinstance(node, ast.Global) for name in node.names
    }
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        else:
            continue
        for name in names:
            if name == "__all__":
                continue
            value = vars(module).get(name)
            if (
                name in rebound
                or (isinstance(value, _MUTABLE) and not isinstance(value, type))
                or _settings(value)
            ):
                yield name, value


def _settings(value: Any) -> bool:
    """An instance of one of contsnap's classes whose attributes can be set (settings)."""
    cls = type(value)
    if not cls.__module__.startswith("contsnap") or isinstance(value, _STATELESS):
        return False
    return hasattr(value, "__dict__") and any(
        not name.startswith("_") and not callable(attr) for name, attr in vars(cls).items()
    )


def test_every_module_level_mutable_of_contsnap_is_registered() -> None:
    found = {
        f"{module.__name__}.{name}" for module in _modules() for name, _ in _module_state(module)
    }
    assert len(found) > 40  # the scan sees the state
    unregistered = sorted(found - CONSTANTS - {piece.name for piece in STATE})
    assert unregistered == [], "register these next to their definition (STATE.add)"
    # and nothing is registered twice or listed as a constant too
    assert not CONSTANTS & {piece.name for piece in STATE}


def test_the_scan_finds_settings_objects_and_rebound_globals() -> None:
    names = {
        f"{m.__name__}.{n}" for m in _modules() for n, _ in _module_state(m) if "._" in m.__name__
    }
    assert "contsnap._keys._configured" in names  # an object of settings
    assert "contsnap._marking._cache_key._stamp" in names  # a global rebound by a function


def test_every_registered_piece_exists_and_kept_ones_say_why() -> None:
    for piece in STATE:
        piece.get()
        assert piece.reset is not None or piece.why, piece.name


def test_reset_empties_what_can_be_reset_and_keeps_the_rest() -> None:
    from contsnap import _codec, _info, _keys
    from contsnap._durable import _plan
    from contsnap._marking import _cache_key

    @contsnap.checkpointable
    def counter() -> Any:
        yield 1

    with STATE.fresh():  # put everything back afterwards
        _plan._OVERRIDES["argv"] = ["x"]
        _keys.configure_keys(b"k" * 32)
        _codec.policy.allow_unsigned = True
        _cache_key.contsnap_stamp()
        assert _cache_key._stamp is not None
        records = len(_info._BY_CODE)
        STATE.reset()
        assert _plan._OVERRIDES == {}
        assert _keys.resolve().source != "contsnap.configure(key=...)"
        assert _codec.policy.allow_unsigned is False
        assert _cache_key._stamp is None
        assert len(_info._BY_CODE) == records  # the records of marked functions are kept
        gen = counter()
        next(gen)
        assert list(contsnap.loads(contsnap.dumps(gen))) == []  # snapshots still work


def test_reset_of_a_module_resets_only_its_pieces() -> None:
    from contsnap._durable import _plan, _signals

    with STATE.fresh("contsnap._durable"):
        _plan._OVERRIDES["argv"] = ["x"]
        _signals.received.append(15)
        STATE.reset("contsnap._durable._plan")
        assert _plan._OVERRIDES == {} and _signals.received == [15]
    with pytest.raises(KeyError, match="no process-wide state registered as contsnap.nothing"):
        STATE.reset("contsnap.nothing")


def test_fresh_empties_even_kept_pieces_and_puts_everything_back() -> None:
    from contsnap import _info

    @contsnap.checkpointable
    def known() -> Any:
        yield 1

    before = dict(_info._BY_NAME)
    assert before
    with STATE.fresh("contsnap._info._BY_NAME"):  # as in a process that lacks the functions
        assert _info._BY_NAME == {}
    assert _info._BY_NAME == before


def test_a_kept_piece_must_say_why_and_is_not_reset() -> None:
    registry = Registry()
    module = types.ModuleType("contsnap_test_registry")
    module.table = {1: 2}  # type: ignore[attr-defined]
    import sys

    sys.modules[module.__name__] = module
    try:
        with pytest.raises(ValueError, match="say why it is kept"):
            registry.add(module.__name__, "table", None)
        registry.add(module.__name__, "table", None, "live objects need it")
        registry.reset()
        assert module.table == {1: 2}  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="is not reset: live objects need it"):
            next(iter(registry)).do_reset()
    finally:
        del sys.modules[module.__name__]
