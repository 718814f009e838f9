"""What a handler yields: a page to ask (raw HTML, or a form built here) and the answer it gets.

``ask(page)`` takes HTML, or a callable given the continuation URL ``k``. ``form``
builds a form that posts to the current continuation, parses and validates its
fields (a page with errors is asked again without consuming a step) and knows which
of several buttons was pressed. ``choose`` is a form of buttons only. Everything
here is plain data, so it is saved with the page's snapshot.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from typing import Any

__all__ = ["Answer", "Ask", "Field", "Form", "ask", "choose", "field", "form"]

_MODULE = "contsnap.web"
CSRF_FIELD = "_csrf"
BUTTON_FIELD = "_button"


class Answer(Mapping[str, str]):
    """The submitted form: field -> its (last) value; ``getall(name)`` keeps repeated fields."""

    __module__ = _MODULE

    def __init__(self, pairs: Sequence[tuple[str, str]] = ()) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            self._values.setdefault(name, []).append(value)

    def __getitem__(self, name: str) -> str:
        return self._values[name][-1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def getall(self, name: str) -> list[str]:
        """Every value submitted for ``name`` (a repeated field, checkboxes), in form order."""
        return list(self._values.get(name, []))

    def __repr__(self) -> str:
        return f"Answer({self._values!r})"


class Ask:
    """A page to show; the conversation waits there for the browser's answer.

    ``yield ask(page)`` in a generator handler, ``await ask(page)`` in an async one.
    """

    __module__ = _MODULE

    def __init__(self, page: str | Callable[[str], str]) -> None:
        self.page = page

    def render(self, k: str, csrf: str) -> str:
        """The page's HTML for continuation URL ``k``, its forms carrying the CSRF token."""
        text = self.page(k) if callable(self.page) else self.page
        if not isinstance(text, str):
            from ._errors import WebError

            raise WebError(
                f"web.ask: the page callable returned {type(text).__name__}, not HTML text; "
                "return a str"
            )
        return add_csrf(text, k, csrf)

    def answer(self, submitted: Answer) -> tuple[Any, dict[str, str]]:
        """What the handler receives for ``submitted``, and the errors that re-ask the page."""
        return submitted, {}

    def __await__(self) -> Any:
        return (yield self)

    def __contsnap_resume__(self) -> _AwaitAnswer:
        return _AwaitAnswer()


class Shown(Ask):
    """A plain `Ask` as it was rendered, kept with its page instead of the page callable.

    The callable (often a lambda, which a snapshot would carry by value, code and
    all) was called once with the continuation URL ``k``; rendering for another URL
    (the app seen under another mount path) puts that URL in place of ``k``, which
    is a random id nothing else in the page contains.
    """

    def __init__(self, page: str, k: str) -> None:
        super().__init__(page)
        self.k = k

    def render(self, k: str, csrf: str) -> str:
        assert isinstance(self.page, str)
        return add_csrf(self.page.replace(self.k, k), k, csrf)

    @classmethod
    def of(cls, asked: Ask, k: str) -> Shown:
        """``asked`` (a plain `Ask`) rendered for continuation URL ``k``."""
        text = asked.page(k) if callable(asked.page) else asked.page
        if not isinstance(text, str):
            from ._errors import WebError

            raise WebError(
                f"web.ask: the page callable returned {type(text).__name__}, not HTML text; "
                "return a str"
            )
        return cls(text, k)


class _AwaitAnswer:
    """What a restored ``await ask(...)`` waits on: the answer the driver sends next.

    A safe point too: a snapshot taken while a restored handler waits here saves it.
    """

    __slots__ = ()

    def __await__(self) -> Any:
        return (yield RESUMED)

    def __contsnap_resume__(self) -> _AwaitAnswer:
        return _AwaitAnswer()


class _Resumed:
    def __repr__(self) -> str:
        return "<restored web.ask>"


RESUMED = _Resumed()


def ask(page: str | Callable[[str], str] | Ask) -> Ask:
    """The page to show (HTML, or a callable given the continuation URL ``k``); yield or await it.

    The value sent back is the submitted form as an `Answer` (for a `form`, its parsed
    values). Forms that post to ``k`` get the CSRF field added automatically.
    """
    return page if isinstance(page, Ask) else Ask(page)


_FORM_TAG = re.compile(r"<form\b[^>]*>", re.IGNORECASE)


