"""Languages of the hosted pages: gettext catalogs (``locales/<language>/LC_MESSAGES/pages.po``)
read with Babel, and the language a request is answered in.

The ``.po`` files are the only form committed: they are compiled in memory when a language is
first used (a few milliseconds), so no build step can leave a stale ``.mo`` behind. A message
without a translation (or a fuzzy one) is shown in English. ``pybabel`` extracts and updates
them (docs/api.md, "Translations"); a test keeps the catalogs in step with the templates.
"""

from __future__ import annotations

from functools import cache
from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALES = Path(__file__).parent / "locales"
DOMAIN = "pages"
DEFAULT = "en"
LANGUAGES = {"en": "English", "sv": "Svenska", "de": "Deutsch"}
"""Each language with its own name, as the language switcher shows it."""


@cache
def translations(language: str) -> NullTranslations:
    """The catalog of ``language`` (English: the messages as written)."""
    path = LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if language == DEFAULT or not path.is_file():
        return NullTranslations()
    with path.open("rb") as file:
        catalog = read_po(file, locale=language, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def supported(tag: str | None) -> str | None:
    """The page language for a locale tag (``sv-SE``, ``de_AT``, ``en``), if there is one."""
    if not tag:
        return None
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    return primary if primary in LANGUAGES else None


def from_accept_language(header: str | None) -> str | None:
    """The best supported language of an ``Accept-Language`` header (RFC 9110: ``q`` weights,
    ties in the order written); None when it names none of ours."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, parameters = part.partition(";")
        weight = 1.0
        name, _, value = parameters.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value)
            except ValueError:
                continue
        language = supported(tag)
        if language is not None and weight > 0:
            ranked.append((-weight, position, language))
    return min(ranked)[2] if ranked else None


def choose(explicit: str | None, accept_language: str | None) -> str:
    """The language of a page: the one asked for (the ``lang`` field or parameter, which the
    pages carry from the registration's locale on), else the browser's, else English."""
    return supported(explicit) or from_accept_language(accept_language) or DEFAULT
