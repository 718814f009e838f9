import contsnap


async def over(iterable):
    async for item in iterable:
        yield item


async def with_else(iterable):
    total = 0
    async for item in iterable:
        if item is None:
            break
        total += await contsnap.checkpoint() or item
        yield total
    else:
        yield "exhausted"
    return


async def header_awaits(make):
    async for item in await make():
        yield item
