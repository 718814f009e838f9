"""Resources: open files, random generators and user handlers in snapshots; refusals."""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import contsnap

LINES = [f"line {i}: {'x' * (i % 7)}" for i in range(40)]


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "input.txt"
    path.write_text("".join(line + "\n" for line in LINES))
    return path


@contsnap.checkpointable
def read_lines(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield line.rstrip("\n")


@contsnap.checkpointable
def numbered_lines(path):
    with open(path) as f:
        for number, line in enumerate(f, 1):
            yield number, line.rstrip("\n"), f.tell()


@contsnap.checkpointable
def positions(path):
    with open(path) as f:
        for line in f:
            yield line, f.tell()
        for number, line in enumerate(f, 1):
            yield number


@contsnap.checkpointable
def read_chunks(path, size):
    with open(path, "rb") as f:
        while True:
            chunk = f.read(size)
            if not chunk:
                break
            yield chunk


@contsnap.checkpointable
def write_squares(path, n, mode="w"):
    with open(path, mode) as out:
        for i in range(n):
            out.write(f"{i * i}\n")
            yield i


@contsnap.checkpointable
def hold(value):
    kept = value
    yield "holding"
    yield kept


def _advance(g: Iterator[Any], steps: int) -> list[Any]:
    return [next(g) for _ in range(steps)]


# ---------------------------------------------------------------- reading


def test_tell_works_inside_a_for_loop_over_a_text_file(tmp_path: Path) -> None:
    path = tmp_path / "input.txt"
    path.write_text("a\nbb\nccc\n")
    assert list(positions(path)) == [("a\n", 2), ("bb\n", 5), ("ccc\n", 9)]


def test_text_file_for_loop_resumes_at_the_next_line(text_file: Path) -> None:
    g = read_lines(text_file)
    assert _advance(g, 5) == LINES[:5]
    blob = contsnap.dumps(g)
    restored = contsnap.loads(blob)
    assert list(restored) == LINES[5:]
    assert list(g) == LINES[5:]  # the original was not disturbed by the snapshot
    again = contsnap.loads(blob)  # a snapshot can be loaded more than once
    assert next(again) == LINES[5]


def test_enumerate_over_a_text_file_keeps_tell_working(text_file: Path) -> None:
    g = numbered_lines(text_file)
    first = _advance(g, 3)
    assert [line for _n, line, _pos in first] == LINES[:3]
    assert first[-1][2] == sum(len(line) + 1 for line in LINES[:3])
    restored = contsnap.loads(contsnap.dumps(g))
    rest = list(restored)
    assert rest == list(g)
    assert rest[0][:2] == (4, LINES[3])


def test_text_file_resumes_in_a_fresh_process(text_file: Path, tmp_path: Path) -> None:
    g = read_lines(text_file)
    _advance(g, 7)
    snapshot = tmp_path / "reader.ckpt"
    snapshot.write_bytes(contsnap.dumps(g))
    program = textwrap.dedent(
        f"""
        import contsnap
        g = contsnap.loads(open({str(snapshot)!r}, "rb").read())
        for line in g:
            print(line)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.splitlines() == LINES[7:]


def test_binary_chunks_resume_at_the_next_chunk(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    data = bytes(range(256)) * 5
    path.write_bytes(data)
    g = read_chunks(path, 100)
    head = _advance(g, 4)
    restored = contsnap.loads(contsnap.dumps(g))
    assert b"".join(head) + b"".join(restored) == data
    assert len(list(g)) == len(range(400, len(data), 100))


def test_unbuffered_and_read_write_files_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"0123456789")
    with open(path, "rb", buffering=0) as raw, open(path, "r+b") as both:
        raw.read(3)
        both.read(6)
        g = hold((raw, both))
        next(g)
        new_raw, new_both = contsnap.loads(contsnap.dumps(g)).send(None)
        with new_raw, new_both:
            assert type(new_raw) is type(raw) and type(new_both) is type(both)
            assert new_raw.read() == b"3456789"
            assert new_both.read() == b"6789"
            assert new_both.mode == "rb+"


def test_a_changed_input_file_is_refused(text_file: Path) -> None:
    g = read_lines(text_file)
    _advance(g, 2)
    blob = contsnap.dumps(g)
    with open(text_file, "a") as f:
        f.write("one more line\n")
    with pytest.raises(contsnap.ResourceChangedError, match="has changed since") as info:
        contsnap.loads(blob)
    assert str(text_file) in str(info.value)


def test_a_rewrite_of_the_same_size_is_refused(text_file: Path) -> None:
    g = read_lines(text_file)
    next(g)
    blob = contsnap.dumps(g)
    stat = text_file.stat()
    text_file.write_text(text_file.read_text().upper())
    os.utime(text_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(contsnap.ResourceChangedError, match="modified"):
        contsnap.loads(blob)


def test_a_deleted_input_file_is_refused(text_file: Path) -> None:
    g = read_lines(text_file)
    next(g)
    blob = contsnap.dumps(g)
    text_file.unlink()
    with pytest.raises(contsnap.ResourceChangedError, match="cannot reopen"):
        contsnap.loads(blob)


@pytest.mark.parametrize(
    ("newline", "second"),
    [
        ("", "na\xefve\r"),
        ("\r\n", "na\xefve\rtwo\r\n"),
        (None, "na\xefve\n"),
        ("\r", "\nna\xefve\r"),
    ],
)
def test_text_options_are_kept(tmp_path: Path, newline: str | None, second: str) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\xe9\r\nna\xefve\rtwo\r\n".encode("latin-1"))
    with open(path, encoding="latin-1", errors="strict", newline=newline) as f:
        f.readline()
        g = hold(f)
        next(g)
        restored = contsnap.loads(contsnap.dumps(g)).send(None)
    with restored:
        assert (restored.encoding, restored.errors) == ("latin-1", "strict")
        assert restored.readline() == second


def test_closed_file_restores_closed(text_file: Path) -> None:
    with open(text_file) as f:
        pass
    g = hold(f)
    next(g)
    restored = contsnap.loads(contsnap.dumps(g)).send(None)
    assert restored.closed
    assert restored.name == str(text_file)
    with pytest.raises(ValueError, match="closed file"):
        restored.read()


def test_std_streams_restore_as_the_live_streams() -> None:
    g = hold((sys.stdout, sys.stderr, sys.__stdout__))
    next(g)
    assert contsnap.loads(contsnap.dumps(g)).send(None) == (
        sys.stdout,
        sys.stderr,
        sys.__stdout__,
    )


def test_a_pipe_is_refused_with_the_variable_named() -> None:
    read_end, write_end = os.pipe()
    with open(read_end, "rb") as pipe, open(write_end, "wb"):
        g = hold(pipe)
        next(g)
        with pytest.raises(contsnap.NotCheckpointableError) as info:
            contsnap.dumps(g)
    message = str(info.value)
    assert "local variable 'kept'" in message or "local variable 'value'" in message
    assert "BufferedReader" in message
    assert "not seekable" in message


def test_a_file_iterated_with_next_is_refused_clearly(text_file: Path) -> None:
    with open(text_file) as f:
        next(f)
        g = hold(f)
        next(g)
        with pytest.raises(contsnap.NotCheckpointableError, match="readline"):
            contsnap.dumps(g)


# ---------------------------------------------------------------- writing


def _uninterrupted(path: Path, n: int, mode: str = "w") -> bytes:
    list(write_squares(path, n, mode))
    return path.read_bytes()


@pytest.mark.parametrize("mode", ["w", "a", "w+", "x"])
def test_a_written_file_is_truncated_back_to_the_checkpoint(tmp_path: Path, mode: str) -> None:
    expected = _uninterrupted(tmp_path / "expected.txt", 12, mode)
    path = tmp_path / "out.txt"
    g = write_squares(path, 12, mode)
    _advance(g, 5)
    blob = contsnap.dumps(g)
    _advance(g, 3)  # the run goes on writing after the checkpoint...
    contsnap.detach(g)  # ...and dies (no with-exit); what it wrote reaches the file
    del g
    written = path.read_bytes()
    assert len(written) > len(_uninterrupted(tmp_path / "part.txt", 5))
    looked_at = contsnap.loads(blob)  # loading only to look: the file is not touched
    assert path.read_bytes() == written
    contsnap.detach(looked_at)
    restored = contsnap.loads(blob, truncate_outputs=True)
    assert list(restored) == list(range(5, 12))
    assert path.read_bytes() == expected


def test_a_written_file_that_shrank_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    g = write_squares(path, 10)
    _advance(g, 6)
    blob = contsnap.dumps(g)
    contsnap.detach(g)
    del g
    path.write_text("")
    with pytest.raises(contsnap.ResourceChangedError, match="shorter"):
        contsnap.loads(blob)


def test_a_writer_restores_in_a_fresh_process(tmp_path: Path) -> None:
    expected = _uninterrupted(tmp_path / "expected.txt", 9)
    path = tmp_path / "out.txt"
    g = write_squares(path, 9)
    _advance(g, 4)
    snapshot = tmp_path / "writer.ckpt"
    snapshot.write_bytes(contsnap.dumps(g))
    _advance(g, 2)
    contsnap.detach(g)
    del g
    program = f"import contsnap; list(contsnap.loads(open({str(snapshot)!r}, 'rb').read()))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", program], check=True, env=env)
    assert path.read_bytes() == expected


# ---------------------------------------------------------------- random


class TaggedRandom(random.Random):
    def __new__(cls, seed: int | None = None, tag: str = "") -> TaggedRandom:
        return super().__new__(cls, seed)  # 3.10's Random.__new__ takes one argument

    def __init__(self, seed: int, tag: str) -> None:
        super().__init__(seed)
        self.tag = tag


@contsnap.checkpointable
def dice(rng):
    while True:
        yield rng.random(), rng.gauss(0, 1), rng.randrange(1_000_000)


@pytest.mark.parametrize("make", [lambda: random.Random(7), lambda: TaggedRandom(7, "t")])
def test_random_state_continues_exactly(make: Any) -> None:
    g = dice(make())
    _advance(g, 3)
    next(g)[1]  # leaves a cached second gaussian in the generator's state
    restored = contsnap.loads(contsnap.dumps(g))
    assert _advance(restored, 20) == _advance(g, 20)


def test_random_subclass_keeps_its_attributes() -> None:
    g = hold(TaggedRandom(3, "mine"))
    next(g)
    rng = contsnap.loads(contsnap.dumps(g)).send(None)
    assert type(rng) is TaggedRandom and rng.tag == "mine"


def test_system_random_restores_as_a_system_random() -> None:
    g = hold(random.SystemRandom())
    next(g)
    assert type(contsnap.loads(contsnap.dumps(g)).send(None)) is random.SystemRandom


# ---------------------------------------------------------------- user handlers


class Client:
    """A small client that owns a socket: reconnecting is what restoring means."""

    connections = 0

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        Client.connections += 1

    def close(self) -> None:
        self.sock.close()


@contsnap.checkpointable
def session(address):
    client = Client(address)
    try:
        yield client.address
        yield client
    finally:
        client.close()


def test_an_unregistered_client_is_refused_naming_variable_and_socket() -> None:
    g = session("db.example:5432")
    next(g)
    with pytest.raises(contsnap.NotCheckpointableError) as info:
        contsnap.dumps(g)
    message = str(info.value)
    assert "local variable 'client'" in message
    assert f"{__name__}.Client object that refers to a socket.socket object" in message
    assert "contsnap.register_resource(socket.socket, save, restore)" in message
    g.close()


def test_a_registered_handler_reconnects_on_restore() -> None:
    handle = contsnap.register_resource(Client, lambda c: c.address, Client)
    try:
        g = session("db.example:5432")
        next(g)
        before = Client.connections
        restored = contsnap.loads(contsnap.dumps(g))
        assert Client.connections == before + 1
        client = restored.send(None)
        assert type(client) is Client and client.address == "db.example:5432"
        restored.close()
        assert client.sock.fileno() == -1  # the restored finally closed the new socket
        g.close()
    finally:
        handle.unregister()
    g = session("x")
    next(g)
    with pytest.raises(contsnap.NotCheckpointableError):
        contsnap.dumps(g)
    g.close()


class SpecialClient(Client):
    pass


def test_most_specific_handler_wins_and_later_registrations_replace() -> None:
    handles = [
        contsnap.register_resource(Client, lambda c: ("base", c.address), _rebuild_client),
        contsnap.register_resource(SpecialClient, lambda c: ("first", c.address), _rebuild_client),
        contsnap.register_resource(SpecialClient, lambda c: ("later", c.address), _rebuild_client),
    ]
    try:
        g = hold((Client("a"), SpecialClient("b")))
        next(g)
        plain, special = contsnap.loads(contsnap.dumps(g)).send(None)
        assert (plain.address, special.address) == ("base:a", "later:b")
        handles[2].unregister()  # the earlier registration applies again
        special = contsnap.loads(contsnap.dumps(g)).send(None)[1]
        assert special.address == "first:b"
    finally:
        for handle in handles:
            handle.unregister()


def _rebuild_client(state: tuple[str, str]) -> Client:
    return Client(":".join(state))


def test_a_failing_save_names_the_variable() -> None:
    def save(client: Client) -> None:
        raise ConnectionError("not connected")

    handle = contsnap.register_resource(Client, save, Client)
    try:
        g = hold(Client("x"))
        next(g)
        with pytest.raises(contsnap.NotCheckpointableError) as info:
            contsnap.dumps(g)
    finally:
        handle.unregister()
    message = str(info.value)
    assert "local variable 'kept'" in message or "local variable 'value'" in message
    assert "ConnectionError: not connected" in message
    assert "save function registered for" in message


def test_a_failing_restore_names_the_type() -> None:
    def restore(address: str) -> Client:
        raise ConnectionRefusedError(f"cannot reach {address}")

    handle = contsnap.register_resource(Client, lambda c: c.address, restore)
    try:
        g = hold(Client("db:1"))
        next(g)
        blob = contsnap.dumps(g)
        with pytest.raises(contsnap.CheckpointError) as info:
            contsnap.loads(blob)
    finally:
        handle.unregister()
    message = str(info.value)
    assert f"{__name__}.Client" in message
    assert "ConnectionRefusedError: cannot reach db:1" in message


def test_a_handler_missing_in_the_loading_process_is_named() -> None:
    handle = contsnap.register_resource(Client, lambda c: c.address, Client)
    try:
        g = hold(Client("db:1"))
        next(g)
        blob = contsnap.dumps(g)
    finally:
        handle.unregister()
    with pytest.raises(contsnap.CheckpointError, match="no handler for that type is registered"):
        contsnap.loads(blob)


def test_register_resource_needs_a_class_and_callables() -> None:
    with pytest.raises(TypeError):
        contsnap.register_resource("socket", repr, repr)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        contsnap.register_resource(Client, None, repr)  # type: ignore[arg-type]


# ---------------------------------------------------------------- refusals


def _refusal(value: Any) -> str:
    g = hold(value)
    next(g)
    with pytest.raises(contsnap.NotCheckpointableError) as info:
        contsnap.dumps(g)
    g.close()
    return str(info.value)


def test_a_socket_is_refused_with_how_to_reconnect() -> None:
    with socket.socket() as sock:
        message = _refusal(sock)
    line = hold.__code__.co_firstlineno + 3
    assert message.startswith(f"cannot snapshot hold at {__file__}:{line}: local variable")
    assert "socket.socket object (an open network connection)" in message
    assert "reconnects on restore: contsnap.register_resource(socket.socket, save, restore)" in (
        message
    )


@pytest.mark.parametrize(
    ("make", "name", "spelled"),
    [
        (threading.Lock, "_thread.lock", "type(threading.Lock())"),
        (threading.RLock, "_thread.RLock", "type(threading.RLock())"),
        (threading.Condition, "threading.Condition", "threading.Condition"),
        (threading.Semaphore, "threading.Semaphore", "threading.Semaphore"),
        (threading.Event, "threading.Event", "threading.Event"),
    ],
)
def test_thread_objects_are_refused(make: Any, name: str, spelled: str) -> None:
    message = _refusal(make())
    assert f"{name} object (a" in message
    assert "belongs to this process's threads" in message
    # the suggested call runs as printed: _thread.lock is no attribute on 3.10-3.12
    assert f"contsnap.register_resource({spelled}, save, restore)" in message
    assert eval(spelled, {"threading": threading}) is type(make())


def test_a_sqlite_connection_is_refused() -> None:
    connection = sqlite3.connect(":memory:")
    try:
        message = _refusal(connection)
        assert "sqlite3.Connection object (an open database connection)" in message
        assert "sqlite3.Cursor object" in _refusal(connection.cursor())
    finally:
        connection.close()


def test_a_child_process_is_refused() -> None:
    with subprocess.Popen([sys.executable, "-c", "pass"]) as child:
        message = _refusal(child)
    assert "subprocess.Popen object (a running child process)" in message


def test_a_user_handler_overrides_a_refusal() -> None:
    handle = contsnap.register_resource(
        threading.Event, lambda e: e.is_set(), lambda is_set: _event(is_set)
    )
    try:
        done = threading.Event()
        done.set()
        g = hold(done)
        next(g)
        assert contsnap.loads(contsnap.dumps(g)).send(None).is_set()
    finally:
        handle.unregister()
    assert "threading.Event" in _refusal(threading.Event())


def _event(is_set: bool) -> threading.Event:
    event = threading.Event()
    if is_set:
        event.set()
    return event


def test_fork_reopens_files_independently(text_file: Path) -> None:
    g = read_lines(text_file)
    _advance(g, 10)
    copy = contsnap.fork(g)
    assert next(copy) == next(g) == LINES[10]
    assert list(copy) == LINES[11:]
    assert list(g) == LINES[11:]