def add_csrf(text: str, k: str, csrf: str) -> str:
    """Insert the hidden CSRF field into every ``<form>`` of ``text`` that posts to ``k``."""
    hidden = f'<input type="hidden" name="{CSRF_FIELD}" value="{html.escape(csrf)}">'
    targets = {f'action="{k}"', f"action='{k}'", f'action="{html.escape(k)}"'}

    def insert(match: re.Match[str]) -> str:
        tag = match.group(0)
        return tag + hidden if any(t in tag for t in targets) else tag

    return _FORM_TAG.sub(insert, text)


@dataclass(eq=False)
class Field:
    """One input of a `form`: parsed with ``parse`` (a ValueError's message is shown)."""

    name: str
    label: str
    type: str = "text"
    required: bool = True
    parse: Callable[[str], Any] | None = None
    value: str = ""
    __module__ = _MODULE


def field(
    name: str,
    label: str | None = None,
    *,
    type: str = "text",
    required: bool = True,
    parse: Callable[[str], Any] | None = None,
    value: Any = "",
) -> Field:
    """A form input named ``name``; ``parse`` (e.g. ``int``) turns its text into the value."""
    return Field(
        name, label or name.replace("_", " ").capitalize(), type, required, parse, str(value)
    )


@dataclass(eq=False)
class Form(Ask):
    """An `Ask` built from fields and buttons: answers with the parsed values, re-asks on errors."""

    page: Any
    fields: list[Field]
    title: str = ""
    intro: str = ""
    buttons: tuple[str, ...] = ("Next",)
    validate: Callable[[dict[str, Any]], Mapping[str, str]] | None = None
    errors: dict[str, str] = dc_field(default_factory=dict)
    submitted: dict[str, str] = dc_field(default_factory=dict)
    __module__ = _MODULE

    def render(self, k: str, csrf: str) -> str:
        return add_csrf(self._html(k), k, csrf)

    def _html(self, k: str) -> str:
        e = html.escape
        parts = [f"<h1>{e(self.title)}</h1>" if self.title else "", self.intro]
        parts.append(f'<form method="post" action="{e(k)}">')
        if "" in self.errors:
            parts.append(f'<p class="error">{e(self.errors[""])}</p>')
        for f in self.fields:
            value = self.submitted.get(f.name, f.value)
            parts.append(
                f'<p><label>{e(f.label)} <input name="{e(f.name)}" type="{e(f.type)}" '
                f'value="{e(value)}"></label>'
            )
            if f.name in self.errors:
                parts.append(f' <span class="error">{e(self.errors[f.name])}</span>')
            parts.append("</p>")
        for label in self.buttons:
            parts.append(
                f'<button type="submit" name="{BUTTON_FIELD}" value="{e(label)}">'
                f"{e(label)}</button>"
            )
        parts.append("</form>")
        return "".join(parts)

    def answer(self, submitted: Answer) -> tuple[Any, dict[str, str]]:
        button = submitted.get(BUTTON_FIELD, self.buttons[0] if self.buttons else "")
        if button not in self.buttons:
            return None, {"": f"unknown button {button!r}"}
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for f in self.fields:
            text = submitted.get(f.name, "").strip()
            if not text:
                if f.required:
                    errors[f.name] = "required"
                values[f.name] = None
                continue
            try:
                values[f.name] = f.parse(text) if f.parse else text
            except (ValueError, TypeError) as exc:
                errors[f.name] = str(exc) or "invalid"
        if not errors and self.validate is not None:
            errors.update(self.validate(values))
        values["button"] = button
        return values, errors

    def with_errors(self, submitted: Answer, errors: Mapping[str, str]) -> Form:
        """This form again, showing ``errors`` next to what was typed."""
        typed = {name: submitted[name] for name in submitted if name != CSRF_FIELD}
        return replace(self, errors=dict(errors), submitted=typed)


def form(
    *fields: Field,
    title: str = "",
    intro: str = "",
    buttons: Sequence[str] = ("Next",),
    validate: Callable[[dict[str, Any]], Mapping[str, str]] | None = None,
) -> Form:
    """A form posting to the current continuation; the answer is a dict of parsed values.

    The answer maps each field's name to its parsed value and ``"button"`` to the label
    of the button pressed. A field that fails to parse, a missing required field, or
    errors returned by ``validate(values)`` (field name -> message; ``""`` for the form)
    show the same page again with the messages, without consuming a step.
    """
    return Form(None, list(fields), title, intro, tuple(buttons), validate)


def choose(prompt: str, *options: str) -> Form:
    """A page of buttons (Seaside's callbacks): the answer is the label of the one pressed."""
    return _Choice(None, [], "", prompt, tuple(options))


@dataclass(eq=False)
class _Choice(Form):
    def answer(self, submitted: Answer) -> tuple[Any, dict[str, str]]:
        values, errors = super().answer(submitted)
        return (values["button"] if values else None), errors
