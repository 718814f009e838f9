def finally_yields(n):
    for i in range(n):
        try:
            if i == 2:
                return i
            yield i
        finally:
            yield "cleanup"
