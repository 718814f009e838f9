"""Code versioning: changed code refuses old snapshots unless a migration maps the state."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from pathlib import Path
from types import ModuleType

import pytest

import contsnap
from contsnap._marking import _decorator

V1 = """
import contsnap

@contsnap.checkpointable
def process(items):
    total = 0
    for item in items:
        total += item
        yield total
    return total

@contsnap.checkpointable
def outer(items):
    result = yield from process(items)
    yield ("done", result)

def unrelated():
    return 1
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    name = f"mig_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text(V1)
    monkeypatch.syspath_prepend(str(tmp_path))

    def load(source: str | None = None) -> ModuleType:
        if source is not None:
            path.write_text(textwrap.dedent(source))
            importlib.invalidate_caches()
            return importlib.reload(sys.modules[name])
        return importlib.import_module(name)

    yield load
    _decorator.forget_module(name)
    sys.modules.pop(name, None)


def _paused(mod: ModuleType, steps: int = 2) -> bytes:
    gen = mod.outer([1, 2, 3, 4])
    for _ in range(steps):
        next(gen)
    return contsnap.dumps(gen)


def test_comments_formatting_and_unrelated_edits_keep_a_snapshot_valid(module) -> None:
    mod = module()
    data = _paused(mod)
    edited = V1.replace("total = 0", "total = 0  # running sum").replace(
        "return 1", "return 2  # unrelated"
    )
    edited = edited.replace("for item in items:", "for item in (\n        items\n    ):")
    module(edited)
    restored = contsnap.loads(data)
    assert list(restored) == [6, 10, ("done", 10)]


def test_changed_functions_are_all_named(module) -> None:
    mod = module()
    data = _paused(mod)
    module(
        V1.replace("total += item", "total += 2 * item").replace(
            'yield ("done", result)', 'yield ("end", result)'
        )
    )
    with pytest.raises(contsnap.CodeChangedError) as caught:
        contsnap.loads(data)
    message = str(caught.value)
    assert "2 functions" in message and ".process" in message and ".outer" in message
    assert "migration" in message


def test_a_migration_maps_the_old_frame_to_a_point_of_the_new_code(module) -> None:
    mod = module()
    data = _paused(mod)
    old_fingerprint = contsnap.describe(data)["frames"][1]["fingerprint"]
    v2 = V1.replace(
        "        total += item\n        yield total\n",
        "        total += item\n        count += 1\n        yield total\n",
    ).replace("    total = 0\n", "    total = 0\n    count = 0\n")
    mod = module(v2)
    seen = []

    @contsnap.migration(mod.process, from_fingerprint=old_fingerprint[:8])
    def add_count(old: contsnap.OldFrame) -> contsnap.Resume:
        seen.append((old.line, dict(old.locals)))
        return contsnap.Resume(line=old.line + 2, locals={**old.locals, "count": 2})

    restored = contsnap.loads(data)
    assert seen[0][0] == 9  # where V1 paused: `yield total`
    assert seen[0][1]["total"] == 3 and seen[0][1]["item"] == 2
    assert list(restored) == [6, 10, ("done", 10)]


def test_a_migration_to_a_line_without_a_suspension_is_refused(module) -> None:
    mod = module()
    data = _paused(mod)
    mod = module(V1.replace("total = 0", "total = 100"))

    @contsnap.migration(mod.process)
    def nowhere(old: contsnap.OldFrame) -> contsnap.Resume:
        return contsnap.Resume(line=1, locals=old.locals)

    with pytest.raises(contsnap.CodeChangedError, match=r"not one suspension point.*lines 9"):
        contsnap.loads(data)


def test_a_migration_that_names_unknown_locals_is_refused(module) -> None:
    mod = module()
    data = _paused(mod)
    mod = module(V1.replace("total = 0", "total = 100"))

    @contsnap.migration(f"{mod.__name__}:process")
    def extra(old: contsnap.OldFrame) -> contsnap.Resume:
        return contsnap.Resume(line=old.line or 0, locals={**old.locals, "ghost": 1})

    with pytest.raises(contsnap.CodeChangedError, match="ghost"):
        contsnap.loads(data)


def test_migration_targets_are_checked() -> None:
    with pytest.raises(ValueError, match="module:qualname"):
        contsnap.migration("no-colon")
    with pytest.raises(TypeError, match="checkpointable"):
        contsnap.migration(len)
