"""A checkout in four pages, with validation and a way back to edit the address.

``python examples/web_checkout.py`` serves it at http://127.0.0.1:8000/checkout. The
handler is straight-line code: a loop re-asks the address when the customer wants
to change it, ``web.form`` validates each page (errors show on the same page), and
``web.once`` makes the order be placed once even if the confirmation page is
submitted again from the back button or another tab.
"""

from __future__ import annotations

import os
import re
from typing import Any

from contsnap import web

app = web.App("web-checkout", store=os.environ.get("CONTSNAP_WEB_STORE"))

PRICES = {"apple": 3, "pear": 4}
ORDERS: list[dict[str, Any]] = []  # stands for the shop's order database


def quantity(text: str) -> int:
    count = int(text)
    if not 1 <= count <= 99:
        raise ValueError("between 1 and 99, please")
    return count


def postcode(values: dict[str, Any]) -> dict[str, str]:
    if not re.fullmatch(r"\d{5}", values["postcode"] or ""):
        return {"postcode": "five digits"}
    return {}


def place_order(cart: dict[str, int], address: dict[str, Any]) -> str:
    ORDERS.append({"cart": dict(cart), "address": dict(address)})
    return f"order-{len(ORDERS)}"


@app.conversation("/checkout")
def checkout(request: web.Request):  # type: ignore[no-untyped-def]
    cart = yield web.form(
        web.field("apple", "Apples", parse=quantity),
        web.field("pear", "Pears", parse=quantity),
        title="Your basket",
    )
    address: dict[str, Any] = {}
    while True:
        address = yield web.form(
            web.field("name", "Name", value=address.get("name") or ""),
            web.field("street", "Street", value=address.get("street") or ""),
            web.field("postcode", "Postcode", value=address.get("postcode") or ""),
            title="Delivery address",
            validate=postcode,
        )
        total = cart["apple"] * PRICES["apple"] + cart["pear"] * PRICES["pear"]
        choice = yield web.choose(
            f"<h1>Confirm</h1><p>{cart['apple']} apples, {cart['pear']} pears: {total} EUR, "
            f"to {address['name']}, {address['street']}, {address['postcode']}</p>",
            "Place order",
            "Edit address",
        )
        if choice == "Place order":
            break
    order = web.once("order", lambda: place_order(cart, address))
    return f"<h1>Thank you</h1><p>Your order is {order}: {total} EUR.</p>"


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
