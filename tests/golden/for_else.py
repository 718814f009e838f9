def for_else(items):
    for item in items:
        if item is None:
            break
        yield item
    else:
        yield "exhausted"
