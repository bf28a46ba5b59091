"""Languages of the hosted pages: gettext catalogs (``locales/<language>/LC_MESSAGES/pages.po``)
read with Babel (``common.i18n``, which the mails use too), and the language a request is
answered in.

A message without a translation (or a fuzzy one) is shown in English. ``pybabel`` extracts and
updates the catalogs (docs/api.md, "Translations"); a test keeps them in step with the templates.
"""

from __future__ import annotations

from pathlib import Path

from babel.support import NullTranslations

from common.i18n import DEFAULT, catalog, supported

LOCALES = Path(__file__).parent / "locales"
DOMAIN = "pages"
LANGUAGES = {"en": "English", "sv": "Svenska", "de": "Deutsch"}
"""Each language (``common.i18n.SUPPORTED``) with its own name, as the switcher shows it."""


def translations(language: str) -> NullTranslations:
    """The pages' catalog of ``language`` (English: the messages as written)."""
    return catalog(LOCALES, DOMAIN, language)


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
