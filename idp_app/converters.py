"""URL converters: an integer in a path is ASCII digits, nothing else.

Werkzeug's ``int`` converter matches ``\\d+``, which in Python means any Unicode decimal digit, and
converts with :func:`int`, so ``/api/users/٣`` (Arabic-Indic three) or the fullwidth three
(U+FF13) reached user 3. One user under many spellings defeats every filter, log search
and rate limit keyed on the path. These converters match ``[0-9]+`` only; anything else does not
match the route at all (a 404), and a number out of bounds is a 404 too (never a 500).
"""

from __future__ import annotations

from flask import Flask
from werkzeug.routing import IntegerConverter, Map

from .validation import MAX_USER_ID


class AsciiIntegerConverter(IntegerConverter):
    """Werkzeug's ``int`` converter restricted to ASCII digits; registered as ``int``."""

    regex = r"[0-9]+"


class UserIdConverter(AsciiIntegerConverter):
    """``<user_id:...>``: a user id, 1 to 2**63-1 (the database's range)."""

    def __init__(self, map: Map) -> None:
        super().__init__(map, min=1, max=MAX_USER_ID)


def register(app: Flask) -> None:
    """Install the converters; replacing ``int`` covers every ``<int:...>`` route, present or
    future, so no route can fall back to Werkzeug's Unicode-digit matching.
    """
    app.url_map.converters["int"] = AsciiIntegerConverter
    app.url_map.converters["user_id"] = UserIdConverter
