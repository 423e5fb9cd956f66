"""XLA programs compiled by evaluation and by a resumed session, on torch_xla's CPU PJRT device.

    PJRT_DEVICE=CPU python bench/xla_compiles.py            (in the XLA venv: bash .ci/xla.sh makes one)

Table 1, evaluation: lm-eval's JCommonsenseQA (log-likelihood) and JSQuAD (generation) over 1, 2 and 4 local
examples, through lm-eval's own HFLM (a new program per batch width and per generated token) and through
nbhelpers' FixedShapeLM (one per width bucket): programs compiled and values read from the device, per run.
Table 2, the persistent compilation cache: the same 4 training steps in two fresh processes sharing a run
directory; the second looks every program up in RUN_DIR/xla_cache. A TPU loads them; the CPU PJRT client
cannot deserialize executables (torch_xla 2.8: "UNIMPLEMENTED: Deserializing serialized executable not
supported"), so here the second process finds every entry and compiles it again.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PJRT_DEVICE", "CPU")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _model_and_tokenizer():
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    from nbhelpers import evaluation as ev
    from nbhelpers.evaluation import harness

    data = harness.LOCAL_TASK_DIR / "data"
    texts = ev.heldout_prose() + [(data / f"{n}.json").read_text(encoding="utf-8") for n in harness.LOCAL_FIELDS]
    tok = Tokenizer(models.Unigram())
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizers.NFKC(), pre_tokenizers.Metaspace(), decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=900, unk_token="<unk>",
                                                           special_tokens=["<unk>", "<s>", "</s>", "<pad>"]))
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                              eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(0)
    cfg = transformers.GPTNeoXConfig(vocab_size=len(hf), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=256, eos_token_id=hf.eos_token_id,
                                     bos_token_id=hf.bos_token_id, pad_token_id=hf.pad_token_id)
    cfg._attn_implementation = "eager"
    return transformers.GPTNeoXForCausalLM(cfg).eval(), hf


def evaluation_table() -> list[str]:
    from nbhelpers import config, xla
    from nbhelpers import evaluation as ev

    model, tok = _model_and_tokenizer()
    device, _ = ev.eval_device(config.load("smoke", ["train.backend=xla"]))
    rows = ["| task | scorer | examples | programs compiled | device reads | seconds |", "|---|---|---|---|---|---|"]
    for task in ("ja_leaderboard_jcommonsenseqa", "ja_leaderboard_jsquad"):
        for fixed in (False, True):
            xmodel = copy.deepcopy(model).to(device)  # a fresh model: programs of the other scorer do not count
            for limit in (1, 2, 4):
                before, start = xla.counters(), time.perf_counter()
                scorer = "FixedShapeLM" if fixed else "lm-eval HFLM"
                try:
                    ev.run_lm_eval(xmodel, tok, tasks=[task], local=True, limit=limit, batch_size=4,
                                   max_gen_toks=16, fixed_shapes=fixed)
                except Exception as err:  # lm-eval's own generation fails on XLA: the table says how
                    rows.append(f"| {task.split('_')[-1]} | {scorer} | {limit} | fails: {type(err).__name__}: "
                                f"{str(err)[:80]} | | |")
                    break
                used = xla.counters() - before
                rows.append(f"| {task.split('_')[-1]} | {scorer} | {limit} | {used.compiles} | "
                            f"{used.transfers_from_device} | {time.perf_counter() - start:.1f} |")
    return rows


def cache_table() -> list[str]:
    rows = ["| process | programs compiled | written to the cache | found in the cache | loaded | seconds |",
            "|---|---|---|---|---|---|"]
    env = dict(os.environ, PJRT_DEVICE="CPU", CPU_NUM_DEVICES="1", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as run_dir:
        for name in ("first", "second"):
            proc = subprocess.run([sys.executable, str(ROOT / "tests" / "xla" / "tiny.py"), run_dir, "--cache-suite",
                                   f"stage_{name}"], env=env, capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            found = r["hits"] + r["deserialize_failures"]
            rows.append(f"| {name} | {r['compiles']} | {r['misses']} | {found} | {r['hits']} | {r['seconds']:.1f} |")
    return rows


if __name__ == "__main__":
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}\n")
    print("\n".join(evaluation_table()))
    print()
    print("\n".join(cache_table()))
