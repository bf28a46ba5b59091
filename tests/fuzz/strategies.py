"""What the fuzz tests feed the models, the client and the CLIs: any Unicode (lone surrogates,
controls, line and paragraph separators, bidi controls, fullwidth and compatibility forms), huge
strings, wrong types and nested JSON-ish junk, mixed with values that nearly pass."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
TRICKY = (
    "\x00\t\n\r\x0b\x0c\x1b\x7f\x85\xa0\u2028\u2029\ufeff\u200b\u200d\u3000\uff20\u3002\uff0e"
    "\u00b8\u0130\u03aa\u0301\u0345\u1e9e\ud800\udcff\udfff" + BIDI
)
"""Characters that rules are about: controls, separators, bidi controls, a BOM, zero-width and
fullwidth look-alikes of ``@`` and ``.``, compatibility forms that NFKC expands (U+00B8, a space
and a combining cedilla), case pairs that NFKC does not close (U+03AA U+0301), lone surrogates."""

characters = st.characters(codec=None) | st.sampled_from(TRICKY)
"""Any code point, lone surrogates included (``codec=None``), and more often the tricky ones."""

texts = st.text(characters, max_size=30)
huge_texts = st.builds(
    lambda piece, times: piece * times,
    st.text(characters, min_size=1, max_size=4),
    st.integers(min_value=100, max_value=20_000),
)
"""Up to 80,000 characters: past every length rule, without making every example slow."""
any_text = texts | huge_texts | st.sampled_from(["", " ", "\t", "customer", "123456"])

_words = st.text(st.characters(categories=["L", "N"]) | st.sampled_from(TRICKY), max_size=10)
emails = (
    st.emails().map(str)
    | st.builds(
        lambda local, domain, tld, padding: f"{padding}{local}@{domain}{tld}{padding}",
        _words | st.sampled_from(["Alice", "\u03aa\u0301", "\uff21lice", "a.b+c"]),
        _words | st.sampled_from(["Example", "\uff45xample", "xn--exmple-cua", "b\u00fccher"]),
        st.sampled_from([".com", ".COM", "\u3002com", "\uff0ecom", ".xn--p1ai", "", "."]),
        st.sampled_from(["", " ", "\u3000", "\n"]),
    )
    | any_text
)
"""Addresses: valid ones, near misses with Unicode in either part, and any text."""

leaves = st.none() | st.booleans() | st.integers() | st.floats() | any_text
junk: st.SearchStrategy[Any] = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=10,
)
"""A JSON-ish value of any shape (the Temporal UI's signal form takes any JSON)."""


def or_junk(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``strategy``'s values, or, now and then, a value of any type."""
    return strategy | junk


text_maps = st.dictionaries(any_text, any_text, max_size=5) | st.dictionaries(
    st.text(st.characters(categories=["Ll"]), min_size=1, max_size=6),
    st.just("x"),
    min_size=30,
    max_size=40,
)
"""Profile and metadata maps: any keys and values, or more entries than allowed (32)."""
