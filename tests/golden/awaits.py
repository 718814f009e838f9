import contsnap


async def leaf(i):
    return i * 2


async def forms(n):
    """Each form of await keeps Python's own: the awaitable is read from the frame."""
    total = 0
    for i in range(n):
        total += await leaf(i)
        doubled = await leaf(total)
        await contsnap.checkpoint()
        total = max(await leaf(i), doubled)
    return await leaf(total) + 1


async def nested(a, b):
    return pair(await leaf(a), await leaf(b))


def pair(x, y):
    return x, y
