"""GPU benchmark (issue 6), one prepared run on a CUDA machine:

    python benchmarks/gpu.py --sentences sentences.txt --out results.json

1. Encoding, with a LaBSE-shaped BERT (vocab 501,153, hidden 768, 12 layers; random
   weights) on real sentences: tokenization alone; ``SentenceTransformer.encode`` at its
   default (fp32, batch 32) and in fp16 at several batch sizes; the bare fp16 forward pass
   over pre-tokenized, length-sorted batches already on the GPU (with achieved TFLOP/s);
   bitextdb's pipelined encoder (also at other token batch sizes and in bfloat16); and the
   whole bitextdb ingest (read, dedup, SQL, encode,
   upsert), with the model in the ingesting process and in a child process of its own,
   and with the Qdrant Edge upserts in a writer process too (the default on one GPU), each
   with how long its stages worked and the ingesting process's CPU time — all in the same
   run (``--ingest-repeats N``: only the default ingest, N times; ``--py-spy PATH``: one
   more ingest sampled by py-spy, see ``profile_summary.py``); then the encoder in a
   fresh process per variant (batches padded to a multiple of 8 tokens or not; attention
   kernels), where every batch shape is new, as in a first ingest.
2. Bulk mining: the exact blocked kNN (``bitextdb.knn.BlockedKnn``: fp16 products, float64
   re-scoring of the kept candidates) of N x N unit vectors, both directions, against a plain
   fp16 matmul + topk in torch (the speed of a matrix multiply), and the agreement of its
   lists with float64 exact kNN for sampled rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "benchmarks"))

from common import FullCollections  # noqa: E402

DEVICE = "cuda"
PROFILER: list[str] = []  # --py-spy PATH --profile FILE: sample a last run of the ingest
REPEATS = 0  # --ingest-repeats
QUICK = False  # --quick: the figures the targets need, and nothing else
COLLECTIONS = FullCollections()
LABSE = {
    "vocab_size": 501_153,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
}


def log(*args: object) -> None:
    print(*args, flush=True)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build_model(path: Path, sentences: list[str], shape: dict[str, int] = LABSE) -> Path:
    """A LaBSE-shaped BERT (or of another ``shape``) with random weights and a WordPiece
    vocab from the corpus."""
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    try:
        from sentence_transformers.sentence_transformer.modules import (
            Normalize,
            Pooling,
            Transformer,
        )
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Normalize, Pooling, Transformer

    words = Counter(w for s in sentences for w in s.lower().replace(".", " . ").split())
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({c for s in sentences for c in s.lower() if not c.isspace()})
    vocab = specials + chars + [f"##{c}" for c in chars]
    vocab += [w for w, _ in words.most_common(30_000) if w not in set(vocab)]
    staging = path.parent / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast.from_pretrained(str(staging))
    torch.manual_seed(0)
    model = BertModel(BertConfig(**shape))
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    transformer = Transformer(str(staging), max_seq_length=128)
    width = shape["hidden_size"]
    try:
        pooling = Pooling(width, pooling_mode="mean")
    except TypeError:
        pooling = Pooling(word_embedding_dimension=width, pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling, Normalize()]).save(str(path))
    return path


def encode_queued(child, sentences: list[str]) -> float:  # type: ignore[no-untyped-def]
    """Seconds for an encoder process to encode ``sentences`` as an ingest drives it: one
    ingest batch a call, all queued at once, so that its child prepares the next call while
    the model runs the current one."""
    from bitextdb.ingest import BATCH

    started = time.perf_counter()
    calls = [child.submit(sentences[i : i + BATCH]) for i in range(0, len(sentences), BATCH)]
    for call in calls:
        child.wait(call)
    return time.perf_counter() - started


def flops_per_token(seq: float) -> float:
    h, layers = LABSE["hidden_size"], LABSE["num_hidden_layers"]
    return layers * (24 * h * h + 4 * h * seq)


def encode_benchmarks(model_dir: Path, sentences: list[str], home: Path, corpus: Path) -> dict:
    from sentence_transformers import SentenceTransformer

    import bitextdb
    from bitextdb.encoder import ENCODE_ATTENTION, Encoder, attention_kernels

    out: dict = {"sentences": len(sentences)}
    st = SentenceTransformer(str(model_dir), device=DEVICE)
    tokenize = getattr(st, "preprocess", None) or st.tokenize
    lengths = [
        int(x.sum())
        for b in range(0, min(4096, len(sentences)), 512)
        for x in tokenize(sentences[b : b + 512])["attention_mask"]
    ]
    out["mean_tokens"] = float(np.mean(lengths))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t = time.perf_counter()
    n_tok = min(20_000, len(sentences))
    for b in range(0, n_tok, 1024):
        tokenize(sentences[b : min(n_tok, b + 1024)])
    out["tokenize_1core_per_s"] = n_tok / (time.perf_counter() - t)
    torch.set_num_threads(threads)

    sub = sentences[: min(12_000, len(sentences) // 2)]
    if not QUICK:
        st.encode(sub[:512], batch_size=32)
        sync()
        t = time.perf_counter()
        st.encode(sub, batch_size=32)
        sync()
        out["st_fp32_b32_per_s"] = len(sub) / (time.perf_counter() - t)
        log("st fp32 b32", out["st_fp32_b32_per_s"])

    if DEVICE != "cpu":  # float16 matrix products are a GPU thing
        st.half()
    sub = sentences[: min(30_000, len(sentences) // 2)]
    best = (0.0, 0)
    for batch in (128,) if DEVICE == "cpu" else (1024, 2048) if QUICK else (512, 1024, 2048):
        st.encode(sub[:2048], batch_size=batch)
        sync()
        t = time.perf_counter()
        st.encode(sub, batch_size=batch)
        sync()
        rate = len(sub) / (time.perf_counter() - t)
        out[f"st_fp16_b{batch}_per_s"] = rate
        log("st fp16", batch, rate)
        best = max(best, (rate, batch))
    out["st_fp16_best_per_s"], out["st_fp16_best_batch"] = best

    # bare forward: pre-tokenized, length-sorted, already on the GPU. The first pass over
    # the batches meets each batch shape for the first time, the second does not (run 3
    # found a new shape slow the first time: cuDNN's attention plans), so both are timed
    # and the second is the GPU's rate.
    enc = Encoder(str(model_dir), device=DEVICE, pipelined=True)  # (the default on a GPU)
    batches = []
    padded = 0
    for idx in enc.token_batches(sentences):
        features = tokenize([sentences[i] for i in idx])
        padded += int(features["attention_mask"].numel())
        batches.append({k: v.to(DEVICE) for k, v in features.items() if torch.is_tensor(v)})
    seq = padded / len(sentences)
    for name in ("bare_fp16_forward_first_pass", "bare_fp16_forward"):
        with torch.inference_mode():
            bare = forward_seconds(enc.model, batches)
        out[f"{name}_per_s"] = len(sentences) / bare
        out[f"{name}_tflops"] = padded * flops_per_token(seq) / bare / 1e12
        log(name, out[f"{name}_per_s"], out[f"{name}_tflops"])
    out["bare_padded_tokens_per_sentence"] = seq
    out["bare_batches"] = len(batches)
    with torch.inference_mode(), attention_kernels(ENCODE_ATTENTION):
        for f in batches[:3]:  # the encoder's attention kernels: no plans to warm, but once
            enc.model(dict(f))
        took = forward_seconds(enc.model, batches)
    out["bare_fp16_forward_encoder_attention_per_s"] = len(sentences) / took
    log("bare, encoder's attention kernels", out["bare_fp16_forward_encoder_attention_per_s"])
    if not QUICK:
        out.update(forward_diagnostics(enc, batches, len(sentences), padded, seq))
    del batches

    # the attention mask handed over ready-expanded (the default) or the model's own call,
    # which waits for the GPU on every batch (bitextdb.model_forward); each twice, in turn
    for round_ in range(2):
        for name, expand in (("bitextdb_encoder", True), ("bitextdb_encoder_own_mask", False)):
            enc.expand_mask = expand
            enc.encode(sentences[:4096])
            sync()
            t = time.perf_counter()
            enc.encode(sentences)
            sync()
            rate = len(sentences) / (time.perf_counter() - t)
            out[f"{name}_per_s"] = max(rate, out.get(f"{name}_per_s", 0.0))
            out[f"{name}_round{round_}_per_s"] = rate
            log(name, rate)
    enc.expand_mask = True  # the default again, for what follows
    try:
        out.update(mask_diagnostics(enc, batches_of(enc, sentences[:4096])))
    except Exception as exc:  # a diagnostic must not cost the rest of the run
        out["mask_diagnostics_error"] = f"{type(exc).__name__}: {exc}"[:300]
        log("attention mask diagnostics failed", out["mask_diagnostics_error"])

    # where the encoder's operating point might be better: batch sizes in tokens, bfloat16
    sub = sentences[: min(30_000, len(sentences))]
    variants = [(f"t{size // 1024}k", size, torch.float16) for size in (16_384, 65_536, 131_072)]
    variants.append(("bf16_t32k", 32_768, torch.bfloat16))
    for name, max_tokens, dtype in [] if QUICK else variants:
        enc.max_tokens = max_tokens
        if DEVICE != "cpu":  # a --dry-run keeps float32: half precision crawls on a CPU
            enc.model.to(dtype)
        try:
            enc.encode(sub[:2048])
            sync()
            t = time.perf_counter()
            enc.encode(sub)
            sync()
            out[f"bitextdb_encoder_{name}_per_s"] = len(sub) / (time.perf_counter() - t)
        except RuntimeError as exc:  # out of memory, or a dtype this card lacks
            out[f"bitextdb_encoder_{name}_error"] = str(exc)[:200]
        log("bitextdb encoder", name, out.get(f"bitextdb_encoder_{name}_per_s"))
    del enc, st
    torch.cuda.empty_cache()

    from bitextdb.encoder_process import EncoderProcess

    child = EncoderProcess(str(model_dir), device=DEVICE)
    try:
        child.encode(sentences[:4096])
        out["bitextdb_encoder_process_per_s"] = len(sentences) / encode_queued(child, sentences)
    finally:
        child.close()
    log("bitextdb encoder process, queued calls", out["bitextdb_encoder_process_per_s"])

    # the whole ingest: the model in this process; in a child process of its own with the
    # Qdrant Edge upserts kept here; and both in children (the default on one GPU)
    # both in children with half-size batches: a 60,000-sentence file is only eight batches
    # of 8,192, and the pipeline's filling and draining weigh on so few
    from bitextdb import ingest as ingest_module

    variants = (
        ("ingest_in_process", False, False, ingest_module.BATCH),
        ("ingest_upserts_in_process", True, False, ingest_module.BATCH),
        ("ingest", True, True, ingest_module.BATCH),
        ("ingest_batch4096", True, True, 4096),
    )
    if REPEATS:  # --ingest-repeats N: the default ingest alone, N times, for its spread
        variants = tuple(
            (f"ingest_repeat{i}" if i else "ingest", True, True, ingest_module.BATCH)
            for i in range(REPEATS)
        )
    if PROFILER:  # the default ingest once more, sampled (so the timings above are not)
        variants += (("ingest_profiled", True, True, ingest_module.BATCH),)
    default_batch = ingest_module.BATCH
    for name, in_child, writer, batch in variants:
        ingest_module.BATCH = batch
        db = bitextdb.init(
            home / name,
            model=str(model_dir),
            device=DEVICE,
            encoder_process=in_child,
            index_process=writer,
        )
        db.encoder.encode(sentences[:4096])  # load and warm up, as the bare runs were
        spy = None
        if name == "ingest_profiled":  # this process and its children, on-CPU samples
            spy = subprocess.Popen(
                [
                    *(PROFILER[0], "record", "--pid", str(os.getpid()), "--subprocesses"),
                    *("--threads", "--nonblocking", "--rate", "250", "--format", "raw"),
                    *("--output", PROFILER[1]),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(2.0)  # let it attach
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        COLLECTIONS.reset()
        t = time.perf_counter()
        result = db.ingest(str(corpus), "en", mine=False)
        whole = time.perf_counter() - t
        # the cycle collector's full collections in this process meanwhile (bitextdb.heap)
        out[f"{name}_full_collections_s"] = COLLECTIONS.seconds
        after = resource.getrusage(resource.RUSAGE_SELF)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        db.close()
        rate = result["ingested"][0]["new"] / whole
        out[f"{name}_per_s"] = rate
        out[f"{name}_seconds"] = whole
        # which stage held it back (seconds each worked) and how busy the ingesting process was
        out[f"{name}_stage_seconds"] = result["ingested"][0]["stage_seconds"]
        out[f"{name}_process_cpu_s"] = after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime
        log(name, "stages", out[f"{name}_stage_seconds"], "cpu", out[f"{name}_process_cpu_s"])
        out[f"{name}_vs_st_best"] = rate / out["st_fp16_best_per_s"]
        out[f"{name}_vs_bare"] = rate / out["bare_fp16_forward_per_s"]
        out[f"{name}_tflops"] = rate * seq * flops_per_token(seq) / 1e12
        log(name, rate)
    ingest_module.BATCH = default_batch
    out["ingest_sentences"] = result["ingested"][0]["new"]
    return out


def batches_of(enc, sentences: list[str]) -> list[dict]:  # type: ignore[no-untyped-def]
    """The pipeline's own batches of ``sentences``, on the device."""
    prepared = enc.prepare(sentences)
    return [
        {k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in features.items()}
        for _, features in prepared.batches
    ]


