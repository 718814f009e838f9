"""The public API of the sync core, as a user meets it."""

from __future__ import annotations

import copy
import inspect
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import contsnap


@contsnap.checkpointable
def running_total(limit):
    total = 0
    for i in range(limit):
        total += yield total
    return total


def test_issue_example() -> None:
    g = running_total(10)
    next(g)
    g.send(5)
    blob = contsnap.dumps(g)
    assert isinstance(blob, bytes)
    h = contsnap.loads(blob)
    assert h.send(1) == g.send(1) == 6
    copies = [pickle.loads(pickle.dumps(g)), copy.deepcopy(g), contsnap.fork(g)]
    for c in copies:
        assert inspect.isgenerator(c)
        assert c.send(2) == 8
    assert g.send(3) == 9  # the copies were independent
    assert [c.send(0) for c in copies] == [8, 8, 8]


def test_generators_stay_native() -> None:
    g = running_total(3)
    assert inspect.isgenerator(g)
    assert type(g) is type(x for x in ())
    assert g.__name__ == "running_total"
    assert g.__qualname__ == "running_total"
    assert inspect.getgeneratorstate(g) == inspect.GEN_CREATED
    next(g)
    h = contsnap.loads(contsnap.dumps(g))
    assert inspect.isgenerator(h)
    assert h.__qualname__ == "running_total"
    assert inspect.getgeneratorstate(h) == inspect.GEN_SUSPENDED
    assert not h.gi_running
    assert h.send(1) == 1
    assert h.send(1) == 2
    with pytest.raises(StopIteration) as stop:
        h.send(1)
    assert stop.value.value == 3


def test_decorated_function_keeps_identity_and_signature() -> None:
    assert running_total.__name__ == "running_total"
    assert running_total.__module__ == __name__
    assert str(inspect.signature(running_total)) == "(limit)"
    assert "total += yield total" in inspect.getsource(running_total)


def test_not_started_and_finished_generators() -> None:
    fresh = running_total(2)
    restored = contsnap.loads(contsnap.dumps(fresh))
    assert inspect.getgeneratorstate(restored) == inspect.GEN_CREATED
    assert [next(restored), restored.send(4)] == [0, 4]
    done = running_total(1)
    assert next(done) == 0
    with pytest.raises(StopIteration):
        done.send(1)
    restored = contsnap.loads(contsnap.dumps(done))
    assert inspect.getgeneratorstate(restored) == inspect.GEN_CLOSED
    assert list(restored) == []
    # a finished restored generator can be snapshotted again
    assert list(contsnap.loads(contsnap.dumps(restored))) == []


