"""What "the same ``transactions`` message" means when two writers print numbers differently."""

import json
import re

# A JSON number token (RFC 8259), outside strings: the messages' strings (ids, ISO times)
# hold no quotes, so a token never starts inside one after a `:` or `,`.
NUMBER = re.compile(r"(?<=[:,\[])-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?=[,}\]])")


def without_numbers(text: str) -> str:
    """The JSON text with every number token replaced by ``#``."""
    return NUMBER.sub("#", text)


def number_tokens(text: str) -> list[str]:
    return NUMBER.findall(text)


def assert_same_message(expected: bytes, actual: bytes) -> None:
    """``actual`` is ``expected`` but for how numbers are printed, and each number is the same.

    Same bytes outside number tokens (field names, order, separators, strings, nulls), and
    every pair of number tokens parses to the same IEEE double, bit for bit (so ``-0.0`` is
    not ``0.0``), or to the same integer.
    """
    expected_text, actual_text = expected.decode("utf-8"), actual.decode("utf-8")
    assert without_numbers(actual_text) == without_numbers(expected_text)
    for want, got in zip(number_tokens(expected_text), number_tokens(actual_text), strict=True):
        if re.fullmatch(r"-?[0-9]+", want):  # an integer (Class) stays an integer
            assert got == want
        else:
            assert float(got).hex() == float(want).hex(), (want, got)
    assert list(json.loads(actual_text)) == list(json.loads(expected_text))
