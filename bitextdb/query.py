"""Translations of one sentence: search the other language and rank the hits by margin.

The query's own neighbourhood r(q) is the mean cosine of its k nearest sentences in the
target language (as for a mined sentence); each hit's r(y) is its stored value towards the
query's language (computed here, as mining will, for a hit not mined yet). For a stored
sentence these are the margins mining gave; for a new one, ingesting it may change them,
since it may enter its hits' own lists and raise their r(y). The ``top`` places are the
best margins over every target sentence, not only over the nearest by cosine (see
:func:`_ranked_pools`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import MAX_SENTENCE_CHARS, check_lang, pairs_to_mine
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
    src, tgt = check_lang(src), check_lang(tgt)
    if src == tgt:
        raise InputError("Translate between two different languages.")
    if isinstance(top, bool) or not isinstance(top, Integral) or top < 1:
        raise InputError(f"--top must be a whole number, at least 1, not {top!r}.")
    top = int(top)  # numpy's integers too
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
    for number, query in enumerate(queries, 1):
        if len(query) > MAX_SENTENCE_CHARS:  # tokenizing megabytes held serve's requests up
            raise InputError(
                f"Sentence {number} to translate has {len(query):,} characters, more than "
                f"the {MAX_SENTENCE_CHARS:,} a sentence may have: give one sentence."
            )
    # a pair `config --pairs` leaves out is not mined: what mining stored for it (r values,
    # pairs) is as old as the last mining before, so nothing of it is taken
    mined = bool(pairs_to_mine(sorted((src, tgt)), db.settings.pairs))
    with db.db.session() as s:
        known = [lookup.sentence_by_hash(s, src, text_hash(q)) for q in queries]
        floor = graph.r_floor(s, tgt, src) if mined else None
        stored = {sid: lookup.pairs_of(s, sid) for sid in known if sid is not None and mined}
    vectors = _query_vectors(db, src, queries, known)
    pools = _ranked_pools(db, vectors, src, tgt, top, target_points, floor, stored_r=mined)
    paired_ids = {p[key] for ps in stored.values() for p in ps for key in ("src_id", "tgt_id")}
    with db.db.session() as s:
        # beyond ``top``: a point without a sentence (left by a removal stopped before its
        # vectors went) is passed over, and the next one takes its place
        shown = {h.id for pool in pools for h in pool.hits[: top + SPARE_HITS]}
        text_of = corpus.texts(s, sorted(shown | paired_ids))
    out = []
    for query, sid, pool in zip(queries, known, pools):
        # the sentence's pairs with ``tgt`` (it may be paired in other languages too)
        langs = {src, tgt}
        pairs = [p for p in stored.get(sid, []) if {p["src_lang"], p["tgt_lang"]} == langs]
        paired = {(p["src_id"], p["tgt_id"]): p for p in pairs}
        hits = []
        for hit in pool.hits:
            if hit.id not in text_of:  # a point without a sentence is no translation
                continue
            pair = paired.get((sid, hit.id) if src < tgt else (hit.id, sid))
            hit.text = text_of[hit.id][1]
            hit.mined, hit.accepted = pair is not None, bool(pair and pair["accepted"])
            hits.append(hit)
            if len(hits) == top:
                break
        best = next((p for p in pairs if p["accepted"]), None)
        out.append(
            Translation(
                query,
                src,
                tgt,
                sid,
                pool.r_query,
                hits,
                None if best is None else _pair_view(best, text_of, src),
            )
        )
    return out


#: Hits whose texts are read beyond ``top``, to stand in for points without a sentence.
SPARE_HITS = 16
#: The most target sentences one query's margins are computed for. A pool of the nearest by
#: cosine grows (x4) until no sentence outside it can score above its ``top``-th margin.
MAX_POOL = 4096
#: ... or this many a place asked for (``top``), when that is more.
POOL_PER_PLACE = 4


@dataclass
class _Pool:
    """A query's nearest target sentences by cosine, ranked by margin."""

    r_query: float
    hits: list[Hit]


