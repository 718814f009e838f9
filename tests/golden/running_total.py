def running_total(limit, log):
    total = 0
    for i in range(limit):
        try:
            total += yield total
        finally:
            log.append(i)
    return total
