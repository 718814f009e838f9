def augmented(obj, table, key):
    obj.total += yield obj.total
    table[key] -= yield table[key]
    table[key:] = [(yield "slice")]
