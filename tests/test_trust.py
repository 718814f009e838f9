"""Signed by default: what every entry point does with planted, foreign, edited, cross-purpose
and malformed bytes (docs/format.md, "Threat model").

Each attack's payload, if it were ever unpickled, would create a marker file; the tests run
the entry points in subprocesses under default settings and check that it never exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path
from typing import Any

import pytest
from test_notebook import kernel

import contsnap
from contsnap import _codec, _envelope, _keys, _snapshot
from contsnap._checkpoints._files import CheckpointFiles
from contsnap._durable._run import _job_name
from contsnap._version import __version__

FOREIGN_KEY = b"someone else's key, 32 bytes...."


@contsnap.checkpointable
def counting(limit):
    total = 0
    for i in range(limit):
        total += i
        yield total
    return total


class _Plant:
    """Unpickling this creates the marker file: proof that attacker bytes were run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def planted(marker: Path, *, kind: str, identity: str | None, key: bytes | None) -> bytes:
    """A blob that runs code when unpickled: unsigned, or signed with a key not ours."""
    meta: dict[str, Any] = {"created_at": 1.0, "frames": []}
    if kind == "job":
        meta["job"] = {"name": identity, "steps": 1, "script": str(marker) + ".py"}
    payload = pickle.dumps(_Plant(marker))
    return _envelope.seal(payload, meta, key=key, kind=kind, identity=identity)


def planted_format_1(marker: Path) -> bytes:
    """The original attack: a format-1 unsigned blob written from docs/format.md alone."""
    body = b'{"job":{"name":"__main__:main"}}' + pickle.dumps(_Plant(marker))
    head = struct.pack("<4sBBB", b"CSNP", 1, 0, len(__version__)) + __version__.encode()
    unsigned = head + struct.pack("<IQ", 32, len(body) - 32) + body
    return unsigned + hashlib.blake2b(unsigned, digest_size=16).digest()


SCRIPT = """
import sys
import contsnap

@contsnap.checkpointable
def main():
    total = 0
    for i in range(3):
        total += i
        yield total
    return total

if __name__ == "__main__" and sys.argv[1:] == ["call-run"]:
    print(contsnap.run(main, checkpoint="job.ckpt", progress=False))
"""

ACTORS = """
import asyncio, sys
from contsnap import actors
async def go():
    await actors.System.restore(sys.argv[1])
asyncio.run(go())
"""


def _python(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env
    )


ATTACKS = ["unsigned", "foreign-key", "format-1"]


def _blob_for(attack: str, marker: Path, kind: str, identity: str | None) -> bytes:
    if attack == "format-1":
        return planted_format_1(marker)
    key = FOREIGN_KEY if attack == "foreign-key" else None
    return planted(marker, kind=kind, identity=identity, key=key)


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_planted_checkpoint_never_runs_through_any_entry_point(
    tmp_path: Path, attack: str
) -> None:
    (tmp_path / "script.py").write_text(SCRIPT)
    marker = tmp_path / "PWNED"
    job = _blob_for(attack, marker, "job", "__main__:main")
    (tmp_path / "job.ckpt").write_bytes(job)
    (tmp_path / "job.ckpt").chmod(0o600)
    entry_points = {
        "loads": ["-c", "import contsnap,sys; contsnap.loads(open('job.ckpt','rb').read())"],
        "run": ["script.py", "call-run"],
        "contsnap run": ["-m", "contsnap", "run", "--checkpoint", "job.ckpt", "script.py"],
        "contsnap resume": ["-m", "contsnap", "resume", "job.ckpt"],
        "System.restore": ["-c", ACTORS, "job.ckpt"],
    }
    for name, args in entry_points.items():
        result = _python(*args, cwd=tmp_path)
        assert not marker.exists(), f"{name} ran the planted payload"
        assert result.returncode != 0, f"{name} accepted the planted checkpoint"
        assert "SnapshotSignatureError" in result.stderr or "signed" in result.stderr, (
            name,
            result.stderr,
        )
    session = _blob_for(attack, marker, "notebook", None)
    (tmp_path / "s.snap").write_bytes(session)
    ok, shown = kernel(tmp_path, "%contsnap load s.snap")
    assert ok == [False] and "cannot load s.snap" in shown
    assert not marker.exists(), "%contsnap load ran the planted payload"


