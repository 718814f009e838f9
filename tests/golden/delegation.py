def delegation(inner, items):
    result = yield from inner(items)
    yield from items
    return result
