"""The producer and its batch source: the stream while training, exact resume from a checkpoint's state alone,
ranks, bounded disk, no waits at a rate the producer sustains, errors that name their cause."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nbhelpers import config
from nbhelpers.batches import DataExhausted, DataSourceError, join_state, split_state
from nbhelpers.corpus import build_corpus
from nbhelpers.corpus.producer import corpus_stream, make_parts
from nbhelpers.corpus.stream import StreamBatches

BLOCK = 64


def _cfg(**kw):
    base = dict(mixture={"bundled_prose": 0.7, "arithmetic": 0.3}, block_len=BLOCK, token_budget=BLOCK * 600,
                part_tokens=BLOCK * 48, val_blocks=8, min_chars=10, workers=1, seed=3, parts_ahead=2)
    base.update(kw)
    return config.CorpusConfig(**base)


@pytest.fixture()
def corpus(tmp_path, tokenizer_dir):
    """A built corpus (02) and a function making its stream into a folder."""
    cfg = _cfg()
    build_corpus(cfg, tokenizer_dir, tmp_path / "c", progress=False)

    def stream(folder, cfg=cfg, workers=1):
        if cfg is not _cfg and cfg != _cfg():
            build_corpus(cfg, tokenizer_dir, tmp_path / "c", progress=False)
        return corpus_stream(cfg, tokenizer_dir, tmp_path / "c", tmp_path / folder, workers=workers)

    return stream


def _reference(corpus, parts, seed):
    """The stream's blocks in the order micro-batches read them: parts made in this process, each shuffled."""
    stream, start, hashes = corpus("reference")
    out = []
    for k, meta in enumerate(make_parts(stream, start, hashes, parts)):
        blocks = stream.store().blocks(k, meta)
        out += [blocks[j] for j in np.random.default_rng([seed, k]).permutation(len(blocks))]
    return np.stack(out)


def _read(source, indices):
    return np.concatenate([source.batch(i)["input_ids"].numpy() for i in indices])


def test_batches_are_the_stream_in_parts_shuffled_within_each(corpus):
    stream, start, hashes = corpus("parts")
    want = _reference(corpus, 13, seed=5)
    source = StreamBatches(stream, start, hashes, micro_batch=4, total_blocks=600, seed=5)
    try:
        assert len(source) == 150
        got = _read(source, range(len(source)))
        assert got.dtype == np.int64 and got.shape == (600, BLOCK)
        assert np.array_equal(got, want[:600])
        assert np.array_equal(source.batch(149)["input_ids"].numpy(), want[596:600])  # pure in i
        with pytest.raises(IndexError, match=r"part 0 of the corpus stream was read and deleted"):
            source.batch(3)
        assert np.array_equal(source.batch(150)["input_ids"].numpy(), want[600:604])  # past len: the stream goes on
        stats = source.stats()
        assert stats["parts_read"] == 13 and stats["producer_restarts"] == 0
    finally:
        source.close()


def test_ranks_read_disjoint_shares_of_what_one_process_reads(corpus, tmp_path):
    stream, start, hashes = corpus("parts")
    want = _reference(corpus, 6, seed=1)
    ranks = [StreamBatches(stream, start, hashes, micro_batch=3, total_blocks=280, seed=1, rank=r, world_size=2,
                           owner=r == 0) for r in range(2)]
    try:
        assert len(ranks[0]) == len(ranks[1]) == 280 // 6
        for i in range(len(ranks[0])):  # rank r reads global micro-batch 2i + r: the blocks one process reads
            both = np.concatenate([ranks[r].batch(i)["input_ids"].numpy() for r in (0, 1)])  # the owner first here
            assert np.array_equal(both, want[6 * i:6 * i + 6]), i
    finally:
        for r in ranks:
            r.close()


@pytest.mark.parametrize("world", [1, 2])
def test_a_checkpoints_state_alone_resumes_the_stream_exactly(corpus, tmp_path, world):
    """Kill anywhere; the next session has no parts folder (Kaggle's scratch is gone), only the checkpoint's state."""
    stream, start, hashes = corpus("parts")
    want = _reference(corpus, 12, seed=2)
    source = StreamBatches(stream, start, hashes, micro_batch=2, total_blocks=560, seed=2)
    for cut in (0, 7, 23, 24, 131):  # inside a part, at a part's first block, at the very start
        _read(source, range(cut + 3))  # the reader ran ahead of the checkpoint (a prefetching loader)
        plain, arrays = split_state(source.state_dict(cut))
        saved = json.loads(json.dumps(plain)), {k: v.copy() for k, v in arrays.items()}
        assert set(arrays) == {"data.dedup"} and arrays["data.dedup"].dtype == np.uint64
        later_stream = dataclasses.replace(stream, root=str(tmp_path / f"later-{cut}-{world}"))
        # the checkpoint resumes in `world` processes reading 2 blocks a global micro-batch between them
        later = [StreamBatches(later_stream, start, hashes, micro_batch=2 // world, total_blocks=560, seed=2, rank=r,
                               world_size=world, owner=r == 0) for r in range(world)]
        try:
            for r in later:
                r.load_state_dict(join_state(*saved))
            got = [np.concatenate([r.batch(i)["input_ids"].numpy() for r in later]) for i in range(cut, cut + 20)]
            assert np.array_equal(np.concatenate(got), want[cut * 2:(cut + 20) * 2]), cut
        finally:
            for r in later:
                r.close()
    source.close()


