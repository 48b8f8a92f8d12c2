"""Preprocessor options written as text: `KEY=VALUE` pairs, and the one set of words for true/false.

The CLI (`preprocess --option`, `generate --cond-option`) and the web UI (a comma-separated
field) all read options here, and leave the values as text: the registry converts each to the
type of the option's default (`ConditionSpec.check_options`), with `parse_bool` for booleans.
"""

from __future__ import annotations

from collections.abc import Iterable

from t2i_adapter.errors import T2IAdapterError

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def parse_bool(text: str) -> bool | None:
    """`true`/`yes`/`on`/`1` -> True, `false`/`no`/`off`/`0` -> False (any case); None otherwise."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def parse_option(text: str, *, what: str = "option") -> tuple[str, str]:
    """`KEY=VALUE` -> (key, value), both stripped; the key must be a name. `what` names the
    source in the error (`--cond-option`, `preprocessor option`)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise T2IAdapterError(f"{what} '{text.strip()}' is not of the form KEY=VALUE")
    return key, value.strip()


def parse_options(pairs: Iterable[str], *, what: str = "option") -> dict[str, str]:
    """Many `KEY=VALUE` strings -> {key: value text}; a key given again replaces the earlier value."""
    return dict(parse_option(pair, what=what) for pair in pairs)


def parse_option_text(text: str | None, *, what: str = "option") -> dict[str, str]:
    """`"low_threshold=50, high_threshold=150"` (commas or new lines between pairs) -> a dict."""
    items = (text or "").replace("\n", ",").split(",")
    return parse_options((item for item in items if item.strip()), what=what)


def format_option_text(options: dict[str, object]) -> str:
    """The inverse of `parse_option_text` (for putting recorded options back in a text field)."""
    return ", ".join(f"{key}={value}" for key, value in options.items())
