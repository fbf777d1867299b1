#!/usr/bin/env bash
# Issue 6's GPU figures in one call on a lent device machine (no network there).
#
# Here, first:   .venv/bin/python benchmarks/gpu_corpus.py --out .gpu/sentences.txt
#                .venv/bin/python benchmarks/gpu_corpus.py --out .gpu/sentences-short.txt --min-chars 60
#                pip download --only-binary :all: --python-version 3.12 --no-deps -d .whl \
#                  qdrant-edge-py qdrant-client sqlalchemy alembic mako tenacity pydantic \
#                  pydantic-core annotated-types typing-inspection py-spy
# There (carry .whl and .gpu):   bash benchmarks/device_run.sh [more gpu.py options]
#
# Runs `gpu.py --quick --skip-mine` on the issue's ~40-token corpus (.gpu/sentences.txt), then
# on the shorter corpus of runs 3-9 (.gpu/sentences-short.txt) so that the new figures can
# be set beside the old; then, on the CPUs alone, the ingest with an encoder paced at the bare
# forward rate just measured (`paced.py`: what the storage stages let through on this
# machine), the Edge writer alone (`writer.py`) and how long preparing calls holds up the
# thread that launches the model (`launch.py`). Results and logs go to $OUT (./gpu-out
# where it is unset). Uses the machine's own torch and sentence-transformers; the wheels
# only add what they lack.
set -u
out=${OUT:-gpu-out}
mkdir -p "$out"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
    python3 -m compileall -q /tmp/site bitextdb >/dev/null
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
status=0
for corpus in sentences sentences-short; do
    [ -f ".gpu/$corpus.txt" ] || { echo "missing .gpu/$corpus.txt (see the top of $0)"; exit 1; }
    python3 benchmarks/gpu.py --sentences ".gpu/$corpus.txt" --out "$out/gpu-$corpus.json" \
        --skip-mine --quick "$@" 2>&1 | tee "$out/log-$corpus.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
rate=$(python3 -c "import json, sys; print(round(json.load(open(sys.argv[1]))['encode']['bare_fp16_forward_per_s']))" \
    "$out/gpu-sentences.json" 2>/dev/null) || rate=61000
sizes=(--rounds 3)
stalls=(--rounds 2 --seconds 4)
case " $* " in *" --dry-run "*) rate=61000 sizes=(--rounds 1 --size 4096) stalls=(--rounds 1 --seconds 1) ;; esac
python3 benchmarks/paced.py --sentences .gpu/sentences.txt --rate "$rate" "${sizes[@]}" 2>&1 \
    | tee "$out/log-paced.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
python3 benchmarks/writer.py "${sizes[@]}" 2>&1 | tee "$out/log-writer.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
python3 benchmarks/launch.py --sentences .gpu/sentences-short.txt "${stalls[@]}" 2>&1 \
    | tee "$out/log-launch.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
