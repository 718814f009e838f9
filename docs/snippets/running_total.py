import contsnap


@contsnap.checkpointable
def running_total(limit):
    total = 0
    for i in range(limit):
        total += yield total
    return total
