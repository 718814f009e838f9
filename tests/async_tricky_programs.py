"""The battery of tricky async programs that agreed natively and marked in every mode when they
were written (tests/test_exactness_async_tricky.py runs them): each with a few of the
configurations of assert_async_equivalent it was checked in."""

from __future__ import annotations

from contsnap.testing import Close, Send, Throw

BATTERY: dict[str, tuple[str, list[dict[str, object]]]] = {
    "await_positions": (
        '\nasync def val(x, log):\n    await checkpoint()\n    log.append(("val", x))\n    return x\nasync def gen(arg, log):\n    d = {await val(1, log): await val(2, log)}\n    l = [await val(3, log), *[await val(4, log)]]\n    t = (await val(5, log)) + (await val(6, log)) * (await val(7, log))\n    s = f"{await val(8, log)}-{await val(9, log)!r:>3}"\n    c = (await val(10, log)) if (await val(11, log)) else (await val(12, log))\n    b = (await val(0, log)) or (await val(13, log)) and (await val(14, log))\n    sub = [1,2,3][await val(1, log)]\n    cmp = (await val(1, log)) < (await val(2, log)) < (await val(0, log))\n    call = max(await val(1, log), key=None, default=await val(2, log)) if False else dict(a=await val(1, log), **{"b": await val(2, log)})\n    return d, l, t, s, c, b, sub, cmp, call\n',
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "await_in_augassign_attr_sub": (
        "\nclass Box:\n    def __init__(self): self.v = 1; self.items = [1, 2]\nasync def val(x, log):\n    await checkpoint()\n    return x\nasync def gen(arg, log):\n    b = Box()\n    b.v += await val(10, log)\n    b.items[await val(0, log)] += await val(5, log)\n    x = 3\n    x **= await val(2, log)\n    (b.v, b.items[1]) = (await val(7, log), await val(8, log))\n    return b.v, b.items, x\n",
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "async_with_nested_try_break_continue": (
        '\nclass ACM:\n    def __init__(self, name, log): self.name = name; self.log = log\n    async def __aenter__(self):\n        await checkpoint(); self.log.append(("enter", self.name)); return self.name\n    async def __aexit__(self, t, v, tb):\n        await checkpoint(); self.log.append(("exit", self.name, t and t.__name__)); return self.name == "swallow"\nasync def gen(arg, log):\n    out = []\n    for i in range(4):\n        async with ACM(f"a{i}", log) as a:\n            try:\n                async with ACM("swallow", log):\n                    if i == 1:\n                        continue\n                    if i == 2:\n                        raise ValueError(i)\n                    await checkpoint()\n                    if i == 3:\n                        break\n                out.append(a)\n            finally:\n                log.append(("finally", i))\n                await checkpoint()\n    return out\n',
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "async_with_return_in_finally": (
        '\nclass ACM:\n    def __init__(self, log): self.log = log\n    async def __aenter__(self):\n        return self\n    async def __aexit__(self, *exc):\n        await checkpoint(); self.log.append(("exit", exc[0] and exc[0].__name__)); return False\nasync def gen(arg, log):\n    try:\n        async with ACM(log):\n            await checkpoint()\n            return "body"\n    finally:\n        await checkpoint()\n        log.append("outer finally")\n',
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "agen_yield_inside_async_with": (
        '\nclass ACM:\n    def __init__(self, log): self.log = log\n    async def __aenter__(self):\n        await checkpoint(); self.log.append("enter"); return 5\n    async def __aexit__(self, t, v, tb):\n        await checkpoint(); self.log.append(("exit", t and t.__name__)); return t is KeyError\nasync def gen(arg, log):\n    async with ACM(log) as v:\n        x = yield v\n        log.append(("got", x))\n        await checkpoint()\n        y = yield v + 1\n        log.append(("got", y))\n    yield "after"\n',
        [{"actions": [Send(1), Send(2), Send(3)]}, {"actions": [Close()]}, {"pause_at": 3}],
    ),
    "agen_aclose_athrow_every_yield": (
        '\nasync def gen(arg, log):\n    try:\n        try:\n            yield 1\n            await checkpoint()\n            yield 2\n        except ValueError as e:\n            log.append(("caught", e.args))\n            await checkpoint()\n            yield "from except"\n        finally:\n            log.append("inner finally")\n            await checkpoint()\n        yield 3\n    except GeneratorExit:\n        log.append("genexit")\n        raise\n    finally:\n        log.append("outer finally")\n',
        [
            {"actions": [Close()]},
            {"actions": [Throw(KeyError, ("e",))]},
            {"actions": [Send(None), Throw(ValueError, ("b",)), Send(None)], "fork_at": 5},
        ],
    ),
    "pep479_async": (
        '\nasync def inner():\n    await checkpoint()\n    raise StopAsyncIteration("inner")\nasync def gen(arg, log):\n    yield 1\n    try:\n        await inner()\n    except StopAsyncIteration as e:\n        log.append(("caught", e.args))\n    yield 2\n    if arg > 0:\n        raise StopAsyncIteration("mine")\n    raise StopIteration("si")\n',
        [{"arg": 0}, {"arg": 0, "fork_at": 2}, {"arg": 0, "pause_at": 2}],
    ),
    "stopiteration_in_coroutine": (
        '\nasync def inner():\n    await checkpoint()\n    raise StopIteration(5)\nasync def gen(arg, log):\n    try:\n        await inner()\n    except RuntimeError as e:\n        log.append(("rt", str(e), type(e.__cause__).__name__, e.__cause__.args))\n    await checkpoint()\n    raise StopIteration(6)\n',
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "exception_chain_after_resume": (
        '\nasync def fail(x):\n    await checkpoint()\n    raise ValueError(x)\nasync def gen(arg, log):\n    try:\n        try:\n            await fail(1)\n        except ValueError as e:\n            await checkpoint()\n            log.append(("exc_info", sys.exc_info()[0].__name__, sys.exc_info()[1].args))\n            raise KeyError("k") from e\n    except KeyError as k:\n        await checkpoint()\n        log.append(("cause", type(k.__cause__).__name__, k.__cause__.args, k.__suppress_context__))\n        log.append(("context", type(k.__context__).__name__))\n        try:\n            await fail(2)\n        except ValueError as e2:\n            log.append(("ctx2", type(e2.__context__).__name__, e2.__context__.args))\n            await checkpoint()\n            log.append(("exc_info2", sys.exc_info()[1].args))\n        log.append(("exc_info3", sys.exc_info()[1].args))\n    log.append(("exc_info4", sys.exc_info()))\n    return "ok"\n',
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "return_chain": (
        '\nasync def a(n):\n    await checkpoint()\n    if n == 0:\n        return ("leaf",)\n    return (n,) + await b(n - 1)\nasync def b(n):\n    r = await a(n)\n    await checkpoint()\n    return r\nasync def gen(arg, log):\n    return await a(3)\n',
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "coroutine_state_introspection": (
        "\nasync def inner(log):\n    await checkpoint()\n    return 1\nasync def gen(arg, log):\n    c = inner(log)\n    log.append(inspect.getcoroutinestate(c))\n    r = await c\n    log.append(inspect.getcoroutinestate(c))\n    log.append(c.cr_await is None)\n    return r\n",
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "sys_exc_info_in_except_across_pause": (
        '\nasync def gen(arg, log):\n    try:\n        raise ValueError("a")\n    except ValueError:\n        await checkpoint()\n        log.append(repr(sys.exc_info()[1]))\n        try:\n            raise KeyError("b")\n        except KeyError:\n            await checkpoint()\n            log.append(repr(sys.exc_info()[1]))\n            log.append(repr(sys.exc_info()[1].__context__))\n        log.append(repr(sys.exc_info()[1]))\n    log.append(repr(sys.exc_info()[1]))\n',
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "async_for_break_continue_else": (
        '\nasync def agen(log):\n    try:\n        for i in range(5):\n            await checkpoint()\n            yield i\n    finally:\n        log.append("agen finally")\nasync def gen(arg, log):\n    total = 0\n    async for x in agen(log):\n        if x == 1:\n            continue\n        try:\n            if x == 3:\n                break\n            total += x\n        finally:\n            await checkpoint()\n    else:\n        log.append("else")\n    async for y in agen(log):\n        total += y\n    else:\n        log.append("else2")\n    return total\n',
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "return_from_async_for_in_with": (
        '\nasync def agen(log):\n    try:\n        yield 1\n        await checkpoint()\n        yield 2\n    finally:\n        log.append("agen finally")\nasync def gen(arg, log):\n    async for x in agen(log):\n        async for y in agen(log):\n            if y == 2:\n                return x, y\n            await checkpoint()\n',
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "walrus_and_lambda_closure": (
        "\nasync def val(x):\n    await checkpoint()\n    return x\nasync def gen(arg, log):\n    fs = []\n    for i in range(3):\n        if (y := await val(i)) >= 0:\n            fs.append(lambda: y + i)\n    n = 0\n    def bump():\n        nonlocal n\n        n += 1\n        return n\n    await checkpoint()\n    bump()\n    await val(0)\n    bump()\n    return [f() for f in fs], n\n",
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "agen_athrow_stopasync": (
        '\nasync def gen(arg, log):\n    try:\n        yield 1\n    except ValueError:\n        log.append("v")\n        return\n    yield 2\n',
        [
            {"actions": [Throw(ValueError, ("x",))]},
            {"actions": [Throw(StopAsyncIteration, ())]},
            {"actions": [Throw(GeneratorExit, ())]},
        ],
    ),
    "agen_yield_in_finally_on_close": (
        '\nasync def gen(arg, log):\n    try:\n        yield 1\n    finally:\n        await checkpoint()\n        log.append("fin")\n',
        [
            {"actions": [Close()]},
            {"actions": [Close()], "fork_at": 1},
            {"actions": [Close()], "fork_at": 2},
        ],
    ),
    "try_star_like_nested_excepts": (
        '\nasync def gen(arg, log):\n    for i in range(3):\n        try:\n            try:\n                await checkpoint()\n                if i == 0: raise ValueError(i)\n                if i == 1: raise KeyError(i)\n            except ValueError as e:\n                await checkpoint()\n                raise TypeError(i)\n            else:\n                await checkpoint()\n                log.append(("else", i))\n        except (TypeError, KeyError) as e:\n            await checkpoint()\n            log.append((type(e).__name__, repr(e.__context__)))\n    return "end"\n',
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "coroutine_closed_before_start": (
        '\nasync def inner(log):\n    try:\n        await checkpoint()\n    finally:\n        log.append("inner fin")\nasync def gen(arg, log):\n    c = inner(log)\n    c.close()\n    log.append(inspect.getcoroutinestate(c))\n    c2 = inner(log)\n    await checkpoint()\n    await c2\n    try:\n        await c2\n    except RuntimeError as e:\n        log.append(str(e))\n',
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "while_with_await_condition": (
        '\nasync def cond(i):\n    await checkpoint()\n    return i < 3\nasync def gen(arg, log):\n    i = 0\n    while await cond(i):\n        i += 1\n        if i == 2:\n            continue\n        log.append(i)\n    else:\n        log.append("else")\n    return i\n',
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "match_with_await": (
        '\nasync def val(x):\n    await checkpoint()\n    return x\nasync def gen(arg, log):\n    out = []\n    for v in [1, (1, 2), {"k": 3}, "s"]:\n        match await val(v):\n            case 1:\n                out.append(await val("one"))\n            case (a, b) if await val(a < b):\n                out.append((a, b))\n            case {"k": k}:\n                out.append(k)\n            case _:\n                out.append(await val("other"))\n    return out\n',
        [{}, {"pause_at": 2, "move": True}, {"pause_at": 3, "move": True}],
    ),
    "gather_children": (
        '\nasync def child(i, log):\n    await asyncio.sleep(0)\n    log.append(("child", i))\n    return i * 2\nasync def gen(arg, log):\n    await checkpoint()\n    r = await asyncio.gather(child(1, log), child(2, log))\n    await checkpoint()\n    log.append(r)\n    r2 = await asyncio.gather(*[child(i, log) for i in range(3)], return_exceptions=True)\n    await checkpoint()\n    return r, r2\n',
        [
            {"modes": ("asyncio",), "pause_at": 0, "move": False},
            {"modes": ("asyncio",), "pause_at": 3, "move": False},
            {"modes": ("asyncio",), "pause_at": 5, "move": True},
        ],
    ),
    "wait_for_and_shield": (
        '\nasync def child(log):\n    await asyncio.sleep(0)\n    return "c"\nasync def gen(arg, log):\n    await checkpoint()\n    a = await asyncio.wait_for(child(log), 10)\n    await checkpoint()\n    b = await asyncio.shield(child(log))\n    await checkpoint()\n    try:\n        await asyncio.wait_for(asyncio.sleep(10), 0.001)\n    except asyncio.TimeoutError:\n        log.append("timeout")\n    await checkpoint()\n    return a, b\n',
        [
            {"modes": ("asyncio",), "pause_at": 0, "move": False},
            {"modes": ("asyncio",), "pause_at": 3, "move": False},
            {"modes": ("asyncio",), "pause_at": 5, "move": True},
        ],
    ),
    "contsnap_sleep_and_queue": (
        "\nasync def gen(arg, log):\n    q = contsnap.Queue([1, 2])\n    await contsnap.sleep(0)\n    a = await q.get()\n    await checkpoint()\n    q.put_nowait(3)\n    b = await q.get()\n    c = await q.get()\n    await contsnap.sleep(0.001)\n    return a, b, c, q.qsize()\n",
        [
            {"modes": ("asyncio",), "pause_at": 0, "move": False},
            {"modes": ("asyncio",), "pause_at": 3, "move": False},
            {"modes": ("asyncio",), "pause_at": 5, "move": True},
        ],
    ),
    "agen_finalized_by_loop": (
        '\nasync def agen(log):\n    try:\n        yield 1\n        yield 2\n    finally:\n        log.append("agen finally")\nasync def gen(arg, log):\n    await checkpoint()\n    async for x in agen(log):\n        log.append(x)\n        break\n    await checkpoint()\n    return "end"\n',
        [
            {"modes": ("asyncio",), "pause_at": 0, "move": False},
            {"modes": ("asyncio",), "pause_at": 3, "move": False},
            {"modes": ("asyncio",), "pause_at": 5, "move": True},
        ],
    ),
    "agen_abandoned_and_hook": (
        '\nasync def agen(log):\n    try:\n        yield 1\n        yield 2\n    finally:\n        log.append("agen finally")\nasync def gen(arg, log):\n    a = agen(log)\n    log.append(await a.__anext__())\n    await checkpoint()\n    log.append(await anext(a))\n    await checkpoint()\n    await a.aclose()\n    return "end"\n',
        [
            {"modes": ("asyncio",), "pause_at": 0, "move": False},
            {"modes": ("asyncio",), "pause_at": 3, "move": False},
            {"modes": ("asyncio",), "pause_at": 5, "move": True},
        ],
    ),
    "event_lock_natively_around": (
        '\nasync def gen(arg, log):\n    ev = asyncio.Event()\n    lock = asyncio.Lock()\n    await checkpoint()\n    async with lock:\n        log.append(lock.locked())\n    ev.set()\n    await ev.wait()\n    await checkpoint()\n    return "ok"\n',
        [
            {"modes": ("asyncio",), "pause_at": 0, "move": False},
            {"modes": ("asyncio",), "pause_at": 3, "move": False},
            {"modes": ("asyncio",), "pause_at": 5, "move": True},
        ],
    ),
    "contextvar_set_before_pause": (
        '\nimport contextvars\nCV = contextvars.ContextVar("CV", default="d")\nCV2 = contextvars.ContextVar("CV2")\nasync def gen(arg, log):\n    log.append(CV.get())\n    CV.set("one")\n    await checkpoint()\n    log.append(CV.get())\n    CV.set("two")\n    CV2.set(5)\n    await checkpoint()\n    log.append((CV.get(), CV2.get()))\n    await checkpoint()\n    return CV.get(), CV2.get(None)\n',
        [
            {"modes": ("asyncio",), "pause_at": 0, "move": False},
            {"modes": ("asyncio",), "pause_at": 3, "move": False},
            {"modes": ("asyncio",), "pause_at": 5, "move": True},
        ],
    ),
    "pause_resume_many": (
        '\nasync def step(i, log):\n    await checkpoint()\n    log.append(i)\nasync def gen(arg, log):\n    for i in range(8):\n        await step(i, log)\n    return "done"\n',
        [
            {"modes": ("asyncio",), "pause_at": 0, "move": False},
            {"modes": ("asyncio",), "pause_at": 5, "move": False},
            {"modes": ("asyncio",), "pause_at": 9, "move": True},
        ],
    ),
    "exc_inside_gather_child": (
        '\nasync def child(i):\n    await asyncio.sleep(0)\n    if i == 1:\n        raise ValueError(i)\n    return i\nasync def gen(arg, log):\n    await checkpoint()\n    try:\n        await asyncio.gather(child(0), child(1))\n    except ValueError as e:\n        log.append(("caught", e.args))\n        await checkpoint()\n        log.append(repr(sys.exc_info()[1]))\n    return "ok"\n',
        [
            {"modes": ("asyncio",), "pause_at": 0, "move": False},
            {"modes": ("asyncio",), "pause_at": 3, "move": False},
            {"modes": ("asyncio",), "pause_at": 5, "move": True},
        ],
    ),
    "async_with_asynccm_marked": (
        '\nclass CM:\n    def __init__(self, log): self.log = log\n    async def __aenter__(self):\n        await checkpoint()\n        return self\n    async def __aexit__(self, *a):\n        await checkpoint()\n        self.log.append(("exit", a[0] and a[0].__name__))\nasync def gen(arg, log):\n    async with CM(log) as c, CM(log) as d:\n        await checkpoint()\n        log.append(c is not d)\n    return "x"\n',
        [
            {"modes": ("asyncio",), "pause_at": 0, "move": False},
            {"modes": ("asyncio",), "pause_at": 4, "move": True},
            {"pause_at": 3, "move": True},
        ],
    ),
    "agen_return_in_finally_awaits": (
        '\nasync def gen(arg, log):\n    for i in range(3):\n        try:\n            yield i\n            if i == 1:\n                return\n        finally:\n            await checkpoint()\n            log.append(("fin", i))\n',
        [{}, {"actions": [Send(None), Close()]}, {"pause_at": 2}],
    ),
    "agen_catches_genexit_and_awaits": (
        '\nasync def gen(arg, log):\n    try:\n        yield 1\n        yield 2\n    except GeneratorExit:\n        log.append("ge")\n        await checkpoint()\n        log.append("after await in GE handler")\n        raise\n',
        [{}, {"actions": [Send(None), Close()]}, {"pause_at": 2}],
    ),
    "agen_yield_in_except_of_athrow": (
        '\nasync def gen(arg, log):\n    while True:\n        try:\n            v = yield "ready"\n            log.append(("v", v))\n        except ValueError as e:\n            await checkpoint()\n            v = yield ("handled", e.args)\n            log.append(("after", v))\n        except KeyError:\n            return\n',
        [
            {
                "actions": [Send(1), Throw(ValueError, ("a",)), Send(2), Throw(KeyError, ())],
                "modes": ("native", "transformed", "roundtrip", "fork"),
            },
            {
                "actions": [Send(1), Throw(ValueError, ("a",)), Send(2), Throw(KeyError, ())],
                "fork_at": 4,
                "modes": ("native", "transformed", "roundtrip", "fork"),
            },
            {
                "actions": [Throw(ValueError, ("a",)), Throw(ValueError, ("b",)), Close()],
                "modes": ("native", "transformed", "roundtrip", "fork"),
            },
        ],
    ),
    "exception_group_style_reraise": (
        "\nasync def fail(x):\n    await checkpoint()\n    raise ValueError(x)\nasync def gen(arg, log):\n    errors = []\n    for i in range(3):\n        try:\n            await fail(i)\n        except ValueError as e:\n            errors.append(e)\n            await checkpoint()\n    try:\n        raise errors[-1]\n    except ValueError as e:\n        await checkpoint()\n        log.append((e is errors[-1], e.args, type(e.__context__).__name__ if e.__context__ else None))\n    return [e.args for e in errors]\n",
        [{}, {"pause_at": 0}, {"pause_at": 3, "move": True}],
    ),
    "finally_overrides_return": (
        '\nasync def inner(log):\n    try:\n        await checkpoint()\n        return "try"\n    finally:\n        await checkpoint()\n        return "finally"\nasync def gen(arg, log):\n    r = await inner(log)\n    try:\n        try:\n            await checkpoint()\n            raise ValueError\n        finally:\n            await checkpoint()\n            return (r, "swallowed")\n    except ValueError:\n        return "not reached"\n',
        [{}, {"pause_at": 0}, {"pause_at": 3, "move": True}],
    ),
    "while_true_break_from_except": (
        '\nasync def gen(arg, log):\n    n = 0\n    while True:\n        try:\n            await checkpoint()\n            n += 1\n            if n > 2:\n                raise StopAsyncIteration\n        except StopAsyncIteration:\n            await checkpoint()\n            break\n        finally:\n            log.append(("fin", n))\n            if n == 1:\n                continue\n    return n\n',
        [{}, {"pause_at": 0}, {"pause_at": 3, "move": True}],
    ),
    "await_in_default_args_and_decorators": (
        '\nasync def val(x):\n    await checkpoint()\n    return x\ndef deco(tag):\n    def wrap(f):\n        f.tag = tag\n        return f\n    return wrap\nasync def gen(arg, log):\n    @deco(await val("t"))\n    def f(a=await val(1), *, b=await val(2)):\n        return a + b\n    class C(dict if await val(True) else list):\n        attr = 5\n    return f(), f.tag, C.__mro__[1].__name__\n',
        [{}, {"pause_at": 0}, {"pause_at": 3, "move": True}],
    ),
    "await_in_with_item_and_assert": (
        '\nclass CM:\n    def __init__(self, log): self.log = log\n    def __enter__(self): self.log.append("enter"); return 1\n    def __exit__(self, *a): self.log.append("exit")\nasync def val(x):\n    await checkpoint()\n    return x\nasync def gen(arg, log):\n    with CM(log) if await val(True) else None as c:\n        await checkpoint()\n    assert await val(True), await val("msg")\n    try:\n        assert await val(False), await val("msg")\n    except AssertionError as e:\n        log.append(e.args)\n    del_me = [1, 2, 3]\n    del del_me[await val(0)]\n    return del_me\n',
        [{}, {"pause_at": 0}, {"pause_at": 3, "move": True}],
    ),
    "async_gen_nested_async_for_in_agen": (
        "\nasync def src(n):\n    for i in range(n):\n        await checkpoint()\n        yield i\nasync def mid():\n    async for x in src(3):\n        async for y in src(x):\n            yield (x, y)\nasync def gen(arg, log):\n    out = []\n    async for p in mid():\n        out.append(p)\n    return out\n",
        [{}, {"pause_at": 0}, {"pause_at": 3, "move": True}],
    ),
    "agen_asend_value_through_awaits": (
        "\nasync def gen(arg, log):\n    total = 0\n    while True:\n        v = yield total\n        if v is None:\n            return\n        await checkpoint()\n        total += v\n",
        [
            {
                "actions": [Send(1), Send(2), Send(3), Send(None)],
                "fork_at": 0,
                "modes": ("native", "transformed", "roundtrip", "fork"),
            },
            {
                "actions": [Send(1), Send(2), Send(3), Send(None)],
                "fork_at": 4,
                "modes": ("native", "transformed", "roundtrip", "fork"),
            },
            {"actions": [Send(1), Send(2), Send(None)]},
        ],
    ),
    "agen_ag_await_running_after_restore": (
        '\nasync def inner():\n    await checkpoint()\n    return 1\nasync def agen(log):\n    yield 1\n    await inner()\n    yield 2\nasync def gen(arg, log):\n    a = agen(log)\n    log.append(a.ag_running)\n    log.append(await a.__anext__())\n    log.append((a.ag_running, a.ag_await))\n    await checkpoint()\n    log.append(await a.__anext__())\n    log.append((a.ag_running, a.ag_await, a.ag_frame is not None))\n    try:\n        await a.__anext__()\n    except StopAsyncIteration:\n        log.append("stop")\n    log.append(a.ag_frame)\n',
        [{}, {"pause_at": 0}, {"pause_at": 3, "move": True}],
    ),
    "agen_async_with_yield_athrow_swallow": (
        '\n@contextlib.asynccontextmanager\nasync def cm(log):\n    log.append("enter")\n    try:\n        yield "res"\n    except ValueError:\n        log.append("swallowed")\n    finally:\n        log.append("exit")\nclass ACM:\n    def __init__(self, log): self.log = log\n    async def __aenter__(self):\n        return "acm"\n    async def __aexit__(self, t, v, tb):\n        await checkpoint()\n        self.log.append(("aexit", t and t.__name__))\n        return t is ValueError\nasync def gen(arg, log):\n    async with ACM(log) as r:\n        yield r\n        yield r + "2"\n    yield "after"\n',
        [
            {},
            {"pause_at": 1, "move": True},
            {"actions": [Send(None), Throw(ValueError, ("x",)), Send(None)], "fork_at": 4},
        ],
    ),
}
