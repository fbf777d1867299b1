"""Where a database lives and how it is configured.

Precedence, as in click: a flag, then a ``BITEXTDB_*`` environment variable, then what the
home remembers (``HOME/bitextdb.json`` for store locations, the ``settings`` table for mining
settings), then the defaults below.
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import os
import re
import types
import typing
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError

ENV_PREFIX = "BITEXTDB_"
DEFAULT_MODEL = "sentence-transformers/LaBSE"
LOCATIONS_FILE = "bitextdb.json"
#: the longest sentence limit (max_chars) a database may set
MAX_SENTENCE_CHARS = 1_000_000
LANG_RE = re.compile(r"[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*")


def env(name: str) -> str | None:
    """The value of ``BITEXTDB_<NAME>``, or None when unset or empty."""
    value = os.environ.get(ENV_PREFIX + name)
    return value or None


def default_home() -> Path:
    """``$XDG_DATA_HOME/bitextdb`` (``~/.local/share/bitextdb``): used when no home is given."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "bitextdb"


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    """The home folder from the flag, else ``BITEXTDB_HOME``, else the default."""
    if home is not None and not isinstance(home, (str, os.PathLike)):
        raise ConfigError(f"Name the home folder as text or a path, not {type(home).__name__}.")
    chosen = home if home is not None else env("HOME")
    if isinstance(os.fspath(chosen or ""), bytes):
        raise ConfigError("Name the home folder as text or a pathlib.Path, not bytes.")
    return Path(resolved_path(Path(chosen).expanduser())) if chosen else default_home()


def names_a_path(model: str) -> bool:
    """Whether a ``--model`` value is written as a path (``/``, ``./``, ``../``, ``~``),
    which no hub name is: it must be a local folder."""
    return model.startswith(("/", "./", "../", "~"))