def test_describe_reports_frames_without_unpickling() -> None:
    g = running_total(10)
    next(g)
    meta = contsnap.describe(contsnap.dumps(g))
    (frame,) = meta["frames"]
    assert frame["qualname"] == "running_total"
    assert frame["file"] == __file__
    assert frame["line"] == running_total.__code__.co_firstlineno + 4
    assert frame["state"] == "suspended"
    # format 3 names each function once, in a table the frames refer to
    assert meta["functions"] == [[__name__, "running_total", frame["fingerprint"], __file__]]
    assert len(frame["fingerprint"]) == 16
    assert meta["contsnap_version"] == contsnap.__version__
    assert meta["signed"] is True  # signed by default, with the per-user key
    assert re.fullmatch(r"[0-9a-f]{16}", meta["key_id"])
    assert meta["kind"] == "snapshot"
    assert meta["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert meta["created_at"] > 1_600_000_000


def test_signing_with_explicit_key() -> None:
    g = running_total(5)
    next(g)
    signed = contsnap.dumps(g, key=b"secret")
    assert contsnap.describe(signed)["signed"] is True
    assert contsnap.loads(signed, key=b"secret").send(1) == 1
    with pytest.raises(contsnap.SnapshotSignatureError):
        contsnap.loads(signed, key=b"other")
    with pytest.raises(contsnap.SnapshotSignatureError, match="not among the keys in effect"):
        contsnap.loads(signed)  # the per-user key is another key
    with pytest.raises(contsnap.SnapshotSignatureError, match="unsigned snapshot refused"):
        contsnap.loads(contsnap.dumps(g, sign=False), key=b"secret")
    unsigned = contsnap.dumps(g, sign=False)
    assert contsnap.describe(unsigned)["signed"] is False
    assert contsnap.loads(unsigned, allow_unsigned=True).send(1) == 1


def test_configured_key_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    g = running_total(5)
    next(g)
    unsigned = contsnap.dumps(g)
    contsnap.configure(key="k1")
    try:
        signed = contsnap.dumps(g)
        assert contsnap.describe(signed)["signed"] is True
        assert contsnap.loads(signed).send(2) == 2
        with pytest.raises(contsnap.SnapshotSignatureError):
            contsnap.loads(unsigned)
    finally:
        contsnap.configure(key=None)
    monkeypatch.setenv("CONTSNAP_KEY", "k1")
    assert contsnap.loads(signed).send(2) == 2
    with pytest.raises(contsnap.SnapshotSignatureError):
        contsnap.loads(unsigned)


class Account:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0
        self.job = None

    @contsnap.checkpointable
    def deposits(self, step):
        while True:
            amount = yield self.balance
            self.balance += amount * step

    @classmethod
    @contsnap.checkpointable
    def opened(cls, names):
        for name in names:
            yield cls(name)

    @contsnap.checkpointable
    @staticmethod
    def countdown(n):
        while n:
            yield n
            n -= 1


class SavingsAccount(Account):
    @contsnap.checkpointable
    def deposits(self, step):
        inner = super().deposits(step * 2)
        total = yield next(inner)
        while True:
            total = yield inner.send(total)


def test_methods_bind_self_and_restore_it() -> None:
    account = Account("ann")
    account.job = account.deposits(1)
    next(account.job)
    account.job.send(10)
    copy_of_account = pickle.loads(pickle.dumps(account))
    assert copy_of_account.job.send(5) == 15
    assert copy_of_account.balance == 15
    assert account.balance == 10  # independent copy
    assert account.job.send(1) == 11


def test_classmethod_and_staticmethod() -> None:
    opened = Account.opened(["a", "b"])
    assert next(opened).owner == "a"
    assert contsnap.loads(contsnap.dumps(opened)).__next__().owner == "b"
    count = Account.countdown(3)
    assert next(count) == 3
    assert list(contsnap.loads(contsnap.dumps(count))) == [2, 1]


def test_super_inside_a_resumed_method() -> None:
    account = SavingsAccount("bo")
    job = account.deposits(1)
    next(job)
    job.send(1)
    restored = contsnap.fork(job)
    assert restored.send(1) == job.send(1)


def make_counter(start):
    @contsnap.checkpointable
    def counter(step):
        value = start
        while True:
            received = yield value
            value += step + (received or 0)

    return counter


def test_nested_function_restores_by_value_in_a_fresh_process(tmp_path: Path) -> None:
    g = make_counter(100)(5)
    next(g)
    g.send(1)
    path = tmp_path / "nested.ckpt"
    path.write_bytes(contsnap.dumps(g))
    program = textwrap.dedent(
        f"""
        import contsnap
        g = contsnap.loads(open({str(path)!r}, 'rb').read())
        print(g.send(0), g.send(0))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["111", "116"]


def test_main_script_restores_in_another_process(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, contsnap

            @contsnap.checkpointable
            def squares(n):
                for i in range(n):
                    yield i * i

            if __name__ == "__main__":
                g = squares(6)
                next(g); next(g)
                sys.stdout.buffer.write(contsnap.dumps(g))
            """
        )
    )
    blob = subprocess.run([sys.executable, str(script)], capture_output=True, check=True).stdout
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, contsnap; print(list(contsnap.loads(sys.stdin.buffer.read())))",
        ],
        input=blob,
        capture_output=True,
        check=True,
        env=env,
    )
    assert out.stdout.decode().strip() == "[4, 9, 16, 25]"


def test_function_by_value_makes_checkpointable_generators_in_another_process(
    tmp_path: Path,
) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, contsnap

            @contsnap.checkpointable
            def squares(n):
                for i in range(n):
                    yield i * i

            if __name__ == "__main__":
                sys.stdout.buffer.write(contsnap.dumps({"squares": squares}))
            """
        )
    )
    blob = subprocess.run([sys.executable, str(script)], capture_output=True, check=True).stdout
    program = (
        "import sys, contsnap\n"
        "squares = contsnap.loads(sys.stdin.buffer.read())['squares']\n"
        "g = squares(5); next(g); next(g)\n"
        "print(list(contsnap.loads(contsnap.dumps(g))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], input=blob, capture_output=True, check=True
    )
    assert out.stdout.decode().strip() == "[4, 9, 16]"


def test_decorator_refuses_plain_functions() -> None:
    def plain():
        return 1

    with pytest.raises(TypeError, match="plain function"):
        contsnap.checkpointable(plain)
    with pytest.raises(TypeError, match="generator function"):
        contsnap.checkpointable(42)


def test_decorator_needs_source() -> None:
    namespace: dict[str, object] = {}
    exec("def made_by_exec():\n    yield 1\n", namespace)
    with pytest.raises(contsnap.NotCheckpointableError, match="cannot read the source"):
        contsnap.checkpointable(namespace["made_by_exec"])


def test_decorating_twice_is_harmless() -> None:
    assert contsnap.checkpointable(running_total) is running_total


@contsnap.checkpointable
def _counting_to(limit):
    for i in range(limit):
        yield i


def test_a_snapshot_of_an_object_holding_a_generator_describes_its_frames() -> None:
    # (what migrations read their old line from; a web page holds its handler this way)
    gen = _counting_to(5)
    next(gen)
    frames = contsnap.describe(contsnap.dumps({"held": [gen]}))["frames"]
    assert [(f["qualname"], f["line"]) for f in frames] == [("_counting_to", gen.gi_frame.f_lineno)]
