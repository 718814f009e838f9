def match_arms(events):
    for event in events:
        match event:
            case {"kind": "ask", "text": text} if text:
                answer = yield text
            case ("sleep", seconds):
                yield seconds
            case _:
                pass
