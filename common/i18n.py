"""Languages shared by the hosted pages (``starter/http``) and the mails (``activities``): gettext
catalogs read with Babel, and the language a locale tag maps to.

Each side keeps its own catalogs (``<directory>/<language>/LC_MESSAGES/<domain>.po``); this
module only reads them. The ``.po`` files are the only form committed: they are compiled in
memory when a language is first used (a few milliseconds), so no build step can leave a stale
``.mo`` behind. A message without a translation (or a fuzzy one) comes out in English.
"""

from __future__ import annotations

from functools import cache
from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

DEFAULT = "en"
"""The language the messages are written in, and the one for any locale not supported."""

SUPPORTED = ("en", "sv", "de")


@cache
def catalog(directory: Path, domain: str, language: str) -> NullTranslations:
    """``domain``'s catalog of ``language`` under ``directory`` (English, or a language without
    a catalog: the messages as written)."""
    path = directory / language / "LC_MESSAGES" / f"{domain}.po"
    if language == DEFAULT or not path.is_file():
        return NullTranslations()
    with path.open("rb") as file:
        messages = read_po(file, locale=language, domain=domain)
    compiled = BytesIO()
    write_mo(compiled, messages)
    compiled.seek(0)
    return Translations(compiled, domain=domain)


def supported(tag: str | None) -> str | None:
    """The language for a locale tag (``sv-SE``, ``de_AT``, ``en``), if it is one of ours."""
    if not tag:
        return None
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    return primary if primary in SUPPORTED else None
