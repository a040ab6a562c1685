"""Duplicates: exact ones by a digest of the normalised conversation, near ones by MinHash/LSH (datasketch).

Both keep the first conversation in reading order and drop the later ones, so the result is the same on every run.
The exact check keeps 16 bytes per conversation; the near check about 1 kB (its LSH tables), which is why it is off
unless ``data.near_duplicates`` sets a threshold.
"""

from __future__ import annotations

import hashlib
import re

_WORD = re.compile(r"\w+")
NUM_PERM = 128
SHINGLE = 3  # words per shingle: chat turns are short, so 3-grams rather than the 5-grams used for web pages


def conversation_key(messages: list[dict[str, str]]) -> bytes:
    """16 bytes standing for the normalised conversation (roles and texts, separated by control characters that
    repaired text never holds, so two different conversations cannot join into the same string)."""
    h = hashlib.blake2b(digest_size=16)
    for m in messages:
        h.update(f"{m['role']}\x1f{m['content']}\x1e".encode("utf-8", "surrogatepass"))
    return h.digest()


class ExactDuplicates:
    def __init__(self) -> None:
        self.seen: set[bytes] = set()

    def seen_before(self, messages: list[dict[str, str]]) -> bool:
        key = conversation_key(messages)
        if key in self.seen:
            return True
        self.seen.add(key)
        return False


def shingles(text: str) -> set[bytes]:
    words = _WORD.findall(text.lower())
    if len(words) < SHINGLE:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + SHINGLE]).encode() for i in range(len(words) - SHINGLE + 1)}


def _xxh32(data: bytes) -> int:
    import xxhash

    return xxhash.xxh32_intdigest(data)  # fixed seed 0: the same hashes on every machine and run


class NearDuplicates:
    """Drops a conversation whose estimated Jaccard similarity (word 3-grams) to an earlier one is >= threshold."""

    def __init__(self, threshold: float, num_perm: int = NUM_PERM) -> None:
        from datasketch import MinHashLSH

        self.threshold, self.num_perm = threshold, num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.count = 0

    def signature(self, text: str):
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm, seed=1, hashfunc=_xxh32)
        m.update_batch(list(shingles(text)))
        return m

    def seen_before(self, messages: list[dict[str, str]]) -> bool:
        m = self.signature("\n".join(msg["content"] for msg in messages))
        if self.lsh.query(m):
            return True
        self.lsh.insert(self.count, m, check_duplication=False)
        self.count += 1
        return False
