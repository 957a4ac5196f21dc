"""Text as every stage sees it: one normalization for curation, evaluation, serving and monitoring, so a text
served is the text the model was trained on."""

from __future__ import annotations

import re
import unicodedata

_WS = re.compile(r"\s+")
_CONTROL = dict.fromkeys(c for c in range(32) if chr(c) not in "\t\n\r")


def normalize_text(value) -> str:
    """NFKC, control characters removed, whitespace collapsed. Missing values become ''."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = unicodedata.normalize("NFKC", str(value)).translate(_CONTROL)
    return _WS.sub(" ", text).strip()
