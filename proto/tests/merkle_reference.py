#!/usr/bin/env python3
"""The database hash and its proofs, worked out from docs/merkle.md alone.

A third party's view of the construction: nothing here comes from the Rust code.
proto/tests/merkle.rs runs this and holds the implementation to what it prints.

Input: none. Output (JSON on stdout): the root of a trie of N slots, a proof of
presence for one of them and a proof of absence for a slot that is not there, in
the `get --proof` format, and the slot hash of one (author, kind, key).
"""
import hashlib
import json

EMPTY = bytes(32)


def H(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def nibble(s, i):
    b = s[i // 2]
    return b >> 4 if i % 2 == 0 else b & 0x0F


def subtree(pairs, d):
    """T(S, d) of docs/merkle.md, for pairs sharing their first d nibbles."""
    if not pairs:
        return EMPTY
    if len(pairs) == 1:
        (s, i), = pairs
        return H(b"\x00", s, i)
    return H(b"\x01", *children(pairs, d))


def children(pairs, d):
    return [subtree([p for p in pairs if nibble(p[0], d) == n], d + 1) for n in range(16)]


def prove(pairs, s):
    """Branches on the path of s, then the leaf the path ends at (or none)."""
    branches, d, under = [], 0, pairs
    while len(under) >= 2:
        branches.append([c.hex() for c in children(under, d)])
        under = [p for p in under if nibble(p[0], d) == nibble(s, d)]
        d += 1
    leaf = {"slot": under[0][0].hex(), "id": under[0][1].hex()} if under else None
    return {"branches": branches, "leaf": leaf}


def u64(i):
    return i.to_bytes(8, "big")


# The same slots and ids as the Rust test: SHA-256 of i and of i + 10000, as u64 BE.
N = 300
pairs = [(H(u64(i)), H(u64(i + 10_000))) for i in range(N)]
present = pairs[42][0]
absent = H(u64(99_999))
# An absent slot whose path ends at another slot's leaf (the other kind of absence).
j = 100_000
while prove(pairs, H(u64(j)))["leaf"] is None:
    j += 1
absent_at_leaf = H(u64(j))
author = bytes(range(32))
print(
    json.dumps(
        {
            "root": subtree(pairs, 0).hex(),
            "present": {"slot": present.hex(), "proof": prove(pairs, present)},
            "absent": {"slot": absent.hex(), "proof": prove(pairs, absent)},
            "absent_at_leaf": {"slot": absent_at_leaf.hex(), "proof": prove(pairs, absent_at_leaf)},
            "slot_hash": {
                "author": author.hex(),
                "kind": 1,
                "key": "film",
                "hash": H(b"cirrus-slot-v1", bytes([1]), author, b"film").hex(),
            },
        }
    )
)
