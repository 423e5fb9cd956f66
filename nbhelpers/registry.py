"""The names a configuration may use, below `config` so it can check them: corpus sources and instruction data.

Reading them is `sources` (corpus text) and `sft` (instruction pairs); this module only says what each name is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Source:
    """One corpus: a hub dataset, local files, a bundled file or a generator."""

    name: str
    kind: str  # hub | files | bundled | arithmetic | debian
    location: str  # hub dataset id, file glob, bundled file name, or "" for generators
    config: str | None = None  # hub: the repository's configuration (README `configs:`) that `files` belong to
    revision: str | None = None  # hub git revision (pin it for reproducible corpora)
    split: str = "train"
    text_field: str = "text"  # the row's text: a field, or FIELD+FIELD joined by newlines (see hub_texts)
    math: bool = False  # math text is exempt from symbol thinning
    licence: str = ""
    description: str = ""
    files: str = ""  # hub: the split's data files in the repository (glob, {split} = split), read directly
    file_count: int = 0  # hub: `files` names file {index} of this many: that list is read, the folder never listed


# The report's four corpora plus the offline sources. Edit weights in CorpusConfig.mixture, not here.
#
# Hub entries read their data files directly (`files`, at a pinned revision where one is known) with datasets'
# parquet/json readers: no loading script runs (datasets>=4 refuses them), only the needed files are listed
# (not every configuration of a repository with hundreds), and a partial local copy reads the same way. What
# each entry relies on, as found on the hub (tests/test_hub_contracts.py builds local copies in these formats
# and reads them through open_hub):
# - wikimedia/wikipedia: parquet, README `configs:` map 20231101.ja to 20231101.ja/train-*, 15 files
#   train-000NN-of-00015.parquet; fields id, url, title, text. Public projects that download these files pin
#   this revision and these names.
# - hpprc/jawiki-books: parquet, one README config (path 2024-04-01/train-*, file train-00000-of-00001.parquet,
#   74 MB); fields id, url, title, text (and paragraphs). Repository tree and README at commit 337c80f on the
#   hub; not pinned: only that short id was found.
# - allenai/c4: gzipped JSON lines, config ja = multilingual/c4-ja.tfrecord-NNNNN-of-01024.json.gz (validation:
#   c4-ja-validation.tfrecord-NNNNN-of-00008.json.gz); fields text, timestamp, url. The viewer shows the config
#   ja; public projects download these file names. Not pinned: the history of multilingual/ ends at f1d4420
#   "mC4 3.1.0" (2023-04-11), whose full id was not found. multilingual/ holds every language's files (tens of
#   thousands): a glob lists all of them page by page, API calls the hub limits per IP (500 per 5 minutes
#   anonymously), so the 1024 names are built from that pattern and each file is fetched when it is read.
# - elyza/JaMARD: the repository ships JaMARD.py, so datasets>=4 refuses the repository whatever data_files or
#   config is passed (datasets' load.py checks for <name>.py first), and the hub has no parquet conversion of
#   it (its viewer is disabled: "requires arbitrary Python code execution"). Its data are plain parquet files,
#   data/{train,validation,test}.parquet (train 231,287,917 bytes at the pinned revision, as pinned by a public
#   project), in the script's `raw` form: gold_answer, instruction, responses, accuracy>0, accuracy,
#   true_responses, false_responses, answers, source (README_JA.md: raw train 17,897 questions). The script's
#   default `messages` form pairs each question with each verified answer (46,167 rows); we do the same from
#   the raw files: one document per distinct entry of true_responses, after its question.
# - kunishou/databricks-dolly-15k-ja: one JSON file (an array of objects) at the repository root, no configs;
#   fields instruction, input, output, category, index. Revision: the repository tree at 6391034.
REGISTRY: dict[str, Source] = {
    s.name: s
    for s in [
        Source("wikipedia_ja", "hub", "wikimedia/wikipedia", config="20231101.ja",
               revision="b04c8d1ceb2f5cd4588862100d08de323dccfbaa", files="20231101.ja/train-*.parquet",
               licence="CC BY-SA 4.0", description="Japanese Wikipedia, 2023-11-01 dump (about 1.4M articles)"),
        Source("wikibooks_ja", "hub", "hpprc/jawiki-books", revision="main", files="2024-04-01/train-*.parquet",
               licence="CC BY-SA 3.0", description="Japanese Wikibooks textbooks"),
        Source("c4_ja", "hub", "allenai/c4", config="ja", revision="main",
               files="multilingual/c4-ja.tfrecord-{index:05d}-of-01024.json.gz", file_count=1024,
               licence="ODC-BY", description="Japanese part of multilingual C4 (mC4), web text"),
        Source("jamard", "hub", "elyza/JaMARD", revision="82e107d209dec19e17a76d76425452c81b192755",
               files="data/{split}.parquet", text_field="instruction+true_responses", math=True,
               licence="MIT", description="JaMARD: Japanese math word problems, each with its verified "
               "chain-of-thought answers (read from its parquet files: its loading script is not run)"),
        # Instruction pairs for 04 (sft.data), not for the corpus mixture: text_field is PROMPT[+CONTEXT]>TARGET.
        Source("dolly_ja", "hub", "kunishou/databricks-dolly-15k-ja",
               revision="6391034b0126850543299cda071dc6281c31a6fb", files="databricks-dolly-15k-ja.json",
               text_field="instruction+input>output", licence="CC BY-SA 3.0",
               description="databricks-dolly-15k in Japanese: about 15k instruction/response pairs (for sft.data)"),
        Source("bundled_prose", "bundled", "prose_ja.jsonl", licence="Apache-2.0",
               description="Japanese prose written for this project (varied topics, tens of KB)"),
        Source("arithmetic", "arithmetic", "", math=True, licence="Apache-2.0",
               description="generated Japanese arithmetic word problems with worked answers"),
        Source("debian_ja", "debian", "/usr/share/debian-reference/*.ja.*", licence="GPL-2+ / various",
               description="Debian Reference (ja) and Japanese man pages from Debian packages"),
    ]
}


class SourceError(RuntimeError):
    """A source that cannot be read: the message names the source and the reason."""


def resolve(name: str) -> Source:
    """A registry name, or `files:GLOB` for local .txt / .jsonl / .parquet files (optionally `#field`)."""
    if name.startswith("files:"):
        pattern, _, field = name[len("files:"):].partition("#")
        return Source(name, "files", pattern, text_field=field or "text", description=f"local files {pattern}")
    if name not in REGISTRY:
        raise SourceError(f"unknown source {name!r}; known: {', '.join(REGISTRY)} (or files:GLOB)")
    return REGISTRY[name]


def registry_table() -> list[dict[str, Any]]:
    """The registry as rows for a notebook table."""
    return [{"name": s.name, "kind": s.kind, "location": s.location, "config": s.config, "revision": s.revision,
             "files": s.files, "text_field": s.text_field, "math": s.math, "licence": s.licence,
             "description": s.description}
            for s in REGISTRY.values()]


# ---------------------------------------------------------------- instruction data names (sft.data)

BUNDLED_INSTRUCTIONS = "bundled_instructions"  # the project's own pairs (data/instructions_ja.jsonl)
ARITHMETIC_INSTRUCTIONS = "arithmetic_instructions"  # generated arithmetic problems with their answers


class InstructionDataError(ValueError):
    """Instruction data that cannot be used: the message names the file (or dataset) and line (or row)."""


def hub_fields(spec: str, name: str) -> tuple[list[str], str]:
    """'instruction+input>output' -> (['instruction', 'input'], 'output'); 'messages' (one field) -> ([], 'messages'),
    a column of conversations ([{"role", "content"}, ...]) tuned through the chat template."""
    if spec and ">" not in spec and "+" not in spec:
        return [], spec
    if ">" not in spec:
        raise InstructionDataError(f"{name}: an instruction dataset needs fields as PROMPT[+CONTEXT]>TARGET (for "
                                   f"example instruction+input>output) or one messages field, got {spec!r}")
    left, target = spec.split(">", 1)
    prompt_fields = [f for f in left.split("+") if f]
    if not prompt_fields or not target:
        raise InstructionDataError(f"{name}: bad field spec {spec!r}; expected PROMPT[+CONTEXT]>TARGET")
    return prompt_fields, target


def instruction_source(name: str) -> Source:
    """`hub:ID[@CONFIG]#FIELDS` or a registry entry of kind hub whose text_field is the field spec."""
    if name.startswith("hub:"):
        location, _, spec = name[4:].partition("#")
        location, _, config = location.partition("@")
        return Source(name, "hub", location, config=config or None, text_field=spec or "prompt>target")
    try:
        src = resolve(name)
    except SourceError as err:
        raise InstructionDataError(f"{err}; for instructions also {BUNDLED_INSTRUCTIONS}, {ARITHMETIC_INSTRUCTIONS}, "
                                   "files:GLOB (JSONL of prompt/target or messages) or hub:ID#PROMPT>TARGET (or "
                                   "hub:ID#MESSAGES)") from None
    if src.kind != "hub" or ">" not in src.text_field:
        raise InstructionDataError(f"source {name!r} is a text corpus, not an instruction dataset (its fields "
                                   f"{src.text_field!r} name no PROMPT>TARGET)")
    return src


def data_name_problem(name: str) -> str | None:
    """What is wrong with an `sft.data` name, without reading any data (config checks it at load), or None."""
    if name in (BUNDLED_INSTRUCTIONS, ARITHMETIC_INSTRUCTIONS) or name.startswith("files:") \
            or name.endswith((".jsonl", ".jsonl.gz")):
        return None
    try:
        src = instruction_source(name)
        hub_fields(src.text_field, src.name)
    except InstructionDataError as err:
        return str(err)
    return None
