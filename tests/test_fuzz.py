"""Fuzzing every reader: damaged copies of small valid files (bytes overwritten, the file cut
short, two tensors swapped under their names, a .keras archive's inner weights damaged) and
structural attacks on them (data stored in other files, declared-size bombs, impossible
shapes, integer dtypes: tests/fuzzing.ATTACKS, which must all be refused) are
read by `equiv.files.read` in a worker process (tests/fuzzing.py).

Each case must load a valid result (every canonical parameter, the right shapes, float32,
finite) or raise an EquivError whose message names the file: no other exception, no crash of
the interpreter (the worker would die), no hang (each case has CASE_TIMEOUT_S). Cases per
format: 5x the hypothesis profile's max_examples (ci: 30, thorough: 1000), or
EQUIV_FUZZ_EXAMPLES. With EQUIV_FUZZ_REPORT=FILE the counts and the distinct error messages
are written there (benchmarks/fuzz_readers.py does it for the quoted numbers).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from tests import fuzzing as F

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("EQUIV_FUZZ_EXAMPLES", "0")) or 5 * settings().max_examples


class Tally:
    def __init__(self):
        self.outcomes: dict[str, Counter] = defaultdict(Counter)
        self.kinds: dict[str, Counter] = defaultdict(Counter)
        self.messages: dict[str, Counter] = defaultdict(Counter)

    def add(self, fmt: str, kind: str, outcome: str, message: str | None = None) -> None:
        self.outcomes[fmt][outcome] += 1
        self.kinds[fmt][kind] += 1
        if message is not None:
            self.messages[fmt][message] += 1

    def to_json(self) -> dict:
        every = Counter()
        for m in self.messages.values():
            every.update(m)
        return {
            "examples_per_format": EXAMPLES,
            "formats": {fmt: {"cases": sum(c.values()), "outcomes": dict(c), "damage": dict(self.kinds[fmt]),
                              "distinct_messages": len(self.messages[fmt])}
                        for fmt, c in self.outcomes.items()},
            "cases": sum(sum(c.values()) for c in self.outcomes.values()),
            "distinct_messages": len(every),
            # the same with numbers (offsets, sizes, checksums) taken out too: kinds of message
            "distinct_message_kinds": len({re.sub(r"\d+", "N", m) for m in every}),
            "messages": dict(every.most_common()),
        }


@pytest.fixture(scope="module")
def tally():
    t = Tally()
    yield t
    out = os.environ.get("EQUIV_FUZZ_REPORT")
    if out:
        Path(out).write_text(json.dumps(t.to_json(), indent=2) + "\n")


@pytest.fixture(scope="module")
def worker():
    w = F.Worker(ROOT)
    yield w
    w.close()


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("valid")
    params = F.tiny_params()
    return {fmt: F.write_valid(fmt, folder / fmt, params) for fmt in F.FORMATS}


_EDITS = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8)


def damages(fmt: str) -> st.SearchStrategy:
    kinds = [
        st.tuples(st.just("flip"), st.integers(0, 1), _EDITS),
        st.tuples(st.just("truncate"), st.integers(0, 1), st.floats(0, 1, exclude_max=True)),
        st.tuples(st.just("swap"), st.integers(0, 63), st.integers(0, 63)),
    ]
    if fmt == "keras-archive":
        kinds.append(st.tuples(st.just("inner"), _EDITS, st.floats(0.01, 1)))
    kinds.append(st.tuples(st.just("struct"), st.sampled_from(sorted(F.ATTACKS[fmt])), st.integers(0, 63)))
    return st.one_of(kinds)


def damage(fmt: str, path: Path, how: tuple) -> None:
    kind = how[0]
    if kind in ("flip", "truncate"):
        parts = F.file_parts(fmt, path)
        part = parts[how[1] % len(parts)]
        F.flip(part, how[2]) if kind == "flip" else F.truncate(part, how[2])
    elif kind == "swap":
        F.swap(fmt, path, how[1], how[2])
    elif kind == "struct":
        F.attack(fmt, path, how[1], how[2])
    else:
        F.damage_inner(path, how[1], how[2])


@pytest.mark.parametrize("fmt", F.FORMATS)
def test_damaged_files_load_or_raise_equivs_own_error_naming_the_file(fmt, valid, worker, tally, tmp_path):
    assert worker.read(valid[fmt])["outcome"] == "loaded"  # the undamaged file is valid

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(how=damages(fmt))
    def case(how):
        folder = tmp_path / "case"
        shutil.rmtree(folder, ignore_errors=True)
        path = F.copy_case(fmt, valid[fmt], folder)
        damage(fmt, path, how)
        note(f"{fmt} damaged by {how}")
        try:
            answer = worker.read(path)
        except F.WorkerDied as e:
            tally.add(fmt, how[0], "crash or hang", str(e))
            raise AssertionError(f"{fmt} damaged by {how}: {e}") from None
        message = F.normalise(answer["message"], path) if answer["message"] else None
        tally.add(fmt, how[0] if how[0] != "struct" else f"struct:{how[1]}", answer["outcome"], message)
        assert answer["outcome"] in (("error",) if how[0] == "struct" else ("loaded", "error")), answer
        if answer["outcome"] == "error":
            assert str(path) in answer["message"], answer["message"]
            assert F.SECRET[:12].decode() not in answer["message"]

    case()
