"""Every error the core raises: its class, and a message that says what, where and what to do."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import contsnap


@contsnap.checkpointable
def holds_a_lock():
    counter = 1
    guard = threading.Lock()
    yield counter
    yield guard.locked()


def plain_numbers():
    yield 1
    yield 2


@contsnap.checkpointable
def delegates_to_unmarked():
    yield from plain_numbers()


@contsnap.checkpointable
def keeps_an_unmarked_generator():
    helper = plain_numbers()
    yield next(helper)


@contsnap.checkpointable
def snapshots_itself(box):
    yield contsnap.dumps(box[0])


def test_unserialisable_local_names_variable_type_function_and_line() -> None:
    g = holds_a_lock()
    next(g)
    with pytest.raises(contsnap.NotCheckpointableError) as info:
        contsnap.dumps(g)
    message = str(info.value)
    line = holds_a_lock.__code__.co_firstlineno + 4
    assert "holds_a_lock" in message
    assert f"{__file__}:{line}" in message
    assert "local variable 'guard'" in message
    assert "_thread.lock" in message
    assert "resource handler" in message
    # the advice names the type in a way that imports on every version (no _thread.lock
    # attribute exists on 3.10-3.12)
    call = "contsnap.register_resource(type(threading.Lock()), save, restore)"
    assert call in message
    spelled = call.removeprefix("contsnap.register_resource(").split(",")[0]
    assert eval(spelled, {"threading": threading}) is type(g.gi_frame.f_locals["guard"])


def test_unmarked_delegate_is_named() -> None:
    g = delegates_to_unmarked()
    next(g)
    with pytest.raises(contsnap.NotCheckpointableError) as info:
        contsnap.dumps(g)
    assert str(info.value).startswith(
        f"cannot snapshot delegates_to_unmarked at {__file__}:"
        f"{delegates_to_unmarked.__code__.co_firstlineno + 2}: it delegates (yield from) to "
        f"the generator plain_numbers ({__file__}:"
    )
    assert str(info.value).endswith(
        "which is not checkpointable; mark its function with @contsnap.checkpointable"
    )
    with pytest.raises(contsnap.NotCheckpointableError, match="plain_numbers"):
        contsnap.detach(g)


def test_unmarked_generator_in_a_local_is_named() -> None:
    g = keeps_an_unmarked_generator()
    next(g)
    with pytest.raises(
        contsnap.NotCheckpointableError, match="local variable 'helper' holds the generator plain"
    ):
        contsnap.dumps(g)


def test_running_generator_cannot_snapshot_itself() -> None:
    box: list[object] = []
    g = snapshots_itself(box)
    box.append(g)
    with pytest.raises(contsnap.NotCheckpointableError, match="is running"):
        next(g)


def test_plain_generator_is_refused() -> None:
    with pytest.raises(contsnap.NotCheckpointableError, match="mark its function"):
        contsnap.dumps(plain_numbers())
    with pytest.raises(contsnap.NotCheckpointableError, match="mark its function"):
        contsnap.fork(plain_numbers())


@pytest.mark.parametrize("name", ["_cs_total", "__contsnap_rt__", "__contsnap_live__"])
def test_names_of_the_generated_code_are_refused_in_user_code(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"reserved_{name.strip('_')}"
    (tmp_path / f"{module}.py").write_text(f"def gen():\n    {name} = 1\n    yield {name}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    gen = __import__(module).gen
    del sys.modules[module]
    with pytest.raises(contsnap.NotCheckpointableError, match=f"{name!r} is reserved"):
        contsnap.checkpointable(gen)


def _module(tmp_path: Path, body: str) -> None:
    (tmp_path / "jobmod.py").write_text(textwrap.dedent(body))


def _run(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )


VERSION_1 = """
    import contsnap

    @contsnap.checkpointable
    def job(n):
        for i in range(n):
            yield i * 10