def test_generations_beyond_keep_are_never_read(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    for index in (3, 5, 10):
        path = tmp_path / f"job.ckpt.{index}"
        path.write_bytes(planted(marker, kind="job", identity=_job_name(counting), key=None))
    assert contsnap.run(counting, 4, checkpoint=tmp_path / "job.ckpt", progress=False) == 6
    assert not marker.exists()


def _signed_job(path: Path, steps: int, **meta: Any) -> None:
    gen = counting(100)
    for _ in range(steps):
        next(gen)
    job = {"name": _job_name(counting), "steps": steps, "generation": steps, **meta}
    data = _codec.encode(gen, kind="job", identity=_job_name(counting), meta={"job": job})
    CheckpointFiles(path).save(data)


def test_a_checkpoint_others_could_write_is_refused_without_fallback(tmp_path: Path) -> None:
    path = tmp_path / "job.ckpt"
    _signed_job(path, 2)
    _signed_job(path, 3)  # job.ckpt.1 holds an intact older generation
    path.chmod(0o666)
    with pytest.raises(contsnap.CheckpointError, match="can be written by others"):
        contsnap.run(counting, 100, checkpoint=path, progress=False)
    path.chmod(0o600)
    if os.geteuid() == 0:  # only root can give a file away
        os.chown(path, 65534, 65534)
        with pytest.raises(contsnap.CheckpointError, match="belongs to user id 65534"):
            contsnap.run(counting, 100, checkpoint=path, progress=False)


def test_a_damaged_newest_generation_falls_back_to_one_that_verifies_and_says_so(
    tmp_path: Path,
) -> None:
    path = tmp_path / "job.ckpt"
    for steps in (5, 6, 7):
        _signed_job(path, steps)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.warns(contsnap.CheckpointFallbackWarning) as caught:
        result = contsnap.run(counting, 10, checkpoint=path, progress=False)
    assert result == sum(range(100))  # the saved run is counting(100)
    said = [str(w.message) for w in caught]
    assert any("does not match its contents" in s for s in said), said
    assert any("rolled back" in s and "(generation 6)" in s for s in said), said


def test_edited_metadata_in_a_signed_checkpoint_is_refused_before_acting(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w')\n")
    gen = counting(10)
    next(gen)
    job = {"name": "x:main", "steps": 1, "script": str(tmp_path / "good.py"), "cwd": "/"}
    data = _codec.encode(gen, kind="job", identity="x:main", meta={"job": job}, sign=False)
    meta, payload = _envelope.unseal(
        data, ring=_keys.resolve(), kinds=("job",), allow_unsigned=True
    )
    meta["job"]["script"] = str(evil)  # what an attacker wants resume to run
    del meta["kind"], meta["identity"], meta["python"]
    key = _keys.resolve().signing_key
    assert key is not None
    signed = _envelope.seal(payload, meta, key=key, kind="job", identity="x:main")
    # flip one byte of the signed metadata: the signature no longer matches
    edited = bytearray(signed)
    edited[30] ^= 0x01
    (tmp_path / "job.ckpt").write_bytes(bytes(edited))
    result = _python("-m", "contsnap", "resume", "job.ckpt", cwd=tmp_path)
    assert result.returncode == 1 and "does not match its contents" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    # the same edit, unsigned: refused too (no key needed to forge it)
    (tmp_path / "job.ckpt").write_bytes(
        _envelope.seal(payload, meta, key=None, kind="job", identity="x:main")
    )
    result = _python("-m", "contsnap", "resume", "job.ckpt", cwd=tmp_path)
    assert result.returncode == 1 and "unsigned snapshot refused" in result.stderr
    assert not marker.exists()


def test_cross_purpose_replay_of_genuine_blobs_is_refused_everywhere(tmp_path: Path) -> None:
    gen = counting(10)
    next(gen)
    snapshot = contsnap.dumps(gen)
    job = _codec.encode(gen, kind="job", identity=_job_name(counting), meta={"job": {}})
    system = _codec.encode({}, kind="actor-system", identity="shop")
    session = _codec.encode({}, kind="notebook")
    for blob in (job, system, session):
        with pytest.raises(contsnap.SnapshotKindError, match="not a generator snapshot"):
            contsnap.loads(blob)
    import asyncio

    from contsnap import actors

    for blob in (snapshot, job, session):
        with pytest.raises(contsnap.SnapshotKindError, match="not an actor system"):
            asyncio.run(actors.System.restore(blob))
    with pytest.raises(contsnap.SnapshotKindError, match="of 'shop', not of 'other'"):
        asyncio.run(actors.System.restore(system, name="other"))
    for blob in (snapshot, system, session):
        path = tmp_path / "c.ckpt"
        CheckpointFiles(path).save(blob)
        with pytest.raises(contsnap.SnapshotKindError, match="not a durable job"):
            contsnap.run(counting, 10, checkpoint=path, progress=False)


# --- malformed but verified ------------------------------------------------------------


def _tampered(gen: Any, change: Any) -> bytes:
    """A genuinely signed snapshot of ``gen`` whose captured frame ``change`` rewrote
    (capture replaced in every module of contsnap._snapshot that calls it)."""
    original = _snapshot.capture
    callers = [
        module
        for module in vars(_snapshot).values()
        if isinstance(module, types.ModuleType) and getattr(module, "capture", None) is original
    ]
    assert callers

    def capture(target: Any) -> Any:
        state = original(target)
        return change(state) if target is gen else state

    for module in callers:
        module.capture = capture  # type: ignore[attr-defined]
    try:
        return contsnap.dumps(gen)
    finally:
        for module in callers:
            module.capture = original  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s: dataclasses.replace(
                s, values={k: v for k, v in s.values.items() if k != "_cs_iter_1"}
            ),
            r"lacks the local '_cs_iter_1'",
        ),
        (
            lambda s: dataclasses.replace(s, values={**s.values, "_cs_iter_1": 5}),
            r"its local '_cs_iter_1' is a int, not an iterator",
        ),
        (lambda s: dataclasses.replace(s, label=99), r"names resume point 99"),
        (
            lambda s: dataclasses.replace(s, values={**s.values, "intruder": 1}),
            r"locals the function does not have: intruder",
        ),
    ],
    ids=["missing-helper", "wrong-type-helper", "label-out-of-range", "unknown-local"],
)
def test_malformed_but_verified_snapshots_name_what_is_wrong(change: Any, message: str) -> None:
    gen = counting(10)
    next(gen)
    blob = _tampered(gen, change)
    with pytest.raises(contsnap.SnapshotCorruptError, match=message):
        contsnap.loads(blob)


