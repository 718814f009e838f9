def closures(start):
    count = start
    def bump(by=1):
        nonlocal count
        count += by
        return count
    got = yield bump()
    yield bump(got)
    return count
