"""Near-duplicate detection with MinHash LSH (the ``datasketch`` library).

Texts are lower-cased, reduced to their words, and cut into character (default)
or word n-gram shingles (a text shorter than n is one shingle). Character
shingles suit short texts: one edited word changes few of them. MinHash signatures are computed in bulk; an LSH index
proposes candidate pairs, and each candidate is confirmed with the estimated
Jaccard similarity from the signatures before two rows are joined. Rows are
grouped with union-find, so A~B and B~C put A, B and C in one group even when
A and C are further apart: exactly what must not be split across train and
test.
"""

from __future__ import annotations

import re

import numpy as np

_WORD = re.compile(r"\w+")


def shingles(text: str, n: int, kind: str = "chars") -> set[bytes]:
    """Character or word n-grams of the lower-cased words of ``text`` (punctuation dropped)."""
    words = _WORD.findall(text.lower())
    if kind == "words":
        if len(words) <= n:
            return {" ".join(words).encode()}
        return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}
    flat = " ".join(words)
    if len(flat) <= n:
        return {flat.encode()}
    return {flat[i : i + n].encode() for i in range(len(flat) - n + 1)}


def signatures(texts: list[str], n: int, num_perm: int, kind: str = "chars", seed: int = 1):
    """MinHash signatures; shingles are hashed with xxh32 (deterministic, and twice as fast as sha1 here)."""
    import xxhash
    from datasketch import MinHash

    return MinHash.bulk(
        [shingles(t, n, kind) for t in texts], num_perm=num_perm, seed=seed, hashfunc=xxhash.xxh32_intdigest
    )


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # the earlier row stays the representative
            self.parent[max(ra, rb)] = min(ra, rb)


def near_duplicate_groups(
    texts: list[str], threshold: float = 0.6, n: int = 5, num_perm: int = 128, kind: str = "chars"
) -> list[int]:
    """For each text, the index of the first text of its near-duplicate group (itself if it has none)."""
    from datasketch import MinHashLSH

    if not texts:
        return []
    sigs = signatures(texts, n, num_perm, kind)
    hashes = np.stack([s.hashvalues for s in sigs])
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    uf = _UnionFind(len(texts))
    with lsh.insertion_session() as session:
        for i, s in enumerate(sigs):
            session.insert(i, s, check_duplication=False)
    for i, s in enumerate(sigs):
        root = uf.find(i)
        cands = [j for j in lsh.query(s) if j < i and uf.find(j) != root]
        if cands:
            # confirm with the signatures' Jaccard estimate, all candidates at once
            similar = (hashes[cands] == hashes[i]).mean(axis=1) >= threshold
            for j in np.asarray(cands)[similar]:
                uf.union(i, int(j))
    return [uf.find(i) for i in range(len(texts))]


def jaccard(a: str, b: str, n: int = 5, kind: str = "chars") -> float:
    """Exact Jaccard similarity of two texts' shingle sets (for tests and reports)."""
    sa, sb = shingles(a, n, kind), shingles(b, n, kind)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def cross_matches(
    reference: list[str], queries: list[str], threshold: float = 0.6, n: int = 5, num_perm: int = 128,
    kind: str = "chars", slack: float = 0.2,
) -> list[tuple[int, int, float]]:
    """(query index, reference index, exact Jaccard) for each query with a near-twin in ``reference``.

    Candidates come from an LSH index tuned ``slack`` below the threshold, so a true twin is
    very unlikely to be missed; each candidate is then confirmed with the exact Jaccard of the
    shingle sets, so nothing is flagged on an estimate.
    """
    from datasketch import MinHashLSH

    if not reference or not queries:
        return []
    lsh = MinHashLSH(threshold=max(0.05, threshold - slack), num_perm=num_perm)
    ref_sigs = signatures(reference, n, num_perm, kind)
    ref_hashes = np.stack([s.hashvalues for s in ref_sigs])
    with lsh.insertion_session() as session:
        for i, s in enumerate(ref_sigs):
            session.insert(i, s, check_duplication=False)
    ref_sh = {}
    out = []
    for qi, (text, sig) in enumerate(zip(queries, signatures(queries, n, num_perm, kind))):
        cands = lsh.query(sig)
        if not cands:
            continue
        # the signature estimate prunes clear misses (its error is about 0.04 at 128 permutations) ...
        cands = np.asarray(cands)
        cands = cands[(ref_hashes[cands] == sig.hashvalues).mean(axis=1) >= threshold - slack]
        q_sh = shingles(text, n, kind)
        best = None
        for ri in cands.tolist():  # ... and the exact Jaccard decides
            if ri not in ref_sh:
                ref_sh[ri] = shingles(reference[ri], n, kind)
            j = len(q_sh & ref_sh[ri]) / len(q_sh | ref_sh[ri])
            if j >= threshold and (best is None or j > best[1]):
                best = (ri, j)
        if best is not None:
            out.append((qi, best[0], best[1]))
    return out