def mask_diagnostics(enc, batches: list[dict]) -> dict:  # type: ignore[no-untyped-def]
    """Whether the model took the expanded attention mask here, how often a forward pass
    waited for the GPU each way (torch's sync debug mode counts it), and the bare forward
    over these batches each way."""
    import warnings

    from bitextdb.encoder import ENCODE_ATTENTION, attention_kernels
    from bitextdb.model_forward import BatchForward

    out: dict = {}
    calls = {"expanded": BatchForward(enc.model), "own": BatchForward(enc.model, expand=False)}
    with torch.inference_mode(), attention_kernels(ENCODE_ATTENTION):
        for name, call in calls.items():
            call(batches[0])  # the check, and a warm-up
            if name == "expanded":  # did the model give the same vectors with it?
                out["mask_expanded_taken"] = call.expanded  # None: no padding met yet
            if DEVICE != "cpu":
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        call(batches[-1])
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                out[f"mask_{name}_syncs_per_batch"] = sum(
                    "synchroniz" in str(w.message) for w in caught
                )
            sentences = sum(len(f["input_ids"]) for f in batches)
            out[f"mask_{name}_bare_per_s"] = sentences / forward_seconds(call, batches)
    log("attention mask", out)
    return out


def forward_seconds(model: Callable[[dict], Any], batches: list[dict]) -> float:
    """Seconds for one forward pass of ``model`` (or a ``BatchForward``) over every batch."""
    sync()
    started = time.perf_counter()
    for f in batches:
        model(dict(f))
    sync()
    return time.perf_counter() - started