"""


def test_code_changed_error_and_harmless_edits(tmp_path: Path) -> None:
    _module(tmp_path, VERSION_1)
    saved = _run(
        tmp_path,
        """
        import contsnap, jobmod
        g = jobmod.job(5); next(g)
        open("job.ckpt", "wb").write(contsnap.dumps(g))
        """,
    )
    assert saved.returncode == 0, saved.stderr
    resume = """
        import contsnap
        g = contsnap.loads(open("job.ckpt", "rb").read())
        print(next(g))
    """
    # comments, blank lines and formatting do not count
    _module(
        tmp_path,
        VERSION_1.replace("for i", "# a comment\n\n        for i").replace("i * 10", "i*10"),
    )
    ok = _run(tmp_path, resume)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "10"
    # a changed constant does
    _module(tmp_path, VERSION_1.replace("i * 10", "i * 11"))
    changed = _run(tmp_path, resume)
    assert changed.returncode != 0
    assert "contsnap.CodeChangedError: jobmod.job" in changed.stderr
    assert "changed since the snapshot" in changed.stderr
    # and so does a function that is gone
    _module(tmp_path, "import contsnap\n")
    gone = _run(tmp_path, resume)
    assert "CodeChangedError: jobmod.job is no longer a @checkpointable" in gone.stderr


@contsnap.checkpointable
def many_locals(n):
    words = ["alpha", "beta", "gamma"]
    table = {w: len(w) for w in words}
    for i in range(n):
        received = yield (i, table)
        words.append(str(received))


def _snapshots() -> list[bytes]:
    out = []
    for steps in range(3):
        g = many_locals(5)
        for _ in range(steps + 1):
            next(g)
        out.append(contsnap.dumps(g))
        out.append(contsnap.dumps(g, key=b"k"))
    return out


SNAPSHOTS = _snapshots()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(0, len(SNAPSHOTS) - 1),
    position=st.integers(0, 10_000),
    flip=st.integers(1, 255),
    mode=st.sampled_from(["flip", "truncate", "extend"]),
)
def test_damaged_snapshots_only_raise_checkpoint_errors(
    index: int, position: int, flip: int, mode: str
) -> None:
    blob = bytearray(SNAPSHOTS[index])
    position %= len(blob)
    if mode == "flip":
        blob[position] ^= flip
    elif mode == "truncate":
        del blob[position:]
    else:
        blob += bytes([flip])
    key = b"k" if index % 2 else None
    with pytest.raises(contsnap.CheckpointError):
        contsnap.loads(bytes(blob), key=key)


def test_undamaged_snapshots_load() -> None:
    for index, blob in enumerate(SNAPSHOTS):
        g = contsnap.loads(blob, key=b"k" if index % 2 else None)
        assert g.send("x")[1] == {"alpha": 5, "beta": 4, "gamma": 5}


@contsnap.checkpointable
def fails_later(n):
    total = 0
    for i in range(n):
        total += yield i
        if total > 3:
            raise ValueError(f"too much: {total}")


def _raising_lines(gen: object) -> list[tuple[str, int]]:
    try:
        next(gen)  # type: ignore[call-overload]
        for value in (1, 5):
            gen.send(value)  # type: ignore[attr-defined]
    except ValueError as exc:
        return [(f.filename, f.lineno) for f in traceback.extract_tb(exc.__traceback__)][1:]
    raise AssertionError("no error")


def test_tracebacks_point_at_the_original_file_and_line() -> None:
    native = _raising_lines(fails_later.__wrapped__(5))  # type: ignore[attr-defined]
    marked = _raising_lines(fails_later(5))
    assert marked == native == [(__file__, fails_later.__code__.co_firstlineno + 6)]
    g = fails_later(5)
    next(g)
    g.send(1)
    restored = contsnap.loads(contsnap.dumps(g))
    with pytest.raises(ValueError) as info:
        restored.send(5)
    frames = traceback.extract_tb(info.value.__traceback__)
    assert (frames[-1].filename, frames[-1].lineno) == native[0]
    assert frames[-1].line == 'raise ValueError(f"too much: {total}")'


@contsnap.checkpointable
def reraises_after_yield():
    try:
        raise KeyError("inner")
    except KeyError as exc:
        note = yield str(exc)
        exc.add_note(note) if hasattr(exc, "add_note") else None
        raise


def test_resumed_handler_keeps_exc_info_and_traceback() -> None:
    def lines(gen: object) -> list[int]:
        next(gen)  # type: ignore[call-overload]
        with pytest.raises(KeyError) as info:
            gen.send("n")  # type: ignore[attr-defined]
        return [f.lineno for f in traceback.extract_tb(info.value.__traceback__)][1:]

    native = lines(reraises_after_yield.__wrapped__())  # type: ignore[attr-defined]
    g = reraises_after_yield()
    next(g)
    forked = contsnap.fork(g)
    restored = contsnap.loads(contsnap.dumps(g))
    first = reraises_after_yield.__code__.co_firstlineno
    for copy_of_g in (forked, restored):
        with pytest.raises(KeyError) as info:
            copy_of_g.send("n")
        assert info.value.args == ("inner",)
        # pickled exceptions lose their traceback; it still leads into the function
        last = traceback.extract_tb(info.value.__traceback__)[-1]
        assert last.filename == __file__
        assert first < last.lineno <= first + 7
    with pytest.raises(KeyError) as info:
        g.send("n")
    assert [f.lineno for f in traceback.extract_tb(info.value.__traceback__)][1:] == native


def test_checkpointable_above_a_functools_wraps_wrapper_says_where_to_put_it(
    tmp_path: Path,
) -> None:
    module = tmp_path / "wrapped_mod.py"
    module.write_text(
        "import functools\n\n"
        "def deco(f):\n"
        "    @functools.wraps(f)\n"
        "    def wrapper(*args):\n"
        "        yield from f(*args)\n"
        "    return wrapper\n\n"
        "@deco\n"
        "def steps():\n"
        "    yield 1\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import wrapped_mod

        with pytest.raises(contsnap.NotCheckpointableError) as caught:
            contsnap.checkpointable(wrapped_mod.steps)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("wrapped_mod", None)
    message = str(caught.value)
    assert "a wrapper made by functools.wraps" in message
    assert "put @checkpointable below that decorator" in message
    assert "was the file edited" not in message


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in 3.11")
def test_pausing_inside_asyncio_timeout_names_the_async_with_not_a_helper() -> None:
    import asyncio

    @contsnap.checkpointable
    async def worker():
        async with asyncio.timeout(10):  # type: ignore[attr-defined]
            for _ in range(100):
                await contsnap.checkpoint()
                await asyncio.sleep(0.01)

    async def main() -> str:
        task = asyncio.create_task(worker())
        await asyncio.sleep(0.005)
        try:
            await contsnap.pause(task, timeout=5)
        except contsnap.NotCheckpointableError as exc:
            return str(exc)
        finally:
            task.cancel()
        return "paused"

    message = asyncio.run(main())
    assert "the async context manager of an async with statement" in message
    assert "_cs_amgr" not in message
