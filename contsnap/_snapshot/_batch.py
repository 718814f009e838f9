"""Many payloads made in one go (the states of an actor system's actors), each still
loading alone: one pickler, one functions table and one prelude for all of them.

The *prelude* is the globals the payloads name (the reconstructors, the classes and
functions pickle names by path). Each payload is pickled with them already in its
pickler's memo, so it names each by a memo index instead of by module and name, and the
pickler does not look each global up again (and call back into Python for it) in every
payload: most of what a small payload costs. ``prelude_bytes(names)`` puts them in the
memo again, in the same order, before the payload is read::

    pickle.loads(prelude_bytes(names[:n]) + payload)   # n: the prelude it was made with
"""

from __future__ import annotations

import io
import pickle
import sys
import types
from collections.abc import Iterable, Iterator
from typing import Any

from .. import _resources
from .._info import FunctionInfo, current_session
from ._capture import FrameState
from ._functions import _FastPickler, ready_for_handlers
from ._pickler import _full_payload


class FunctionsTable:
    """A functions table shared by many payloads: entries are only ever added, so a payload
    made against it loads with every later version of it. ``entries`` is what
    `from_payload`'s ``functions`` takes: ``[module, qualname, fingerprint, file]`` each."""

    def __init__(self, entries: Iterable[list[str]] = ()) -> None:
        self.entries: list[list[str]] = []
        self._places: dict[tuple[str, ...], int] = {}
        for entry in entries:  # kept as they are: the payloads name them by place
            self._places.setdefault(tuple(entry), len(self.entries))
            self.entries.append(list(entry))

    def place_of(self, entry: list[str]) -> int:
        key = tuple(entry)
        found = self._places.get(key)
        if found is None:
            found = self._places[key] = len(self.entries)
            self.entries.append(entry)
        return found


class Batch:
    """What the payloads of a batch share: the functions table and the prelude.

    Both only grow, from one batch to the next: a payload made with the first ``n`` globals
    of the prelude loads with ``prelude_bytes(batch.prelude_names[:n])`` in front of it.
    """

    def __init__(self, functions: Iterable[list[str]] = ()) -> None:
        self.functions = FunctionsTable(functions)
        #: the globals of the prelude, and their [module, qualname]
        self.prelude: list[Any] = []
        self.prelude_names: list[list[str]] = []
        self._known: set[int] = set()
        #: a pickler whose memo holds the prelude: copied into the batch pickler's memo
        #: before each payload (a copy made in C)
        self._seed = pickle.Pickler(io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL)

    def dump_each(
        self, objs: Iterable[Any], *, prelude: bool = True
    ) -> Iterator[tuple[bytes, dict[int, FrameState], int]]:
        """Pickle each of ``objs`` on its own: yields its payload, the frames captured on
        the way and the length of the prelude it was made with (without ``prelude``,
        always 0: a payload to keep that loads alone). An object the fast pickler cannot
        save is pickled by the full one: it needs no prelude (0), and names its functions
        itself.
        """
        if prelude and any(map(_moved, self.prelude, self.prelude_names)):
            self._forget_prelude()  # a module reloaded: learnt again
        fast: _BatchPickler | None = None
        if current_session() is None:
            ready_for_handlers()
            fast = _BatchPickler(io.BytesIO(), self.functions)
        forced = False
        for obj in objs:
            if fast is not None:
                buffer = fast.buffer
                used = len(self.prelude) if prelude else 0
                if used:
                    fast.memo = self._seed.memo
                else:
                    fast.clear_memo()
                try:
                    fast.dump(obj)
                except Exception:  # _NotFast, or an error the full pickler will describe
                    fast.forget()
                    fast.named.clear()
                else:
                    payload = buffer.getvalue()
                    if fast.named:
                        if prelude:
                            self._learn(fast.named)
                        fast.named.clear()
                    yield payload, fast.captured, used
                    fast.captured = {}
                    continue
                finally:
                    buffer.seek(0)
                    buffer.truncate()
            if not forced:
                _resources.resolve_refusals(force=True)
                forced = True
            payload, captured, _refs = _full_payload(obj, local=False, keep=None)
            yield payload, captured, 0

    def _forget_prelude(self) -> None:
        self.prelude, self.prelude_names = [], []
        self._known.clear()
        self._seed.clear_memo()

    def _learn(self, named: list[Any]) -> None:
        """Add to the prelude the globals a payload named itself (and pickle finds again by
        that name: anything else is left as the payload names it)."""
        added = False
        for obj in named:
            if id(obj) in self._known:
                continue
            name = _global_name(obj)
            if name is None:
                continue
            self._known.add(id(obj))
            self.prelude.append(obj)
            self.prelude_names.append(name)
            added = True
        if added:
            self._seed.memo = {id(obj): (i, obj) for i, obj in enumerate(self.prelude)}


class _BatchPickler(_FastPickler):
    """The fast pickler naming functions by their place in a `FunctionsTable`, and noting
    the globals it saves by name (candidates for the prelude)."""

    def __init__(self, file: io.BytesIO, table: FunctionsTable) -> None:
        super().__init__(file)
        self.table = table
        self.named: list[Any] = []

    def reducer_override(self, obj: Any) -> Any:
        reduced = _FastPickler.reducer_override(self, obj)
        if reduced is NotImplemented and (type(obj) in _GLOBAL_TYPES or isinstance(obj, type)):
            self.named.append(obj)  # not in the memo yet: pickle names it
        return reduced

    def index_of(self, info: FunctionInfo) -> int:
        found = self.function_index.get(id(info))  # the infos live while the batch runs
        if found is None:
            entry = [info.module, info.qualname, info.fingerprint, info.filename]
            found = self.function_index[id(info)] = self.table.place_of(entry)
        return found


_GLOBAL_TYPES = (types.FunctionType, types.BuiltinFunctionType)


def _moved(obj: Any, name: list[str]) -> bool:
    """Does ``name`` no longer find ``obj`` (its module was reloaded, say)?"""
    return _global_name(obj) != name


def _global_name(obj: Any) -> list[str] | None:
    """``[module, qualname]`` that finds ``obj`` again by import, or None."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if type(module) is not str or type(qualname) is not str or "<" in qualname:
        return None
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return [module, qualname] if found is obj else None


def prelude_bytes(names: list[list[str]]) -> bytes:
    """Pickle opcodes that put the globals ``names`` in the memo, in order (and leave the
    stack empty): what a payload of a `Batch` is read after."""
    out = bytearray()
    for name in names:
        for text in name:
            raw = text.encode("utf-8")
            if len(raw) < 256:
                out += pickle.SHORT_BINUNICODE + bytes((len(raw),)) + raw
            else:
                out += pickle.BINUNICODE + len(raw).to_bytes(4, "little") + raw
        out += pickle.STACK_GLOBAL + pickle.MEMOIZE + pickle.POP
    return bytes(out)