def model_name(model: str) -> str:
    """A model as a database records it: a local folder by its absolute path, so the home
    works from any directory; a hub name as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def same_model(a: str, b: str) -> bool:
    """Whether two model names (as given or as recorded) name the same model."""
    return a == b or model_name(a) == model_name(b)


#: a device torch can name: its kind, and an index
DEVICE_RE = re.compile(r"(cpu|cuda|mps|xpu|npu|hpu|xla|mtia)(:\d+)?")


def check_device(device: str | None) -> str | None:
    """``device`` if it names devices torch knows (``cpu``, ``cuda``, ``cuda:1``, a list of
    them, or ``all``), so that a typo is said when it is set, not at every encode after.
    Checked where a device is given (init, config, a run's option), not by
    :meth:`Settings.validate`: a value stored before must not stop a database that only
    exports."""
    if not isinstance(device, str):  # None, or a kind the settings' own check refuses
        return device
    if not device.replace(",", "").strip():
        raise ConfigError(
            f"--device {device!r} names no device; give cpu, cuda, cuda:N (several with "
            "commas), mps, or all."
        )
    for name in (d.strip() for d in device.split(",") if d.strip()):
        if name != "all" and not DEVICE_RE.fullmatch(name):
            raise ConfigError(
                f"--device {device!r}: {name!r} is not a device; give cpu, cuda, cuda:N "
                "(several with commas), mps, or all."
            )
    return device


def device_list(device: str | None) -> list[str]:
    """The devices a ``--device`` value names: ``"cuda:0, cuda:1"`` gives two, none gives [],
    and ``"all"`` every CUDA device this process sees."""
    names = [d.strip() for d in (device or "").split(",") if d.strip()]
    if "all" not in names:
        return names
    if names != ["all"]:
        raise ConfigError(f"--device {device!r}: 'all' stands alone, not in a list.")
    import torch  # only here: most commands never ask

    count = torch.cuda.device_count()
    if not count:
        raise ConfigError("--device all found no CUDA device; use --device cpu or leave it out.")
    return [f"cuda:{i}" for i in range(count)]


def require_devices(names: Sequence[str]) -> None:
    """Refuse, in one sentence, a device this machine does not have (``cuda:1`` with one GPU,
    ``cuda`` or ``mps`` with none): torch's own error comes late, from deep in a worker."""
    import torch  # only here: most commands never ask

    for name in names:
        kind, _, index = name.partition(":")
        if kind == "cuda":
            count = torch.cuda.device_count()
            if int(index or 0) < count:
                continue
            has = f"only {count} CUDA device{'s' if count > 1 else ''}" if count else "no GPU"
        elif kind == "mps" and not torch.backends.mps.is_available():
            has = "no Apple GPU (mps)"
        else:
            continue
        raise ConfigError(
            f"--device {name}: this machine has {has}; `bitextdb config --device cpu` stores "
            "another (ingest also takes --device cpu for one run)."
        )


#: the longest language code kept (the SQL columns are this wide)
MAX_LANG = 16


def check_lang(lang: str) -> str:
    """Validate a language code (ISO 639-1/3 with optional script, region or variant
    subtags) and return it as BCP 47 spells it: ``EN`` is ``en``, ``pt_br`` is ``pt-BR``,
    ``zh-hant`` is ``zh-Hant``. Every code is stored so spelled: two spellings of one
    language are one language (and one vector collection, on any file system)."""
    if isinstance(lang, str) and len(lang) > MAX_LANG and LANG_RE.fullmatch(lang):
        raise ConfigError(
            f"The language code {lang!r} is longer than the {MAX_LANG} characters bitextdb "
            "keeps; use a shorter one (its language and script, such as 'hy-Latn')."
        )
    if not isinstance(lang, str) or not LANG_RE.fullmatch(lang):
        raise ConfigError(
            f"{lang!r} is not a language code; use an ISO 639 code such as 'en', 'de' or 'zh-Hant'."
        )
    primary, *subtags = re.split("[_-]", lang)
    return "-".join([primary.lower(), *(_subtag_case(tag) for tag in subtags)])


def _subtag_case(tag: str) -> str:
    if len(tag) == 4 and tag.isalpha():  # a script
        return tag.title()
    if (len(tag) == 2 and tag.isalpha()) or (len(tag) == 3 and tag.isdigit()):  # a region
        return tag.upper()
    return tag.lower()  # an extended language or a variant


def _starts_language(piece: str) -> bool:
    """Whether a piece of ``a-b`` can start the second code: as BCP 47 spells them, only a
    language's first subtag is two or three lower-case letters (regions are upper case)."""
    return 2 <= len(piece) <= 3 and piece.isascii() and piece.isalpha() and piece.islower()


def split_pair(text: str) -> tuple[str, str]:
    """The two codes of ``en-de``, ``zh-Hant:en`` or ``en-pt-BR``, in the order given and
    spelled as :func:`check_lang` spells them. With ``-`` between codes that have subtags
    of their own, the second code starts at the piece that can only start a language."""
    if not isinstance(text, str):
        raise ConfigError(f"Name a language pair as text such as 'en-de', not {text!r}.")
    if ":" in text:
        parts = text.split(":")
    else:
        pieces = text.split("-")
        cuts = (
            [1]
            if len(pieces) == 2
            else [i for i, p in enumerate(pieces) if i and _starts_language(p)]
        )
        if len(cuts) > 1:
            readings = " or ".join("-".join(pieces[:i]) + ":" + "-".join(pieces[i:]) for i in cuts)
            raise ConfigError(
                f"{text!r} can be read as more than one language pair ({readings}); write "
                "the one you mean, with ':' between the two codes."
            )
        parts = [text] if not cuts else ["-".join(pieces[: cuts[0]]), "-".join(pieces[cuts[0] :])]
    if len(parts) != 2:
        raise ConfigError(
            f"{text!r} is not a language pair; write it as 'en-de' or 'en:de' (between codes "
            "with subtags, '-' works where the second code starts in lower case, en-pt-BR, "
            "and ':' always: en:pt-BR)."
        )
    a, b = (check_lang(p.strip()) for p in parts)
    if a == b:
        raise ConfigError(f"{text!r} pairs a language with itself.")
    return a, b


def parse_pair(text: str) -> tuple[str, str]:
    """Parse ``en-de`` (or ``zh-Hant:en``) into the two codes, sorted; order never matters."""
    a, b = split_pair(text)
    return (a, b) if a < b else (b, a)


def join_pair(a: str, b: str) -> str:
    """``a-b``, or ``a:b`` where ``a-b`` would not read back as these two codes."""
    dashed = f"{a}-{b}"
    try:
        return dashed if split_pair(dashed) == (a, b) else f"{a}:{b}"
    except ConfigError:
        return f"{a}:{b}"


def pair_name(a: str, b: str) -> str:
    """The canonical name of a language pair: the two codes sorted, joined by
    :func:`join_pair` (``de-en``, ``en-pt-BR``)."""
    a, b = sorted((a, b))
    return join_pair(a, b)


def pairs_to_mine(langs: list[str], chosen: list[str] | None) -> list[tuple[str, str]]:
    """The pairs to mine among ``langs`` (sorted codes): every pair, or only the ``chosen``
    ones (``de-en`` or ``en-de``), each as ``(a, b)`` with ``a < b``."""
    every = list(itertools.combinations(langs, 2))
    if chosen is None:
        return every
    wanted = {parse_pair(p) for p in chosen}
    return [p for p in every if p in wanted]


@dataclass
class Locations:
    """Where the two stores are. Remembered in ``HOME/bitextdb.json`` by ``init``."""

    home: Path
    db: str
    qdrant: str | None = None
    qdrant_prefix: str = "bitextdb_"

    @property
    def vectors_dir(self) -> Path:
        return self.home / "vectors"

    @property
    def lock_path(self) -> Path:
        return self.home / "bitextdb.lock"

    def describe(self) -> dict[str, Any]:
        """The locations with any password hidden, for printing."""
        return {
            "home": str(self.home),
            "db": mask_url(self.db),
            "vectors": mask_url(self.qdrant) if self.qdrant else str(self.vectors_dir),
            "vector_backend": "qdrant-server" if self.qdrant else "qdrant-edge",
            "qdrant_prefix": self.qdrant_prefix if self.qdrant else None,
        }


def mask_url(url: str | None) -> str | None:
    """Hide the password of ``scheme://user:password@host`` URLs."""
    if not url:
        return url
    return re.sub(r"(://[^/:@]+):[^/@]*@", r"\1:***@", url)


def resolve_locations(
    home: str | os.PathLike[str] | None = None,
    db: str | None = None,
    qdrant: str | None = None,
    qdrant_prefix: str | None = None,
) -> Locations:
    """Resolve the stores: flag > env var > ``HOME/bitextdb.json`` > embedded defaults."""
    home_path = resolve_home(home)
    remembered = read_locations_file(home_path)
    db_url = db or env("DB") or _remembered_db(remembered, home_path) or embedded_db_url(home_path)
    qdrant_url = qdrant or env("QDRANT") or remembered.get("qdrant")
    prefix = qdrant_prefix or env("QDRANT_PREFIX") or remembered.get("qdrant_prefix") or "bitextdb_"
    if not re.match(r"^[A-Za-z0-9_-]*$", prefix):
        raise ConfigError(
            f"Qdrant collection prefix {prefix!r} may hold only letters, digits, _ and -."
        )
    return Locations(home=home_path, db=db_url, qdrant=qdrant_url, qdrant_prefix=prefix)


def _remembered_db(remembered: dict[str, Any], home: Path) -> str | None:
    """The SQL URL a home's locations file names. Older versions wrote down the embedded
    SQLite file's absolute path too, which pointed away from a home that was moved (or, in
    a copy, at the original's data): where the home has its own ``bitextdb.sqlite``, such a
    URL means that file."""
    url = remembered.get("db")
    if not isinstance(url, str):
        return None
    names_embedded = url.startswith(_SQLITE) and url.endswith(f"/{EMBEDDED_DB_FILE}")
    return None if names_embedded and (home / EMBEDDED_DB_FILE).is_file() else url


_SQLITE = "sqlite:///"
EMBEDDED_DB_FILE = "bitextdb.sqlite"


def embedded_db_url(home: Path) -> str:
    """The default SQL store: a SQLite file inside the home folder (its path escaped: a
    folder named ``h%41`` or ``a?b`` would otherwise be read as ``hA``, or as ``a`` with a
    query)."""
    from sqlalchemy.engine import URL

    url = URL.create("sqlite", database=str(home / EMBEDDED_DB_FILE))
    return url.render_as_string(hide_password=False)


def sqlite_file(url: str) -> Path | None:
    """The file a ``sqlite:///`` URL names (None for another database or in memory)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not url.startswith(_SQLITE):
        return None
    try:
        database = make_url(url).database
    except ArgumentError:
        return None
    return Path(database) if database and database != ":memory:" else None


def read_locations_file(home: Path) -> dict[str, Any]:
    path = home / LOCATIONS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); fix or delete it.") from exc
    # what init writes: an object of strings (`db`, `qdrant`, `qdrant_prefix`)
    if not isinstance(data, dict) or not all(
        v is None or isinstance(v, str) for k, v in data.items() if k in _REMEMBERED
    ):
        raise ConfigError(
            f"{path} is not what `bitextdb init` writes (an object whose db, qdrant and "
            "qdrant_prefix are strings); fix or delete it."
        )
    return data


_REMEMBERED = ("db", "qdrant", "qdrant_prefix")


def write_locations_file(loc: Locations) -> None:
    """Remember non-default store locations so later commands need only ``--home``.

    The embedded SQLite file is not written down, so a home folder can be moved or copied
    whole and still open its own database.
    """
    data: dict[str, Any] = {"qdrant_prefix": loc.qdrant_prefix}
    if loc.db != embedded_db_url(loc.home):
        data["db"] = loc.db
    if loc.qdrant:
        data["qdrant"] = loc.qdrant
    path = loc.home / LOCATIONS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o600)  # the URL may carry a password
    tmp.replace(path)


#: encoder runtimes: sentence-transformers on torch, or the model exported to ONNX and run by
#: ONNX Runtime or OpenVINO (no openvino-int8: README.md, "CPU backends", says why)
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino")


def breaks_a_line(text: str) -> bool:
    """Whether ``text`` holds a control character (a tab, a line break), a line or
    paragraph separator, or a lone surrogate (invalid UTF-8 read with surrogateescape):
    what a name printed in a line of output may not hold. Spaces of any kind and format
    characters (the zero-width joiners of Persian and Indic spelling) are fine."""
    return any(unicodedata.category(c) in _BREAKING for c in text)


_BREAKING = frozenset({"Cc", "Cs", "Zl", "Zp"})


def resolved_path(path: str | Path) -> str:
    """The absolute path of ``path``, links followed; a loop of links is an input error."""
    try:
        return str(Path(path).resolve())
    except (RuntimeError, OSError, ValueError) as exc:
        # RuntimeError: a symlink loop (Python < 3.13); ValueError: a NUL in the path
        raise InputError(f"Cannot resolve {path!r}: {exc}.") from exc


def _whole(value: object) -> bool:
    """Whether ``value`` is a float that is a whole number (``32.0``)."""
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


@dataclass
class Settings:
    """A database's fixed settings, chosen at ``init`` and kept in the ``settings`` table."""

    model: str = DEFAULT_MODEL
    dim: int = 0
    k: int = 4
    threshold: float = 1.0
    pairs: list[str] | None = None
    # encoder options
    revision: str | None = None
    trust_remote_code: bool = False
    max_seq_length: int | None = None
    device: str | None = None
    batch_size: int = 64
    backend: str = "torch"  # or onnx / onnx-int8 / openvino: ONNX Runtime or OpenVINO, CPU
    # the model in a child process, apart from storage work; None: only for one CUDA device
    encoder_process: bool | None = None
    # Qdrant Edge's upserts in a child process during an ingest; None: with the encoder's
    index_process: bool | None = None
    # reader defaults
    min_chars: int = 2
    max_chars: int = 1000
    # search
    # exact search up to here: on the machines measured (benchmarks/README.md) the scan
    # was faster than HNSW at every size tried, and it is exact
    exact_limit: int = 1_000_000
    # graph and search sizes that kept HNSW's pairs >= 99.5% equal to the exact ones on
    # random 128-d vectors (the hard case); Qdrant's defaults (16, 100) did not
    hnsw_m: int = 32
    hnsw_ef_construct: int = 256
    hnsw_ef: int = 512
    mine_path: str = "auto"
    # compact vectors (fixed at init): storage type and Qdrant quantization for HNSW search
    vector_dtype: str = "float32"
    quantization: str = "none"
    bulk_ratio: float = 0.05
    extra: dict[str, Any] = field(default_factory=dict)

    MUTABLE = (
        "threshold",
        "pairs",
        "device",
        "batch_size",
        "backend",
        "encoder_process",
        "index_process",
        "min_chars",
        "max_chars",
        "exact_limit",
        "hnsw_ef",
        "mine_path",
        "bulk_ratio",
        "max_seq_length",
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def validate(self) -> Settings:
        self._check_types()
        if self.k < 1 or self.k > 64:
            raise ConfigError(f"k must be between 1 and 64, not {self.k}.")
        if self.dim < 0:
            raise ConfigError(f"The embedding dimension must be positive, not {self.dim}.")
        if self.mine_path not in ("auto", "scan", "query"):
            raise ConfigError("mine_path must be one of auto, scan, query.")
        if self.vector_dtype not in ("float32", "float16"):
            raise ConfigError("vector_dtype must be float32 or float16.")
        if self.quantization not in ("none", "scalar", "binary"):
            raise ConfigError("quantization must be none, scalar or binary.")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}.")
        if self.batch_size < 1:
            raise ConfigError("The batch size must be at least 1.")
        if self.min_chars < 0 or self.max_chars < max(1, self.min_chars):
            raise ConfigError("Length limits must satisfy 0 <= min_chars <= max_chars.")
        if self.max_chars > MAX_SENTENCE_CHARS:
            raise ConfigError(
                f"max_chars must be at most {MAX_SENTENCE_CHARS:,} (a sentence, not a "
                f"document), not {self.max_chars}."
            )
        if not isinstance(self.threshold, (int, float)) or not math.isfinite(self.threshold):
            raise ConfigError(f"The threshold must be a finite number, not {self.threshold!r}.")
        self.threshold = float(self.threshold)
        if not math.isfinite(self.bulk_ratio) or self.bulk_ratio < 0:
            raise ConfigError(f"bulk_ratio must be 0 or more, not {self.bulk_ratio}.")
        if self.exact_limit < 0:
            raise ConfigError(f"exact_limit must be 0 or more, not {self.exact_limit}.")
        for name in ("hnsw_m", "hnsw_ef_construct", "hnsw_ef"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}.")
        if self.max_seq_length is not None and self.max_seq_length < 1:
            raise ConfigError(f"max_seq_length must be at least 1, not {self.max_seq_length}.")
        if self.pairs == "all":  # as the command line takes it: every pair
            self.pairs = None
        if isinstance(self.pairs, str):  # "en-de,en-fr", as the command line takes them
            self.pairs = [p for p in self.pairs.split(",") if p.strip()]
        if self.pairs is not None:
            listed = isinstance(self.pairs, (list, tuple, set, frozenset))
            if not listed or not all(isinstance(p, str) for p in self.pairs):
                raise ConfigError(
                    f"pairs must be 'all' or language pairs such as 'en-de', not {self.pairs!r}."
                )
            self.pairs = sorted({pair_name(*parse_pair(p.strip())) for p in self.pairs})
            if not self.pairs:
                raise ConfigError("Name at least one language pair to mine, or 'all'.")
        return self

    def _check_types(self) -> None:
        """Refuse a value of the wrong kind (a library caller's ``k="5"``, ``threshold=True``)
        with one sentence, before a comparison fails on it with a traceback; numbers of
        numpy's kinds become Python's, which the settings table stores as JSON."""
        checks = (
            (bool, bool, "true or false"),
            (str, str, "text"),
            (int, numbers.Integral, "a whole number"),
            (float, numbers.Real, "a number"),
        )
        for name, hint in typing.get_type_hints(Settings).items():
            kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
            value = getattr(self, name)
            if value is None and type(None) in kinds:
                continue
            for kind, accepted, label in checks:
                if kind not in kinds:
                    continue
                bool_as_number = kind is not bool and isinstance(value, bool)
                if kind is int and _whole(value):  # 32.0: as JSON on PostgreSQL keeps it
                    value = int(value)
                if kind is bool and type(value) is int and value in (0, 1):  # stored so once
                    value = bool(value)
                if not isinstance(value, accepted) or bool_as_number:
                    raise ConfigError(f"{name} must be {label}, not {value!r}.")
                setattr(self, name, kind(value))