def forward_diagnostics(enc, batches: list[dict], n: int, padded: int, seq: float) -> dict:  # type: ignore[no-untyped-def]
    """Where the bare forward's time goes: the transformer alone (no pooling, no
    sentence-transformers wrapper) on the same batches, and a profile of a few batches.

    Runs 1-2 gave about 10k sentences/s whether batches held 76 or 33 padded tokens a
    sentence; these showed why (run 3: the transformer alone at 60.8k/s right after, and
    cuDNN's attention in the profile): a batch shape's first run builds a cuDNN plan.
    """
    out: dict = {}
    hf = enc.model[0].auto_model
    out["attention_implementation"] = str(getattr(hf.config, "_attn_implementation", "?"))
    out["model_dtype"] = str(next(hf.parameters()).dtype)
    # what the card gives a plain half-precision matrix product (8192 x 8192 on a GPU)
    size, reps = (1024, 3) if DEVICE == "cpu" else (8192, 20)
    x = torch.randn(size, size, device=DEVICE, dtype=torch.float16 if DEVICE != "cpu" else None)
    x @ x
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        x @ x
    sync()
    out["matmul_fp16_tflops"] = reps * 2 * size**3 / (time.perf_counter() - t) / 1e12
    log("matmul", out["matmul_fp16_tflops"], out["attention_implementation"])
    del x
    with torch.inference_mode():
        sync()
        t = time.perf_counter()
        for f in batches:
            hf(input_ids=f["input_ids"], attention_mask=f["attention_mask"])
        sync()
        took = time.perf_counter() - t
    out["bare_hf_only_per_s"] = n / took
    out["bare_hf_only_tflops"] = padded * flops_per_token(seq) / took / 1e12
    log("bare, transformer only", out["bare_hf_only_per_s"])
    try:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if DEVICE != "cpu":
            activities.append(ProfilerActivity.CUDA)
        from bitextdb.encoder import ENCODE_ATTENTION, attention_kernels

        with (
            torch.inference_mode(),
            attention_kernels(ENCODE_ATTENTION),
            profile(activities=activities) as prof,
        ):
            for f in batches[:3]:
                enc.model(dict(f))
            sync()
        table = prof.key_averages()
        sort_key = "cuda_time_total" if DEVICE != "cpu" else "cpu_time_total"
        out["profile_3_batches_by_device_time"] = table.table(sort_by=sort_key, row_limit=20)
        out["profile_3_batches_by_cpu_time"] = table.table(
            sort_by="self_cpu_time_total", row_limit=20
        )
    except Exception as exc:  # a diagnostic must not cost the rest of the run
        out["profile_error"] = str(exc)[:200]
    return out


