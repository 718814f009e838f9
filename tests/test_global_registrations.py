"""``import contsnap`` changes nothing a user would notice (issue 17): pickle and
copy.deepcopy of objects outside a snapshot behave exactly as without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PROBE = textwrap.dedent(
    """
    import contextvars, copy, itertools, json, pickle, types, weakref

    def outcome(action, obj):
        try:
            result = action(obj)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        if isinstance(result, bytes):
            return "bytes " + result.hex()
        return f"same={result is obj} type={type(result).__name__}"

    def closure():
        value = 1
        def inner():
            return value
        return inner

    class Target:
        pass

    def local_class():
        class Local:
            pass
        return Local

    target = Target()
    data = {"a": 1, "b": 2}
    items = [1, 2]
    OBJECTS = {
        "memoryview of bytes": memoryview(b"xyz"),
        "memoryview of bytearray": memoryview(bytearray(b"xyz"))[1:],
        "dict keys": data.keys(),
        "dict items iterator": iter(data.items()),
        "dict values reversed": reversed(data.values()),
        "set iterator": iter({1, 2, 3}),
        "weak reference": weakref.ref(target),
        "context variable": contextvars.ContextVar("probe"),
        "cell": closure().__closure__[0],
        "closure": closure(),
        "local class": local_class(),
        "module": json,
        "bound builtin method": items.append,
        "method wrapper": items.__len__,
        "groupby": itertools.groupby([1, 1, 2]),
    }
    for name, obj in OBJECTS.items():
        print(name, "| pickle:", outcome(lambda o: pickle.dumps(o, 4), obj))
        print(name, "| deepcopy:", outcome(copy.deepcopy, obj))
        print(name, "| copy:", outcome(copy.copy, obj))
    """
)


def _run(program: str) -> str:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", program],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PYTHONHASHSEED": "0"},
        cwd=root,  # the contsnap of this checkout, whatever else is installed
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_pickle_and_deepcopy_behave_as_without_contsnap() -> None:
    without = _run(PROBE)
    with_contsnap = _run("import contsnap\n" + PROBE)
    assert with_contsnap.splitlines() == without.splitlines()
    assert "memoryview of bytes | pickle: TypeError" in without  # the probe probes
    assert "contsnap" not in without
