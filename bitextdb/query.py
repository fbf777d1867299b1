"""Translations of one sentence: search the other language and rank the hits by margin.

The query's own neighbourhood r(q) is the mean cosine of its k nearest sentences in the
target language (as for a mined sentence); each hit's r(y) is its stored value towards the
query's language. For a stored sentence these are the margins mining gave; for a new one,
ingesting it may change them, since it may enter its hits' own lists and raise their r(y).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import check_lang
from .db import corpus, graph, lookup
from .errors import InputError
from .margin import ratio_margin
from .readers import encodable, normalize, text_hash

if TYPE_CHECKING:
    from .api import BitextDB


@dataclass
class Hit:
    """One translation candidate."""

    id: int
    text: str
    cosine: float
    margin: float | None
    mined: bool = False
    accepted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Translation:
    """The ranked candidates for one query sentence."""

    query: str
    src_lang: str
    tgt_lang: str
    sentence_id: int | None
    r: float
    hits: list[Hit] = field(default_factory=list)
    stored_pair: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["hits"] = [h.as_dict() for h in self.hits]
        return data


def translate_many(
    db: BitextDB, texts: list[str], src: str, tgt: str, *, top: int = 5
) -> list[Translation]:
    """Ranked translations in ``tgt`` for each sentence of ``texts`` (in ``src``)."""
    from .knn import exact_cosines  # torch: imported by the commands that need it only

    src, tgt = check_lang(src), check_lang(tgt)
    if src == tgt:
        raise InputError("Translate between two different languages.")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise InputError(f"--top must be a whole number, at least 1, not {top!r}.")
    for text in texts:
        if not isinstance(text, str):
            raise InputError(f"Translate sentences given as strings, not {type(text).__name__}.")
        if not encodable(text):
            raise InputError("A sentence to translate is not valid Unicode (a lone surrogate).")
    target_points = db.index.count(tgt)
    if target_points == 0:
        with db.db.session() as s:
            indexed = tgt in graph.languages(s)
        if indexed:  # SQL says they have vectors: the store lost them
            raise InputError(
                f"The vectors of the {tgt} sentences are missing from the vector store; "
                "run `bitextdb check --repair` to restore them."
            )
        raise InputError(f"There are no {tgt} sentences in this database.")
    queries = [normalize(t) for t in texts]
    if any(not q for q in queries):
        raise InputError("Cannot translate an empty sentence.")
    with db.db.session() as s:
        known = [lookup.sentence_by_hash(s, src, text_hash(q)) for q in queries]
    vectors = _query_vectors(db, src, queries, known)
    k = db.settings.k
    exact = target_points <= db.settings.exact_limit
    limit = max(top, k) + k + 8
    hits = db.index.search(
        tgt, vectors, limit, exact=exact, ef=max(db.settings.hnsw_ef, limit), with_vectors=False
    )
    hit_ids = sorted({h.id for row in hits for h in row})
    found, hit_vectors = db.index.retrieve(tgt, np.array(hit_ids, dtype=np.int64))
    vector_of = dict(zip(found.tolist(), hit_vectors))
    with db.db.session() as s:
        r_of = lookup.r_values(s, hit_ids, src)
        stored = {sid: lookup.pairs_of(s, sid) for sid in known if sid is not None}
        paired_ids = {p[key] for ps in stored.values() for p in ps for key in ("src_id", "tgt_id")}
        text_of = corpus.texts(s, sorted(set(hit_ids) | paired_ids))
    out = []
    for query, sid, vector, row in zip(queries, known, vectors, hits):
        # a point without a sentence (left by a removal stopped before its vectors went)
        # is no translation
        ids = np.array([h.id for h in row if h.id in vector_of and h.id in text_of], np.int64)
        cos = (
            exact_cosines(vector[None], np.stack([vector_of[i] for i in ids.tolist()])[None])[0]
            if len(ids)
            else np.zeros(0)
        )
        order = np.lexsort((ids, -cos))
        ids, cos = ids[order], cos[order]
        r_query = float(cos[:k].mean()) if len(cos) else 0.0
        # the sentence's pairs with ``tgt`` (it may be paired in other languages too)
        langs = {src, tgt}
        pairs = [p for p in stored.get(sid, []) if {p["src_lang"], p["tgt_lang"]} == langs]
        paired = {(p["src_id"], p["tgt_id"]): p for p in pairs}
        ranked = []
        for hid, c in zip(ids.tolist(), cos.tolist()):
            r_hit = r_of.get(hid)
            margin = (
                None
                if r_hit is None
                else float(ratio_margin(np.array(c), np.array(r_query), np.array(r_hit)))
            )
            key = (sid, hid) if src < tgt else (hid, sid)
            pair = paired.get(key)
            ranked.append(
                Hit(
                    hid,
                    text_of[hid][1],
                    c,
                    margin,
                    pair is not None,
                    bool(pair and pair["accepted"]),
                )
            )
        ranked.sort(key=lambda h: (h.margin is None, -(h.margin or h.cosine), h.id))
        best = next((p for p in pairs if p["accepted"]), None)
        out.append(
            Translation(
                query,
                src,
                tgt,
                sid,
                r_query,
                ranked[:top],
                None if best is None else _pair_view(best, text_of, src),
            )
        )
    return out


def _query_vectors(
    db: BitextDB, lang: str, queries: list[str], known: list[int | None]
) -> np.ndarray:
    """Stored vectors for sentences already in the database, the encoder for the rest."""
    vectors = np.zeros((len(queries), db.settings.dim), dtype=np.float32)
    stored_ids = [sid for sid in known if sid is not None]
    have: dict[int, np.ndarray] = {}
    if stored_ids:
        found, found_vectors = db.index.retrieve(lang, np.array(stored_ids, dtype=np.int64))
        have = dict(zip(found.tolist(), found_vectors))
    missing = [i for i, sid in enumerate(known) if sid is None or sid not in have]
    if missing:
        vectors[missing] = db.encoder.encode([queries[i] for i in missing])
    for i, sid in enumerate(known):
        if sid is not None and sid in have:
            vectors[i] = have[sid]
    return vectors


def _pair_view(
    pair: dict[str, Any], text_of: dict[int, tuple[str, str]], src: str
) -> dict[str, Any]:
    """The stored pair as the query asked for it: ``src`` is the query's language (pairs
    are stored with their languages sorted, which may be the other way round)."""
    flip = pair["src_lang"] != src
    view = {key: pair[key] for key in ("cosine", "margin", "accepted")}
    sides = (("src", "tgt"), ("tgt", "src")) if flip else (("src", "src"), ("tgt", "tgt"))
    for side, stored in sides:
        view[f"{side}_id"] = pair[f"{stored}_id"]
        view[f"{side}_lang"] = pair[f"{stored}_lang"]
        entry = text_of.get(pair[f"{stored}_id"])
        if entry is not None:
            view[side] = entry[1]
    return view
