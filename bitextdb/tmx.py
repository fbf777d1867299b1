"""TMX 1.4 (Translation Memory eXchange) markup, for ``export --format tmx``.

TMX is what CAT tools (OmegaT, Trados, memoQ) import and one of the formats OPUS
distributes corpora in: a ``<tu>`` (translation unit) per pair, each side a ``<tuv>`` with
its language, scores as ``<prop>`` elements.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

__all__ = ["FOOTER", "header", "unit"]

FOOTER = "  </body>\n</tmx>\n"

# characters XML 1.0 cannot hold at all (C0 controls but tab and line breaks, lone
# surrogates, U+FFFE and U+FFFF); normalised sentences rarely have any
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: str) -> str:
    return escape(_NOT_XML.sub("\ufffd", value))


def header(src_lang: str, tgt_lang: str, tool_version: str) -> str:
    """The XML declaration, the ``<header>`` (source language ``src_lang``) and the opening
    of ``<body>``; ``tgt_lang`` is named in a comment for readers that look."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<tmx version="1.4">\n'
        f'  <header creationtool="bitextdb" creationtoolversion={quoteattr(tool_version)} '
        f'segtype="sentence" o-tmf="bitextdb" adminlang="en" srclang={quoteattr(src_lang)} '
        'datatype="plaintext"/>\n'
        f"  <!-- {_text(src_lang)} to {_text(tgt_lang)} -->\n"
        "  <body>\n"
    )


def unit(src_lang: str, src: str, tgt_lang: str, tgt: str, props: Sequence[tuple[str, str]]) -> str:
    """One ``<tu>``: ``props`` (type, value; TMX wants them before the variants), then the
    two sides."""
    lines = ["    <tu>\n"]
    lines += [
        f"      <prop type={quoteattr(kind)}>{_text(value)}</prop>\n" for kind, value in props
    ]
    for lang, text in ((src_lang, src), (tgt_lang, tgt)):
        lines.append(f"      <tuv xml:lang={quoteattr(lang)}><seg>{_text(text)}</seg></tuv>\n")
    lines.append("    </tu>\n")
    return "".join(lines)