VARIANTS = {  # name: (pad_multiple, attention kernels; None: torch's choice, cuDNN included)
    "unpadded_any_attention": (1, None),
    "unpadded_encoder_attention": (1, "encoder"),
    "pad8_any_attention": (8, None),
    "pad8_encoder_attention": (8, "encoder"),  # the encoder's default
}


def encoder_variants(model_dir: Path, corpus: Path) -> dict:
    """The pipelined encoder in a fresh process per variant, so every batch shape is new to
    it as in a real first ingest: padding to a multiple of 8 tokens, and attention kernels."""
    import subprocess

    out: dict = {}
    for name in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", name, "--model-dir", str(model_dir)]
        cmd += ["--sentences", str(corpus)] + (["--dry-run"] if DEVICE == "cpu" else [])
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        try:
            out[name] = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            out[name] = {"error": (done.stderr or done.stdout)[-400:]}
        log(name, out[name])
    return out


def run_variant(name: str, model_dir: str, sentences: list[str]) -> dict:
    from bitextdb.encoder import ENCODE_ATTENTION, Encoder

    pad, kernels = VARIANTS[name]
    t = time.perf_counter()
    enc = Encoder(model_dir, device=DEVICE)
    enc.pad_multiple = pad
    enc.attention_backends = ENCODE_ATTENTION if kernels == "encoder" else None
    out: dict = {"load_s": time.perf_counter() - t}
    enc.encode(sentences[:4096])  # what an ingest's first file would warm
    sync()
    for run in ("first_pass", "second_pass"):
        t = time.perf_counter()
        enc.encode(sentences)
        sync()
        out[f"{run}_per_s"] = len(sentences) / (time.perf_counter() - t)
    return out


def unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def mining_benchmark(n: int, dim: int, k: int, samples: int) -> dict:
    from bitextdb.knn import BlockedKnn

    g = torch.Generator(device=DEVICE).manual_seed(0)
    a = unit(torch.randn(n, dim, device=DEVICE, generator=g))
    b = torch.randn(n, dim, device=DEVICE, generator=g)
    half = n // 2
    b[:half] = a[:half] + 0.7 * b[:half] / dim**0.5  # planted pairs
    b = unit(b)
    a_np, b_np = a.cpu().numpy(), b.cpu().numpy()
    out: dict = {"n": n, "dim": dim, "k": k}

    # baseline: fp16 matmul + topk both ways, no re-scoring (what a matrix multiply costs)
    a16, b16 = a.half(), b.half()
    sync()
    t = time.perf_counter()
    for x, y in ((b16, a16), (a16, b16)):
        for lo in range(0, n, 32_768):
            (x[lo : lo + 32_768] @ y.T).topk(k, dim=1)
    sync()
    out["plain_fp16_topk_s"] = time.perf_counter() - t
    log("plain", out["plain_fp16_topk_s"])

    chunk = 131_072
    sync()
    t = time.perf_counter()
    engine = BlockedKnn(np.arange(n), b_np, k, device=DEVICE, query_block=32_768)
    reverse_ids = np.empty((n, k), dtype=np.int64)
    reverse_cos = np.empty((n, k))
    for lo in range(0, n, chunk):
        rev = engine.add_chunk(np.arange(n, 2 * n)[lo : lo + chunk], a_np[lo : lo + chunk])
        reverse_ids[lo : lo + chunk], reverse_cos[lo : lo + chunk] = rev.ids, rev.cos
    sync()
    out["bitextdb_knn_s"] = time.perf_counter() - t
    out["ratio_vs_plain"] = out["bitextdb_knn_s"] / out["plain_fp16_topk_s"]
    log("blocked", out["bitextdb_knn_s"])

    # exact ties: many bit-identical vectors, where the order must fall back to the id
    tq = unit(torch.randn(3000, dim, device=DEVICE, generator=g)).cpu().numpy()
    tb = unit(torch.randn(2500, dim, device=DEVICE, generator=g)).cpu().numpy()
    tb[100:140] = tb[99]
    tq[10:30] = tq[9]
    tie = BlockedKnn(np.arange(3000), tq, k, device=DEVICE, query_block=1000)
    tie_rev = np.concatenate(
        [
            tie.add_chunk(np.arange(5000, 7500)[lo : lo + 700], tb[lo : lo + 700]).ids
            for lo in range(0, 2500, 700)
        ]
    )
    c64 = tq.astype(np.float64) @ tb.astype(np.float64).T
    want_fwd = [sorted(range(2500), key=lambda j: (-c64[i, j], j))[:k] for i in range(0, 3000, 97)]
    want_rev = [sorted(range(3000), key=lambda i: (-c64[i, j], i))[:k] for j in range(90, 150)]
    out["ties_forward_exact"] = all(
        list(tie.forward.ids[i] - 5000) == w for i, w in zip(range(0, 3000, 97), want_fwd)
    )
    out["ties_reverse_exact"] = all(list(tie_rev[j]) == w for j, w in zip(range(90, 150), want_rev))
    log("ties", out["ties_forward_exact"], out["ties_reverse_exact"])

    rng = np.random.default_rng(1)
    same_fwd = same_rev = 0
    a64, b64 = a.double(), b.double()
    base_ids = torch.arange(n, 2 * n, device=DEVICE)
    for row in rng.choice(n, samples, replace=False):
        cos = a64 @ b64[row]
        top = torch.topk(cos, k)  # exact float64; ties have probability ~0 here
        same_fwd += list((base_ids[top.indices]).cpu().numpy()) == list(engine.forward.ids[row])
        cos = b64 @ a64[row]
        top = torch.topk(cos, k)
        same_rev += list(top.indices.cpu().numpy()) == list(reverse_ids[row])
    out["agreement_forward"] = same_fwd / samples
    out["agreement_reverse"] = same_rev / samples
    out["sampled_rows"] = samples
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sentences", required=True)
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--mine-size", type=int, default=1_000_000)
    parser.add_argument("--out", default="gpu-results.json")
    parser.add_argument("--skip-encode", action="store_true")
    parser.add_argument("--skip-mine", action="store_true")
    parser.add_argument("--skip-variants", action="store_true")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only what the targets need: encode fp16 at 1024/2048, bare forward, encoder, "
        "ingest (no fp32, profile, encoder variants or fresh-process runs)",
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument(
        "--ingest-repeats",
        type=int,
        default=0,
        help="run only the default ingest (both children), this many times, in fresh homes",
    )
    parser.add_argument("--py-spy", help="py-spy's path: profile one more run of the ingest")
    parser.add_argument("--profile", default="ingest-profile.txt", help="where its samples go")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global DEVICE, QUICK, REPEATS
    QUICK = args.quick
    REPEATS = args.ingest_repeats
    if args.py_spy:
        PROFILER[:] = [args.py_spy, args.profile]
    if args.dry_run:
        DEVICE = "cpu"
        LABSE.update(vocab_size=40_000, num_hidden_layers=2)
        args.n, args.mine_size = 800, 20_000
    if args.variant:  # one cold-process encoder run, for encoder_variants
        lines = Path(args.sentences).read_text(encoding="utf-8").splitlines()[: args.n]
        print(json.dumps(run_variant(args.variant, args.model_dir, lines)))
        return
    results: dict = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    try:
        import sentence_transformers
        import transformers

        results["sentence_transformers"] = sentence_transformers.__version__
        results["transformers"] = transformers.__version__
    except ImportError:
        pass
    log(results)
    work = Path(tempfile.mkdtemp(prefix="bitextdb-gpu-"))
    try:
        if not args.skip_encode:
            lines = Path(args.sentences).read_text(encoding="utf-8").splitlines()[: args.n]
            corpus = work / "corpus.txt"
            corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
            t = time.perf_counter()
            model_dir = build_model(work / "labse-shaped", lines)
            log("model built", time.perf_counter() - t)
            results["encode"] = encode_benchmarks(model_dir, lines, work / "home", corpus)
            Path(args.out).write_text(json.dumps(results, indent=2))
            if not (args.skip_variants or args.quick):
                torch.cuda.empty_cache()
                results["encoder_in_a_fresh_process"] = encoder_variants(model_dir, corpus)
                Path(args.out).write_text(json.dumps(results, indent=2))
        if not args.skip_mine:
            results["mine"] = mining_benchmark(
                args.mine_size, 768, 4, 200 if args.dry_run else 2000
            )
    finally:
        Path(args.out).write_text(json.dumps(results, indent=2))
        shutil.rmtree(work, ignore_errors=True)
    log(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
