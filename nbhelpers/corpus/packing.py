"""Pack token documents (each ending with EOS) into fixed-length blocks written as uint16 shards.

Rule for the end of a shard: a shard holds exactly `blocks` full blocks; the document that crosses the
end of the last block is cut there, the rest of it is dropped (counted in `tail_tokens_dropped`), and the
next shard starts with the next document. Nothing is padded.
"""

from __future__ import annotations

from collections import deque
from typing import BinaryIO

import numpy as np

from ..layout import MAX_VOCAB as MAX_VOCAB
from ..layout import TOKEN_DTYPE as DTYPE  # re-exported: the ids' type on disk


class VocabTooLarge(ValueError):
    """A tokenizer whose ids do not fit the shard dtype."""


def check_vocab(vocab_size: int) -> None:
    """Raise before anything is written when token ids would not fit uint16."""
    if vocab_size > MAX_VOCAB:
        raise VocabTooLarge(f"tokenizer vocabulary of {vocab_size} does not fit uint16 shards (at most {MAX_VOCAB} "
                            "ids); train a smaller tokenizer (tokenizer.vocab_size <= 65536)")


class BlockWriter:
    """Copies documents into a fixed buffer and writes whole blocks to `fh`; memory is the buffer only.

    `fh` is a binary file open for writing (files.atomic_file: the shard appears whole or not at all).
    """

    def __init__(self, fh: BinaryIO, block_len: int, blocks: int, buffer_tokens: int = 1 << 20) -> None:
        if block_len <= 0 or blocks <= 0:
            raise ValueError(f"block_len and blocks must be positive, got {block_len} and {blocks}")
        self.fh = fh
        self.block_len = block_len
        self.target = blocks * block_len  # tokens this shard will hold
        self.buf = np.empty(max(block_len, buffer_tokens // block_len * block_len), dtype=DTYPE)  # (n * block_len,)
        self.pos = 0
        self.written = 0  # tokens already on disk
        self.documents = 0
        self.tail_dropped = 0
        self.tokens_by_source: dict[str, int] = {}
        self.recent: deque = deque(maxlen=block_len)  # the last runs (of one token or more): enough for one block

    @property
    def full(self) -> bool:
        return self.written + self.pos >= self.target

    @property
    def tokens(self) -> int:
        return self.written + self.pos

    def add(self, doc: np.ndarray, source: str = "", docs: int = 1) -> int:
        """Append the tokens of `docs` documents of one source (each ending with EOS); returns how many were taken.

        Fewer are taken at the end of the shard: the rest of the last document is dropped (a run passed here
        must end with the document that crosses the end, as `Mixer.take` does).
        """
        pos = self.pos
        room = self.target - self.written - pos
        n = len(doc)
        take = n if n <= room else room
        if pos + take < len(self.buf):  # the common case: the document fits in the buffer
            self.buf[pos:pos + take] = doc[:take]
            self.pos = pos + take
        else:
            done = 0
            while done < take:
                k = min(take - done, len(self.buf) - self.pos)
                self.buf[self.pos:self.pos + k] = doc[done:done + k]
                self.pos += k
                done += k
                if self.pos == len(self.buf):
                    self._flush()
        self.documents += docs
        self.tail_dropped += n - take
        by_source = self.tokens_by_source
        by_source[source] = by_source.get(source, 0) + take
        self.recent.append((source, take))
        return take

    def _flush(self) -> None:
        self.buf[:self.pos].tofile(self.fh)
        self.written += self.pos
        self.pos = 0

    def finish(self) -> int:
        """Write what remains (whole blocks: a stream that ended early loses its partial block); returns the blocks."""
        partial = (self.written + self.pos) % self.block_len
        self.pos -= partial
        self.tail_dropped += partial
        for source, take in reversed(self.recent):  # give the cut tokens back to the documents they came from
            cut = min(take, partial)
            self.tokens_by_source[source] -= cut
            partial -= cut
            if not partial:
                break
        self._flush()
        if self.written % self.block_len:
            raise AssertionError("BlockWriter wrote a partial block")  # unreachable: target is a block multiple
        return self.written // self.block_len
