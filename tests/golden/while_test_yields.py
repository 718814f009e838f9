def while_test_yields():
    count = 0
    while (yield count):
        count += 1
    else:
        return count
