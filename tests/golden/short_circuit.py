def short_circuit(a):
    b = a and (yield "and")
    c = (yield "then") if b else (yield "else")
    d = 0 < (yield "low") < (yield "high")
    return f"{b}-{(yield c)!r}-{d}"
