"""The producer: the training stream made on the host's cores while the device trains.

One producer per host. A background process (`producer.main(SPEC)` in its own Python, started by the batch
source `stream.StreamBatches` of the local rank 0 process) runs the corpus pipeline of 02 (read, clean,
deduplicate, mix, tokenize, pack: the same `Mixer`) and writes the stream's parts (`parts.py`) to a parts
folder on local scratch disk: at most `corpus.parts_ahead` parts ahead of the part being read, deleting the
parts read before the previous one. It starts at a part and the stream state at that part's start (a
checkpoint's data position, or the corpus's training start), makes that part again (the stream is
deterministic: the same blocks) and goes on; parts already in the folder that start at the expected position
(made by an earlier session, or ahead by 02) are used as they are.

The trainer tells it which part is being read with a line on its stdin; the pipe closing (the trainer ended or
was killed) stops it and its workers at once. Its error (a source that failed after its retries, a bad file) is
written to the folder for every rank to raise. It imports no torch: it starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CorpusConfig, RunConfig
from ..files import atomic_write_text, read_json
from ..layout import CORPUS, SPM_FILE, TOKENIZER
from ..platform import cpu_cores
from .mixing import Mixer
from .parts import PartStore, same_state
from .workers import bind_to_parent

PRODUCER_NICE = 10  # the producer's priority below the trainer's: on a small host the trainer's threads come first
MAX_WORKERS = 8  # the producer's processes while training, when corpus.workers = 0 (see `training_workers`)
ENTRY = "import sys; from nbhelpers.corpus.producer import main; sys.exit(main(sys.argv[1:]))"  # the process's code


def training_workers(corpus_workers: int, trainers: int = 1, cores: int | None = None) -> int:
    """The producer's cleaning processes while training: corpus.workers, or the cores the trainers leave, at most 8.

    One process (no pool) where the host has no spare core: bench/producer_throughput.py measures that one
    core meets a T4's demand many times over; a TPU host's demand needs a few, and has the cores.
    """
    if corpus_workers > 0:
        return corpus_workers
    return max(1, min((cores or cpu_cores()) - trainers - 1, MAX_WORKERS))


def parts_dir(run_root: str | os.PathLike, fingerprint: str) -> Path:
    """Where a run's training parts go: local scratch (Kaggle's /kaggle/temp, Colab's local disk), else corpus/.

    Never Kaggle's kept output nor Colab's Drive: parts are made again from a checkpoint's position at will.
    """
    from .. import platform

    root = Path(run_root)
    scratch = platform.scratch_dir(f"{root.name}-train-{fingerprint}")
    return scratch if scratch is not None else root / CORPUS / f"train-{fingerprint}"


def run_token() -> str:
    """A name all ranks of this launch agree on (torchrun's run id), so none reads an earlier session's error."""
    return os.environ.get("TORCHELASTIC_RUN_ID", "local")


@dataclass(frozen=True)
class Stream:
    """What the producer needs and the readers agree on: the corpus settings, tokenizer, folder and part size."""

    corpus: dict[str, Any]  # CorpusConfig as a dict
    model_file: str
    root: str
    fingerprint: str
    block_len: int
    part_blocks: int
    workers: int = 1
    ahead: int = 2
    cleaning: bool = True  # False: the sources hold already-cleaned text (benchmarks)

    def store(self) -> PartStore:
        return PartStore(self.root, self.fingerprint, self.block_len, self.part_blocks)


# ---------------------------------------------------------------- the producer process


class _Consumed:
    """The part the trainer reads, as the watchdog thread hears it; the pipe's end stops the process."""

    def __init__(self, first: int, store: PartStore) -> None:
        self.value, self.store = first, store
        self.cond = threading.Condition()
        self.pool: Any = None  # the mixer's worker pool, stopped when the trainer is gone

    def listen(self) -> None:
        for line in sys.stdin.buffer:
            with contextlib.suppress(ValueError):
                k = int(line)
                # first delete what was read before the previous part, then let the next part start: the folder
                # never holds more than the previous, the current, `ahead` ready parts and the one being written
                self.store.remove(keep=lambda j, k=k: j >= k - 1)
                with self.cond:
                    self.value = max(self.value, k)
                    self.cond.notify_all()
        # the trainer closed the pipe or died: stop the workers and this process now
        if self.pool is not None:
            for proc in list(getattr(self.pool, "procs", [])):
                with contextlib.suppress(Exception):
                    proc.kill()
        os._exit(0)

    def wait_for(self, k: int, ahead: int) -> None:
        """Block until part k is at most `ahead` parts past the one being read."""
        with self.cond:
            while k > self.value + ahead:
                self.cond.wait()


def produce(spec: dict[str, Any], consumed: _Consumed | None = None, bar: Any = None) -> int:
    """Write the stream's parts from `spec["first"]` on; returns the index after the last part written.

    Parts that follow from the start position are kept as they are; the first that does not, and all after it,
    are made again. Stops after part `spec["last"]` (when given) or at the end of the stream.
    """
    stream = Stream(**spec["stream"])
    store = stream.store()
    store.clean()
    k, state = int(spec["first"]), spec["start"]
    last = spec.get("last")
    keep_from = k - 1 if consumed is not None else 0
    store.remove(keep=lambda j: j >= keep_from)
    while (last is None or k <= last) and (meta := store.meta(k)) is not None and same_state(meta["start"], state) \
            and store.dedup_count() >= meta["end"]["dedup"]:
        if meta["last"]:
            return k + 1
        state, k = meta["end"], k + 1
    store.remove(keep=lambda j: j < k)  # from another history: made again
    cfg = CorpusConfig(**stream.corpus)
    hashes = store.read_dedup(state["dedup"]) if cfg.dedup else None
    with Mixer(cfg, model_file=stream.model_file, workers=stream.workers, state=state["sources"],
               dedup_hashes=hashes, cleaning=stream.cleaning) as mixer:
        if consumed is not None:
            consumed.pool = mixer.pool
        while last is None or k <= last:
            if consumed is not None:
                consumed.wait_for(k, stream.ahead)
            meta = store.write(k, mixer, bar)
            k += 1
            if meta["last"]:
                break
    return k


def main(argv: list[str] | None = None) -> int:
    """The producer process's body: `main([SPEC.json])` (`Producer` starts it, see ENTRY)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's; it closes the pipe, which stops this
    with contextlib.suppress(OSError):  # its workers inherit it; it works ahead, the trainer waits on nothing
        os.nice(PRODUCER_NICE)
    # the pipe's end stops this process; a copy of its write end in another child of the trainer (a later fork)
    # would keep it open, so the trainer's death is also watched directly
    bind_to_parent(os.getppid(), from_main_thread=False)
    spec_path = Path((argv if argv is not None else sys.argv[1:])[0])
    spec = read_json(spec_path)
    stream = Stream(**spec["stream"])
    consumed = _Consumed(int(spec["first"]), stream.store())
    threading.Thread(target=consumed.listen, name="trainer", daemon=True).start()
    try:
        produce(spec, consumed)
    except BaseException as err:  # noqa: BLE001 - written for the trainers, who raise it
        atomic_write_text(Path(stream.root) / spec["error_file"], json.dumps(
            {"type": type(err).__name__, "message": str(err)}, ensure_ascii=False))
        raise
    return 0


class Producer:
    """The trainer's handle on a producer process."""

    def __init__(self, stream: Stream, first: int, start: dict[str, Any], last: int | None = None) -> None:
        root = Path(stream.root)
        root.mkdir(parents=True, exist_ok=True)
        self.error_file = root / f"error-{run_token()}.json"
        for old in root.glob("error-*.json"):  # an earlier session's error is not this one's
            old.unlink(missing_ok=True)
        spec = {"stream": dataclasses.asdict(stream), "first": first, "start": start, "last": last,
                "error_file": self.error_file.name}
        spec_path = root / "producer.json"
        atomic_write_text(spec_path, json.dumps(spec, ensure_ascii=False))
        self.log_path = root / "producer.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        package_root = str(Path(__file__).resolve().parents[2])  # the producer imports this very nbhelpers
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", ENTRY, str(spec_path)], stdin=subprocess.PIPE,
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        self.first = first

    def tell(self, k: int) -> None:
        """Tell the producer that part k is the first still being read."""
        with contextlib.suppress(OSError, ValueError):  # it has ended: its exit is looked at when a part is missing
            self.proc.stdin.write(f"{k}\n".encode())
            self.proc.stdin.flush()

    def poll(self) -> int | None:
        return self.proc.poll()

    def log_tail(self, lines: int = 12) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Close the pipe (the producer stops at once) and reap it."""
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen) -> None:
    """Close a producer's pipe (it stops at once) and reap it; killed when it has not ended in 30 s."""
    with contextlib.suppress(OSError, ValueError):
        proc.stdin.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------- setting a stream up


def corpus_stream(corpus: CorpusConfig, tokenizer_dir: str | os.PathLike, corpus_dir: str | os.PathLike,
                  root: str | os.PathLike, *, workers: int = 1) -> tuple[Stream, dict[str, Any], np.ndarray]:
    """The training stream of a built corpus: (Stream writing to `root`, start state, duplicate hashes at the start).

    Checks that the corpus was built with these stream settings and this tokenizer.
    """
    from ..tokenizer import tokenizer_hash
    from .build import fingerprint, part_blocks, train_start
    from .reader import CorpusMissing

    manifest, start, hashes = train_start(corpus_dir)
    cleaning = manifest.get("cleaning", True)
    fp = fingerprint(corpus, tokenizer_hash(tokenizer_dir), cleaning)
    if manifest["fingerprint"] != fp:
        raise CorpusMissing(f"{corpus_dir}: built with other corpus settings or another tokenizer than this run's "
                            "configuration; run notebooks/02_corpus again")
    stream = Stream(corpus=dataclasses.asdict(corpus), model_file=str(Path(tokenizer_dir) / SPM_FILE),
                    root=str(root), fingerprint=fp, block_len=int(manifest["block_len"]),
                    part_blocks=part_blocks(corpus), workers=workers, ahead=corpus.parts_ahead, cleaning=cleaning)
    return stream, start, hashes


def make_parts(stream: Stream, start: dict[str, Any], hashes: np.ndarray, parts: int, bar: Any = None
               ) -> list[dict[str, Any]]:
    """Make the stream's first `parts` parts in this process (parts already there that fit are kept)."""
    store = stream.store()
    store.ensure_dedup(hashes, stream.corpus.get("dedup", True))
    produce({"stream": dataclasses.asdict(stream), "first": 0, "start": start, "last": parts - 1}, bar=bar)
    return [m for k in range(parts) if (m := store.meta(k)) is not None]


def open_stream(cfg: RunConfig, run_root: str | os.PathLike, *, trainers: int = 1, workers: int | None = None
                ) -> tuple[Stream, dict[str, Any], np.ndarray, Any]:
    """The run's training stream: (Stream, start state, duplicate hashes at the start, token budget).

    The parts go to `parts_dir`; the producer runs `training_workers` processes unless `workers` says otherwise.
    """
    from ..tokenizer import tokenizer_hash
    from .build import fingerprint, token_budget
    from .reader import load_corpus

    root = Path(run_root)
    manifest = load_corpus(root / CORPUS).manifest
    fp = fingerprint(cfg.corpus, tokenizer_hash(root / TOKENIZER), manifest.get("cleaning", True))
    stream, start, hashes = corpus_stream(
        cfg.corpus, root / TOKENIZER, root / CORPUS, parts_dir(root, fp),
        workers=workers if workers is not None else training_workers(cfg.corpus.workers, trainers))
    return stream, start, hashes, token_budget(cfg, int(manifest["vocab_size"]))


def build_parts(cfg: RunConfig, run_root: str | os.PathLike, parts: int, progress: bool = True) -> list[dict[str, Any]]:
    """Make the stream's first `parts` parts now, in this process, on all cores (02: offline or CPU runs).

    They go to the run's parts folder, where 03's producer finds and uses them; returns their metadata.
    """
    from tqdm.auto import tqdm

    from .mixing import resolve_workers

    if parts < 1:
        return []
    stream, start, hashes, _ = open_stream(cfg, run_root, workers=resolve_workers(cfg.corpus.workers))
    with tqdm(total=parts * stream.part_blocks * stream.block_len, desc=f"corpus parts 1-{parts}", unit="tok",
              unit_scale=True, disable=not progress) as bar:
        return make_parts(stream, start, hashes, parts, bar)


def ready_parts(cfg: RunConfig, run_root: str | os.PathLike) -> list[int]:
    """Indices of the parts already in the run's parts folder (made ahead, or left by an earlier session)."""
    stream, *_ = open_stream(cfg, run_root)
    return stream.store().complete()
