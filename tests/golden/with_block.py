def with_block(path):
    with open(path) as f, f as g:
        for line in g:
            yield line.strip()