def test_a_malformed_actor_checkpoint_is_named_not_a_key_error() -> None:
    import asyncio

    from contsnap import actors

    whole = {"format": actors._FORMAT, "name": "s", "sequence": 1, "actors": {}}
    blob = _codec.encode(whole, kind="actor-system", identity="s")
    with pytest.raises(contsnap.SnapshotCorruptError, match=r"its 'results' is missing"):
        asyncio.run(actors.System.restore(blob))
    whole.update(results={}, supervisors=[], poisoned={}, actors={"a": {"state": None}})
    blob = _codec.encode(whole, kind="actor-system", identity="s")
    with pytest.raises(contsnap.SnapshotCorruptError, match=r"actor 'a' has no 'frames'"):
        asyncio.run(actors.System.restore(blob))


# --- loads has no side effects ---------------------------------------------------------


def test_loading_an_old_generation_to_look_at_it_leaves_the_output_alone(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    script = tmp_path / "writer.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import contsnap

            @contsnap.checkpointable
            def main():
                with open({str(out)!r}, "a") as f:
                    for i in range(6):
                        f.write(f"{{i}}\\n")
                        yield i
            """
        )
    )
    blob_path = tmp_path / "old.snap"
    blob = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, contsnap, writer; g = writer.main(); next(g); next(g);"
            "sys.stdout.buffer.write(contsnap.dumps(g)); [next(g) for _ in range(3)]; g.close()",
        ],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    blob_path.write_bytes(blob)
    before = out.read_bytes()
    looked = _python(
        "-c",
        "import contsnap, writer; g = contsnap.loads(open('old.snap','rb').read()); "
        "contsnap.detach(g)",
        cwd=tmp_path,
    )
    assert looked.returncode == 0, looked.stderr
    assert out.read_bytes() == before


# --- fuzzing every kind of signed blob ---------------------------------------------------


def _fuzz_worker(blobs: list[tuple[str, bytes]], seed: int, trials: int) -> dict[str, int]:
    import random

    rng = random.Random(seed)
    genuine = {blob for _kind, blob in blobs}
    outcome = {"refused": 0, "accepted": 0, "other": 0, "genuine": 0}
    for _ in range(trials):
        kind, blob = rng.choice(blobs)
        how = rng.randrange(4)
        data = bytearray(blob)
        if how == 0:
            at = rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
        elif how == 1:
            del data[rng.randrange(len(data)) :]
        elif how == 2:
            at = rng.randrange(len(data))
            data[at:at] = rng.randbytes(rng.randrange(1, 9))
        else:
            _other_kind, other = rng.choice(blobs)
            at = rng.randrange(min(len(data), len(other)))
            data = data[:at] + other[at:]
        if bytes(data) in genuine:  # a splice that rebuilt a whole genuine blob
            outcome["genuine"] += 1
            continue
        try:
            _codec.decode(bytes(data), kinds=(kind,))
        except contsnap.CheckpointError:
            outcome["refused"] += 1
        except BaseException:
            outcome["other"] += 1
        else:
            outcome["accepted"] += 1
        try:
            _envelope.read_meta(bytes(data))
        except contsnap.CheckpointError:
            pass
        except BaseException:
            outcome["other"] += 1
    return outcome


def test_fuzzing_every_kind_of_signed_blob_accepts_nothing_and_crashes_nothing() -> None:
    import resource

    gen = counting(50)
    for _ in range(7):
        next(gen)
    blobs = [
        ("snapshot", contsnap.dumps(gen)),
        ("job", _codec.encode(gen, kind="job", identity="m:f", meta={"job": {"steps": 7}})),
        ("actor-system", _codec.encode({"x": [1, 2, 3]}, kind="actor-system", identity="s")),
        ("notebook", _codec.encode({"v": gen}, kind="notebook")),
        ("snapshot", contsnap.dumps(list(range(2000)))),  # compressed
    ]
    children = []
    for seed in range(4):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read)
            try:
                resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
                signal_alarm = __import__("signal").alarm
                signal_alarm(120)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = _fuzz_worker(blobs, seed, 2500)
                os.write(write, json.dumps(result).encode())
            finally:
                os._exit(0)
        os.close(write)
        children.append((pid, read))
    total = {"refused": 0, "accepted": 0, "other": 0, "genuine": 0}
    for pid, read in children:
        with os.fdopen(read, "rb") as pipe:
            report = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        assert report, "a fuzzing child died without reporting"
        for name, count in json.loads(report).items():
            total[name] += count
    assert total["accepted"] == 0 and total["other"] == 0, total
    assert total["refused"] + total["genuine"] == 10_000, total
    assert total["refused"] >= 9_000, total


# --- reading without a key stays safe and bounded --------------------------------------


def _unsigned(meta_json: bytes, *, compress_to: int | None = None) -> bytes:
    """An unsigned format-2 blob with exactly this metadata JSON (read_meta checks no key)."""
    head = struct.pack("<4sBBB", b"CSNP", 2, 0, len(__version__)) + __version__.encode()
    unsigned = head + struct.pack("<IQ", len(meta_json), 0) + meta_json
    return unsigned + hashlib.blake2b(unsigned, digest_size=16).digest()


def _huge_meta_blob() -> bytes:
    """About 1 MB on disk that declares (and would inflate to) 1 GiB of metadata."""
    import zlib

    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunks = [deflater.compress(b'{"a":"')]
    zeros = b"0" * (1 << 20)
    for _ in range(1023):
        chunks.append(deflater.compress(zeros))
    chunks.append(deflater.compress(b"0" * ((1 << 20) - 8) + b'"}'))
    chunks.append(deflater.flush())
    body = b"".join(chunks)
    head = struct.pack("<4sBBB", b"CSNP", 2, 2, len(__version__)) + __version__.encode()
    unsigned = head + struct.pack("<IQ", 1 << 30, 0) + body
    return unsigned + hashlib.blake2b(unsigned, digest_size=16).digest()


def _limited(*args: str, cwd: Path) -> Any:
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (400 << 20, 400 << 20))

    return subprocess.run(
        [sys.executable, "-m", "contsnap", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=limit,
    )


def test_hostile_metadata_is_described_safely_and_boundedly(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    frame = {"qualname": "f\x1b[31mRED", "module": "m", "line": 1, "fingerprint": "x"}
    hostile = {
        "fifo.ckpt": {"frames": [{**frame, "file": str(fifo)}], "created_at": 1},
        "zero.ckpt": {"frames": [{**frame, "file": "/dev/zero"}]},
        "types.ckpt": {"frames": "nope", "created_at": "yesterday", "job": {"steps": "many"}},
        "deep.ckpt": {"frames": [7, None, {"file": 3, "qualname": ["x"]}], "job": []},
    }
    for name, meta in hostile.items():
        (tmp_path / name).write_bytes(_unsigned(json.dumps(meta).encode()))
    (tmp_path / "nan.ckpt").write_bytes(_unsigned(b'{"created_at":NaN,"frames":[]}'))
    (tmp_path / "huge.ckpt").write_bytes(_huge_meta_blob())
    assert (tmp_path / "huge.ckpt").stat().st_size < 2 << 20
    gen = counting(5)
    next(gen)
    (tmp_path / "good.ckpt").write_bytes(contsnap.dumps(gen))
    for name in [*hostile, "nan.ckpt", "huge.ckpt"]:
        for command in ("inspect", "describe"):
            result = _limited(command, name, cwd=tmp_path)
            assert result.returncode in (0, 1), (name, command, result.stderr)
            assert "Traceback" not in result.stderr, (name, command, result.stderr)
            assert "\x1b" not in result.stdout + result.stderr, (name, command)
    listed = _limited("ls", ".", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "good.ckpt" in listed.stdout and "counting line" in listed.stdout
    assert "huge.ckpt" in listed.stdout and "INVALID" in listed.stdout
    assert "\x1b" not in listed.stdout and "f\\x1b[31mRED" in listed.stdout
    shown = _limited("inspect", "nan.ckpt", cwd=tmp_path)
    assert shown.returncode == 1 and "NaN is not JSON" in shown.stderr
    shown = _limited("inspect", "types.ckpt", cwd=tmp_path)
    assert "created   invalid" in shown.stdout and "invalid steps" in shown.stdout


def test_hmac_is_keyed_with_the_key_in_effect_and_never_stored(tmp_path: Path) -> None:
    gen = counting(5)
    next(gen)
    key = _keys.resolve().signing_key
    assert key is not None
    blob = contsnap.dumps(gen)
    assert key not in blob
    assert blob[-32:] == hmac.digest(key, blob[:-32], "sha256")


def test_the_cli_on_randomly_damaged_checkpoints_says_one_line_and_resumes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``contsnap inspect`` (plain and --json), ``ls`` and ``resume`` on 150 damaged copies
    of a job checkpoint (bits flipped, cut, bytes inserted or removed): a description or
    one line of error, exit status 0 or 1, never a traceback, and nothing resumed."""
    import contextlib
    import io
    import random

    from contsnap.__main__ import main as cli

    gen = counting(50)
    for _ in range(7):
        next(gen)
    job = {"name": _job_name(counting), "steps": 7, "generation": 3}
    genuine = _codec.encode(gen, kind="job", identity=job["name"], meta={"job": job})
    rng = random.Random(1207)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    path = tmp_path / "d" / "f.ckpt"
    for trial in range(150):
        data = bytearray(genuine)
        at = rng.randrange(len(data))
        how = trial % 4
        if how == 0:
            data[at] ^= 1 << rng.randrange(8)
        elif how == 1:
            del data[at:]
        elif how == 2:
            data[at:at] = rng.randbytes(rng.randint(1, 30))
        else:
            del data[at : at + rng.randint(1, 40)]
        path.write_bytes(bytes(data))
        path.chmod(0o600)
        for argv in (["inspect", "d/f.ckpt"], ["inspect", "--json", "d/f.ckpt"], ["ls", "d"],
                     ["resume", "d/f.ckpt"]):  # fmt: skip
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli(argv)
            said = f"trial {trial}, {argv}: {code}\n{err.getvalue()[-800:]}"
            assert code in (0, 1) and "Traceback" not in err.getvalue(), said
            if argv[0] == "resume":
                assert code == 1 and "contsnap resume:" in err.getvalue(), said
                assert len(err.getvalue().strip().splitlines()) == 1, said
