"""How a durable job is run again: the plan its checkpoint records (``contsnap resume``),
and the command line's options that ``contsnap run`` / ``contsnap resume`` put in force
for the script's run() calls.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from .._registry import STATE

#: What ``contsnap run`` / ``contsnap resume`` put in force for run() calls
#: in the script: the command line's options win over the call's arguments.
_OVERRIDES: dict[str, Any] = {}
STATE.add(__name__, "_OVERRIDES")


@contextlib.contextmanager
def overrides(**values: Any) -> Iterator[None]:
    """Command-line options for the run() calls made inside the block."""
    given = {k: v for k, v in values.items() if v is not None}
    saved = dict(_OVERRIDES)
    _OVERRIDES.update(given)
    try:
        yield
    finally:
        _OVERRIDES.clear()
        _OVERRIDES.update(saved)


#: the fields of a job's record that say how to run it again (``contsnap resume``)
PLAN_FIELDS = ("script", "module", "argv", "cwd", "hooks", "mark_all", "entry", "path")


def _script_meta(genfunc: Callable[..., Any] | None) -> dict[str, Any]:
    """How to run this job again: its script (or ``-m`` module), arguments and directory.

    A job started from library code (``python -c``, an application calling run()) has
    no script of its own: ``path`` records the ``sys.path`` entry its module was
    imported from, so that ``contsnap resume`` finds it the way this process did.
    """
    plan = _OVERRIDES.get("plan")  # contsnap resume of a job with no script: keep its plan
    if plan is not None:
        return dict(plan)
    script = _OVERRIDES.get("script")  # set by ``contsnap run``
    module = _OVERRIDES.get("module")
    main = sys.modules.get("__main__")
    if script is None and module is None:
        spec = getattr(main, "__spec__", None)
        if spec is not None and getattr(spec, "name", None) not in (None, "__main__"):
            module = spec.name  # python -m pkg.app: run it again as a module
        else:
            script = getattr(main, "__file__", None)
    return {
        "script": os.path.abspath(script) if isinstance(script, str) else None,
        "module": module,
        "argv": list(_OVERRIDES.get("argv", sys.argv[1:])),
        "cwd": os.getcwd(),
        "hooks": list(_OVERRIDES.get("hooks") or ()),
        "mark_all": bool(_OVERRIDES.get("mark_all")),
        "entry": _OVERRIDES.get("entry"),
        "path": _import_root(genfunc),
    }


def _import_root(genfunc: Callable[..., Any] | None) -> str | None:
    """The ``sys.path`` entry that the module of ``genfunc`` was imported from."""
    name = getattr(genfunc, "__module__", None)
    module = sys.modules.get(name) if isinstance(name, str) else None
    origin = getattr(module, "__file__", None)
    if not isinstance(origin, str) or name == "__main__":
        return None
    directory = os.path.dirname(os.path.abspath(origin))
    for _ in range(str(name).count(".")):  # pkg.sub.mod lives under the root's pkg/sub/
        directory = os.path.dirname(directory)
    return directory