def _ranked_pools(
    db: BitextDB,
    vectors: np.ndarray,
    src: str,
    tgt: str,
    top: int,
    target_points: int,
    floor: float | None,
    *,
    stored_r: bool = True,
) -> list[_Pool]:
    """Each query's hits ranked by margin, best first, holding at least its ``top`` best.

    A target outside a pool has a cosine at most the pool's lowest ``c`` and an r(y) at
    least ``floor`` (no stored r towards ``src`` is lower: :func:`graph.r_floor`), so a
    margin at most ``2c / (r(q) + floor)``: once the ``top``-th margin in the pool reaches
    that, no mined sentence outside can displace the ``top`` best. Targets not mined yet
    get their r(y) from a search of ``src`` here, as mining them would (one outside the
    pool, with an r below every stored one, can be missed until it is mined). Without
    ``stored_r`` (a pair not mined) every r(y) is found so and, with no ``floor``, a pool
    grows to its cap (:data:`MAX_POOL`, or more for a large ``top``).
    """
    from .knn import exact_cosines  # torch: imported by the commands that need it only

    k = db.settings.k
    exact = target_points <= db.settings.exact_limit
    r_of: dict[int, float | None] = {}
    pools: list[_Pool | None] = [None] * len(vectors)
    todo = list(range(len(vectors)))
    # a pool stops growing here, settled or not: room enough for the N best to settle
    # (a cap of MAX_POOL alone cut a --top of 4,000 short of its best margins)
    cap = max(MAX_POOL, POOL_PER_PLACE * top)
    limit = min(max(top, k) + k + 8, cap)
    while todo:
        rows = db.index.search(
            tgt,
            vectors[todo],
            limit,
            exact=exact,
            ef=max(db.settings.hnsw_ef, limit),
            with_vectors=False,
        )
        hit_ids = sorted({h.id for row in rows for h in row})
        found, hit_vectors = db.index.retrieve(tgt, np.array(hit_ids, dtype=np.int64))
        vector_of = dict(zip(found.tolist(), hit_vectors))
        _learn_r(db, src, [i for i in vector_of if i not in r_of], vector_of, r_of, stored_r)
        whole = limit >= target_points or limit >= cap
        still = []
        for at, row in zip(todo, rows):
            ids = np.array([h.id for h in row if h.id in vector_of], np.int64)
            cos = (
                exact_cosines(vectors[at][None], np.stack([vector_of[i] for i in ids])[None])[0]
                if len(ids)
                else np.zeros(0)
            )
            order = np.lexsort((ids, -cos))
            ids, cos = ids[order], cos[order]
            r_query = float(cos[:k].mean()) if len(cos) else 0.0
            hits = []
            for hid, c in zip(ids.tolist(), cos.tolist()):
                r_hit = r_of.get(hid)
                margin = (
                    None
                    if r_hit is None
                    else float(ratio_margin(np.array(c), np.array(r_query), np.array(r_hit)))
                )
                hits.append(Hit(hid, "", c, margin))
            hits.sort(
                key=lambda h: (
                    h.margin is None,
                    -(h.cosine if h.margin is None else h.margin),
                    h.id,
                )
            )
            if whole or len(row) < limit or _settled(hits, top, r_query, floor, cos):
                pools[at] = _Pool(r_query, hits)
            else:
                still.append(at)
        todo = still
        limit = min(limit * 4, cap)
    return [pool for pool in pools if pool is not None]


def _settled(
    hits: list[Hit], top: int, r_query: float, floor: float | None, cos: np.ndarray
) -> bool:
    """Whether no target outside these hits can score above the ``top``-th margin."""
    if floor is None or not len(cos) or len(hits) < top or hits[top - 1].margin is None:
        return False
    den = r_query + floor
    if den <= 0:
        return False
    lowest = float(cos[-1])
    bound = 2 * lowest / den if lowest > 0 else 0.0
    return hits[top - 1].margin > bound


def _learn_r(
    db: BitextDB,
    src: str,
    ids: list[int],
    vector_of: dict[int, np.ndarray],
    r_of: dict[int, float | None],
    stored: bool = True,
) -> None:
    """Add the r(y) towards ``src`` of the target sentences ``ids`` to ``r_of``: the stored
    one for the mined (unless not ``stored``), and for the others the mean cosine of their k
    nearest ``src`` sentences, as mining them would store (None when ``src`` holds no
    vector)."""
    from .knn import exact_cosines

    if stored:
        with db.db.session() as s:
            r_of.update(lookup.r_values(s, ids, src))
    unmined = [i for i in ids if i not in r_of]
    if not unmined:
        return
    k = db.settings.k
    points = db.index.count(src)
    rows = (
        db.index.search(
            src,
            np.stack([vector_of[i] for i in unmined]),
            k,
            exact=points <= db.settings.exact_limit,
            ef=max(db.settings.hnsw_ef, k),
            with_vectors=True,
        )
        if points
        else [[] for _ in unmined]
    )
    for hid, row in zip(unmined, rows):
        if not row:
            r_of[hid] = None
            continue
        near = np.stack([h.vector for h in row])[None]
        r_of[hid] = float(np.sort(exact_cosines(vector_of[hid][None], near)[0])[::-1][:k].mean())


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
