def except_handler(values):
    for v in values:
        try:
            yield 10 // v
        except ZeroDivisionError as exc:
            retry = yield ("error", str(exc))
            if retry:
                raise
