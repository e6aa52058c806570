"""A failure's error is always storable: no NUL, no lone surrogate, at most
``MAX_ERROR_LENGTH`` characters with its beginning and end kept (the trust
issue, items 5 and 8: a failure that cannot be written re-ran forever)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flask_plainqueue.runner import format_error
from flask_plainqueue.runner import MAX_ERROR_LENGTH
from flask_plainqueue.runner import storable


@given(st.text(st.characters(codec=None)), st.integers(200, 5000))
def test_storable_text_fits_and_encodes(text: str, limit: int) -> None:
    stored = storable(text, limit)
    assert len(stored) <= limit
    assert "\x00" not in stored
    stored.encode("utf-8")
    if len(text) <= limit and text.isascii() and "\x00" not in text:
        assert stored == text


def test_a_long_error_keeps_its_beginning_and_end() -> None:
    text = "Traceback\n" + "x" * 1_000_000 + "\nRuntimeError: boom"
    stored = storable(text)
    assert len(stored) <= MAX_ERROR_LENGTH
    assert stored.startswith("Traceback\n")
    assert stored.endswith("RuntimeError: boom")
    assert "characters cut" in stored


def test_an_exception_whose_message_cannot_be_formatted_is_stored() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert "Unprintable" in format_error(Unprintable())