def test_a_state_of_another_stream_is_refused_by_name(corpus):
    stream, start, hashes = corpus("parts")
    source = StreamBatches(stream, start, hashes, micro_batch=2, total_blocks=100, seed=2)
    state = source.state_dict(0)
    other = StreamBatches(dataclasses.replace(stream, fingerprint="0123456789ab"), start, hashes, 2, 100, owner=False)
    with pytest.raises(ValueError, match=r"another corpus stream \(fingerprint '[0-9a-f]+' in the checkpoint, "
                                         r"'0123456789ab' now\).*start a new run directory"):
        other.load_state_dict(state)
    source.close()


def test_disk_stays_bounded_and_a_consumer_below_the_producers_rate_never_waits(corpus, tmp_path):
    """A stand-in for the loop reads blocks at a fixed rate: a third of what the producer made alone, here, just before."""
    stream, start, hashes = corpus("parts")
    stream = dataclasses.replace(stream, part_blocks=96)
    calibrate = StreamBatches(dataclasses.replace(stream, root=str(tmp_path / "calibrate")), start, hashes, 8, 10**6)
    calibrate.batch(0)  # the first part: start-up, not counted
    t0, first = time.perf_counter(), 96 // 8
    _read(calibrate, range(first, first + 12 * 96 // 8))  # 12 more parts as fast as they come
    rate = 12 * 96 / (time.perf_counter() - t0)  # blocks per second the producer sustains on this machine now
    calibrate.close()
    source = StreamBatches(stream, start, hashes, micro_batch=8, total_blocks=10**6, seed=0)
    part_bytes = 96 * BLOCK * 2
    bound = (stream.ahead + 2) * part_bytes  # the part read, one behind, `ahead` ready, one being written
    try:
        source.batch(0)
        interval = 8 / (rate / 3)  # seconds per micro-batch of 8 blocks
        peak, next_t = 0, time.perf_counter()
        for i in range(1, 20 * 96 // 8):
            next_t += interval
            time.sleep(max(0.0, next_t - time.perf_counter()))
            source.batch(i)
            peak = max(peak, stream.store().disk_bytes("part-*.bin*"))  # parts, and the one being written
        assert source.stats()["waits"] == 0, (rate, source.stats())
        assert 0 < peak <= bound, (peak, bound)
        assert len(list(Path(stream.root).glob("part-*.json"))) <= stream.ahead + 2
    finally:
        source.close()


def test_a_killed_producer_is_started_again_and_the_stream_is_the_same(corpus):
    stream, start, hashes = corpus("parts")
    want = _reference(corpus, 8, seed=4)
    source = StreamBatches(stream, start, hashes, micro_batch=4, total_blocks=380, seed=4)
    try:
        got = [_read(source, range(0, 10))]
        os.kill(source.producer.proc.pid, signal.SIGKILL)  # out of memory, say, in the middle of a part
        source.producer.proc.wait()
        got.append(_read(source, range(10, 95)))
        assert source.stats()["producer_restarts"] == 1
        assert np.array_equal(np.concatenate(got), want[:380])
    finally:
        source.close()


def _in_step_until_raised(ranks, error):
    """Every rank reads micro-batch i, i + 1, ... in step (as DDP keeps them) until each has raised `error`:
    {rank: the index it raised at}, {rank: the message}."""
    ends, errors = {}, {}
    i = 0
    while len(ends) < len(ranks):
        for r, source in enumerate(ranks):
            if r in ends:
                continue
            try:
                source.batch(i)
            except error as err:
                ends[r], errors[r] = i, str(err)
        i += 1
    return ends, errors


def test_a_failing_source_is_named_on_every_rank_at_the_same_batch(corpus, tmp_path):
    import gzip

    rng = np.random.default_rng(0)
    rows = [json.dumps({"text": f"{i}番目の文書: " + rng.bytes(60).hex()}, ensure_ascii=False) for i in range(6000)]
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(rows).encode())[:-3000])  # a download cut short: the end is missing
    cfg = _cfg(mixture={f"files:{path}": 0.5, "arithmetic": 0.5}, val_blocks=2)
    stream, start, hashes = corpus("parts", cfg=cfg)
    ranks = [StreamBatches(stream, start, hashes, 2, 10**5, rank=r, world_size=2, owner=r == 0) for r in range(2)]
    try:
        ends, errors = _in_step_until_raised(ranks, DataSourceError)
        assert ends[0] == ends[1] > 100
        assert re.search(r"corpus producer stopped: SourceError: .*broken.jsonl.gz: cannot be read after document "
                         r"\d+ \(EOFError", errors[0]), errors[0]
        assert errors[0] == errors[1]
    finally:
        for r in ranks:
            r.close()


def test_the_end_of_a_stopping_stream_is_data_exhausted_at_the_same_batch_on_every_rank(corpus, tmp_path):
    docs = [f"{i}番目の文書です。" + "長い文章が続きます。" * (i % 5 + 1) for i in range(120)]
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    cfg = _cfg(mixture={f"files:{path}": 1.0}, on_exhausted="stop", val_blocks=2, part_tokens=BLOCK * 16)
    stream, start, hashes = corpus("parts", cfg=cfg)
    ranks = [StreamBatches(stream, start, hashes, 2, 10**4, rank=r, world_size=2, owner=r == 0) for r in range(2)]
    try:
        ends, errors = _in_step_until_raised(ranks, DataExhausted)
        assert ends[0] == ends[1] > 0 and "ran out with corpus.on_exhausted='stop'" in errors[0]
    finally:
        for r in ranks:
            r.close()


def test_a_killed_trainer_takes_its_producer_with_it(corpus, tmp_path):
    stream, start, hashes = corpus("parts")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"stream": dataclasses.asdict(stream), "start": start, "hashes": hashes.tolist()}))
    script = tmp_path / "trainer.py"
    script.write_text(
        "import json, sys, time\nimport numpy as np\n"
        "from nbhelpers.corpus.producer import Stream\nfrom nbhelpers.corpus.stream import StreamBatches\n"
        "spec = json.load(open(sys.argv[1]))\n"
        "s = StreamBatches(Stream(**spec['stream']), spec['start'], np.array(spec['hashes'], np.uint64), 2, 10**6)\n"
        "s.batch(0)\nprint(s.producer.proc.pid, flush=True)\ntime.sleep(600)\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, str(script), str(spec)], stdout=subprocess.PIPE, env=env)
    producer = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{producer}").exists() and time.monotonic() < deadline:
        with open(f"/proc/{producer}/stat") as fh:
            if fh.read().split()[2] == "Z":  # a zombie has ended (its parent, init, reaps it)
                break
        time.sleep(0.05)
    stat = Path(f"/proc/{producer}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z", "the producer outlived its trainer"


def test_the_producer_runs_below_the_trainers_priority(corpus):
    """On a small host the trainer's threads come first; the producer works ahead in what they leave."""
    from nbhelpers.corpus.producer import PRODUCER_NICE

    stream, start, hashes = corpus("parts")
    source = StreamBatches(stream, start, hashes, micro_batch=4, total_blocks=40, seed=4)
    try:
        source.batch(0)  # the producer has made part 0: it set its priority first thing
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, source.producer.proc.pid) == min(19, ours + PRODUCER_NICE)
    finally:
        source.close()


@pytest.mark.parametrize(("passive", "cores", "threads", "want"), [
    (False, 2, 2, 1),  # spinning waits on Colab's 2 vCPUs: one core is the producer's
    (True, 2, 2, 2),  # passive waits: nothing stalls, the trainer keeps both
    (False, 16, 16, 16),  # a big host has cores to spare
    (False, 2, 1, 1),  # never more threads than asked for
])
def test_a_trainer_beside_its_producer_leaves_a_core_only_where_its_threads_spin(monkeypatch, passive, cores,
                                                                                  threads, want):
    import torch

    import nbhelpers
    from nbhelpers.corpus import stream as stream_mod

    monkeypatch.setattr(nbhelpers, "OMP_PASSIVE", passive)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        assert stream_mod.trainer_threads(cores) == want == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_importing_nbhelpers_before_torch_makes_openmp_wait_passively():
    code = ("import os, sys, nbhelpers; import torch; "
            "print(os.environ['OMP_WAIT_POLICY'], nbhelpers.OMP_PASSIVE)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["PASSIVE", "True"]
    late = subprocess.run([sys.executable, "-c", "import torch, nbhelpers; print(nbhelpers.OMP_PASSIVE)"],
                          capture_output=True, text=True, env=env, check=True)
    assert late.stdout.strip() == "False"  # too late to take: trainer_threads leaves a core instead
    user = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=dict(env, OMP_WAIT_POLICY="ACTIVE"))
    assert user.stdout.split() == ["ACTIVE", "False"]  # a user's own setting stays
