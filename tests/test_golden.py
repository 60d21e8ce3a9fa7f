"""Golden outputs: the stored taps verify today, a moved tap is named, update says what changed,
and a missing, damaged or outdated golden file is a clear error, never a silent pass."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from equiv import canonical as C
from equiv import compare, golden, golden_file, weights
from equiv import variants as V
from equiv.errors import EquivError, UnknownVariantError
from equiv.frameworks import FRAMEWORKS

SMALL = "torchvision/resnet18"


def equiv(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "equiv.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def copy_golden(tmp_path, name=SMALL):
    """A private copy of the stored golden file of `name`, in a golden folder under tmp_path."""
    v = V.get(name)
    dst = golden.path_for(tmp_path, v)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(golden.path_for(golden.DEFAULT_DIR, v), dst)
    return dst


def rewrite(path, change_taps=None, change_meta=None, fingerprint=None):
    """Decode a golden file, change it, encode it back in place (through the library's own codec)."""
    g = golden.read(path)
    if change_taps:
        change_taps(g.taps)
    if change_meta:
        change_meta(g.meta)
    path.write_bytes(golden.encode(g.meta, g.input, g.fingerprint if fingerprint is None else fingerprint, g.taps))


def plant(taps, fw, tap, rel):
    """Move one element in the middle of a stored tap by `rel` times the tap's scale."""
    a = taps[fw][tap].copy()
    flat = a.reshape(-1)
    flat[flat.size // 2] += np.float32(rel * np.abs(a).max())
    taps[fw][tap] = a


# ---------------------------------------------------------------------------------------
# verify


def test_stored_golden_files_verify_today():
    report = golden.verify([SMALL, "slim/resnet_v2_50"])
    assert report.exit_status == 0, golden.to_text(report)
    for verdict in report.verdicts:
        v = V.get(verdict.variant)
        assert verdict.status == "unchanged" and verdict.frameworks == ["slim", "keras", "torch"]
        assert len(verdict.taps) == 3 * len(C.tap_names(v))
        tols = compare.tap_tolerances(v)
        assert all(r.rel <= tols[r.name] for r in verdict.taps)
        for fw in verdict.frameworks:  # the drift of each framework is reported even when it is within tolerance
            assert verdict.worst(fw).rel <= verdict.worst(fw).tol
    text = golden.to_text(report)
    assert SMALL in text and text.count("today: python") == 1 and "\nmachine: " in text
    assert "\ntime: " in text and "of tol" in text
    drift = report.largest_drift()
    if all(rel == 0 for rel, _, _ in drift.values()):  # the same machine kind: every tap bit for bit
        assert "largest drift: 0 (every tap of every framework bit for bit as stored)" in text
    else:
        assert "largest drift: slim" in text


def test_every_registered_variant_has_a_golden_file_of_its_description():
    """Cheap (no framework runs): a variant added or changed in the registry needs `equiv golden update`."""
    for v in V.all_variants():
        g = golden.read(golden.path_for(golden.DEFAULT_DIR, v))
        assert golden.describes_other(v, g) is None, v.name
        assert set(g.taps) == set(FRAMEWORKS) and g.meta["frameworks"][0] == v.native
        assert g.meta["versions"]["keras"]["backend"] == "tensorflow"
        assert {"python", "numpy", "platform", "cpu", "cpus", "threads"} <= set(g.meta["environment"])
        assert any(p["api"] == "openblas" and p["kernel"] and p["threads"] for p in g.meta["environment"]["threads"])
        assert g.meta["command"] and g.meta["weights"]["generator"] == weights.GENERATOR


def test_fixtures_stay_under_20_mb():
    root = golden.DEFAULT_DIR.parent
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) < 20e6


def test_a_perturbed_stored_tap_is_named_by_variant_framework_and_tap(tmp_path):
    path = copy_golden(tmp_path)
    tol = compare.tap_tolerances(V.get(SMALL))
    small = 0.3 * tol["stage2/unit2"]

    def perturb(taps):
        plant(taps, "keras", "stage3/unit1/conv2", 1e-3)  # far beyond tolerance
        plant(taps, "torch", "stage2/unit2", small)  # within tolerance: reported as drift, not as a move

    rewrite(path, perturb)
    out = tmp_path / "report.json"
    r = equiv("golden", "verify", SMALL, "--fixtures", str(tmp_path), "--json", str(out), "-q")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"moved: {SMALL} keras stage3/unit1/conv2: relative error" in r.stdout
    assert "keras moved at 1 of 36 taps, first stage3/unit1/conv2" in r.stdout
    data = json.loads(out.read_text())
    (verdict,) = data["variants"]
    assert verdict["variant"] == SMALL and verdict["status"] == "moved"
    assert [(m["framework"], m["tap"]) for m in verdict["moved"]] == [("keras", "stage3/unit1/conv2")]
    assert 9e-4 < verdict["moved"][0]["rel"] < 1.1e-3
    assert verdict["worst"]["torch"]["tap"] == "stage2/unit2"
    assert verdict["worst"]["torch"]["rel"] == pytest.approx(small, rel=0.1)
    assert verdict["worst"]["slim"]["rel"] <= verdict["worst"]["slim"]["tol"]
    assert data["largest_drift"]["keras"]["tap"] == "stage3/unit1/conv2" and data["exit_status"] == 1


def test_a_missing_golden_file_is_a_clear_error(tmp_path):
    report = golden.verify([SMALL], directory=tmp_path)
    (verdict,) = report.verdicts
    assert verdict.status == "missing" and report.exit_status == 2
    assert str(golden.path_for(tmp_path, V.get(SMALL))) in verdict.message
    assert f"equiv golden update {SMALL}" in verdict.message
    r = equiv("golden", "verify", SMALL, "--fixtures", str(tmp_path), "-q")
    assert r.returncode == 2 and f"without a usable golden file: {SMALL}" in r.stderr
    assert "MISSING" in r.stdout
    r = equiv("golden", "verify", "torchvision/resnet19", "--fixtures", str(tmp_path))
    assert r.returncode == 2 and "unknown variant 'torchvision/resnet19'" in r.stderr
    with pytest.raises(UnknownVariantError):
        golden.verify(["resnet19"], directory=tmp_path)


@pytest.mark.parametrize("change, expected", [
    (lambda meta: meta["variant"]["conventions"].update(bn_epsilon=1e-3),
     "1 convention(s) differ (first: bn_epsilon stored 0.001, now 1e-05)"),
    (lambda meta: meta["variant"]["param_shapes"].update({"logits/bias": [999]}),
     "parameter logits/bias was (999,), is now (1000,)"),
    (lambda meta: meta["variant"].update(name="torchvision/resnet34"),
     f"is the golden file of torchvision/resnet34, not {SMALL}"),
], ids=["convention", "parameter shape", "name"])
def test_a_golden_file_of_another_description_is_stale(tmp_path, change, expected):
    path = copy_golden(tmp_path)
    rewrite(path, change_meta=change)
    report = golden.verify([SMALL], directory=tmp_path)
    (verdict,) = report.verdicts
    assert verdict.status == "stale" and report.exit_status == 2
    assert expected in verdict.message and str(path) in verdict.message
    assert not verdict.taps  # no framework was run against a file that describes another network


def test_weights_of_another_generator_are_stale_and_update_is_suggested(tmp_path):
    path = copy_golden(tmp_path)
    fp = golden.read(path).fingerprint.copy()
    fp[5] *= 1.01  # the sixth parameter in canonical order

    def older_generator(meta):
        meta["weights"] = {"generator": "he-float32-calibration/1", "sha256": "0" * 64}

    rewrite(path, change_meta=older_generator, fingerprint=fp)
    (verdict,) = golden.verify([SMALL], directory=tmp_path).verdicts
    assert verdict.status == "stale" and not verdict.taps
    # relative to the stored value: 0.01 / 1.01
    assert f"(first {list(C.param_shapes(V.get(SMALL)))[5]}, relative change 9.9e-03)" in verdict.message
    assert f"weight generator he-float32-calibration/1 -> {weights.GENERATOR}" in verdict.message
    assert f"regenerate with `equiv golden update {SMALL}` and commit the file" in verdict.message


def test_weights_that_differ_on_this_machine_are_a_bug_not_an_update(tmp_path):
    """Same generator, same numpy, other bits: the machine leaked into the weights. Regenerating
    would hide it, so update is not suggested."""
    path = copy_golden(tmp_path)

    def other_bits(meta):
        meta["weights"]["sha256"] = "0" * 64
        meta["environment"]["cpu"] = "AMD EPYC 9999"

    rewrite(path, change_meta=other_bits)
    (verdict,) = golden.verify([SMALL], directory=tmp_path).verdicts
    assert verdict.status == "stale"
    assert "(the fingerprint agrees, the bits do not)" in verdict.message
    assert f"the weight generator ({weights.GENERATOR}) and numpy ({np.__version__}) are the same" in verdict.message
    assert "made on AMD EPYC 9999" in verdict.message and "bug of equiv's" in verdict.message
    assert "regenerate with" not in verdict.message


def test_other_settings_are_stale(tmp_path):
    path = copy_golden(tmp_path)
    rewrite(path, change_meta=lambda meta: meta["settings"].update(sample=256))
    (verdict,) = golden.verify([SMALL], directory=tmp_path).verdicts
    assert verdict.status == "stale"
    assert "input or sampling settings are not today's (sample 256 -> 512)" in verdict.message
    assert "made by equiv " in verdict.message and f"`equiv golden update {SMALL}`" in verdict.message


def write_member(path, name, data):
    """Replace one member of a golden file's zip with `data` (bytes), keeping the others."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[name] = data
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)


def meta_with(path, **changes):
    meta = golden.read(path).meta
    for key, value in changes.items():
        meta[key] = value
    return json.dumps(meta).encode()


@pytest.mark.parametrize("damage, expected", [
    (lambda p: write_member(p, "meta.json", b"{not json"), "not a readable golden file (JSONDecodeError"),
    (lambda p: write_member(p, "meta.json", b"[1, 2]"), "meta.json is not a JSON object"),
    (lambda p: write_member(p, "meta.json", meta_with(p, taps="stem/conv")), "meta.json: taps is not a list"),
    (lambda p: write_member(p, "meta.json", meta_with(p, settings={"seed": 0})), "meta.json: settings is not"),
    (lambda p: write_member(p, "meta.json", meta_with(p, variant={"name": SMALL})), "meta.json: variant is not"),
    (lambda p: write_member(p, "meta.json", meta_with(p, weights=None)), "meta.json: weights is not"),
    (lambda p: write_member(p, "input.npy", golden_file._npy(np.zeros((1, 2, 2, 3), np.float32))),
     "input.npy holds float32 (1, 2, 2, 3), the settings need"),
    (lambda p: write_member(p, "weights_fingerprint.npy", golden_file._npy(np.zeros(3))),
     "weights_fingerprint.npy holds float64 (3,)"),
    (lambda p: write_member(p, "taps/keras.npy", b"\x93NUMPY garbage"), "not a readable golden file"),
], ids=["not json", "not an object", "taps", "settings", "variant", "weights", "input", "fingerprint", "taps member"])
def test_a_damaged_golden_file_is_one_line_exit_2(tmp_path, damage, expected):
    path = copy_golden(tmp_path)
    damage(path)
    with pytest.raises(golden.GoldenFileError) as e:
        golden.read(path)
    assert expected in str(e.value) and str(path) in str(e.value)
    r = equiv("golden", "verify", SMALL, "--fixtures", str(tmp_path), "-q")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and expected in r.stdout and "UNREADABLE" in r.stdout
    assert r.stderr.strip().splitlines()[-1] == f"equiv: error: 1 variant(s) without a usable golden file: {SMALL}"


def test_a_damaged_golden_file_is_unreadable_not_a_crash(tmp_path):
    path = copy_golden(tmp_path)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    (verdict,) = golden.verify([SMALL], directory=tmp_path).verdicts
    assert verdict.status == "unreadable" and str(path) in verdict.message


def test_the_codec_is_lossless_and_deterministic():
    path = golden.path_for(golden.DEFAULT_DIR, V.get(SMALL))
    g = golden.read(path)
    again = golden.encode(g.meta, g.input, g.fingerprint, g.taps)
    assert again == path.read_bytes()
    back = golden.decode(again, path)
    for fw in g.taps:
        for t, a in g.taps[fw].items():
            assert np.array_equal(a.view(np.uint32), back.taps[fw][t].view(np.uint32))
    # the difference coding survives sign changes, zeros, infinities and the extremes of float32
    base = np.array([0.0, -0.0, 1.0, -1.0, 3.4e38, np.inf, 1e-45, 5.0], np.float32)
    other = np.array([-0.0, 0.0, -1.0, 1.0, -np.inf, -3.4e38, -1e-45, np.nextafter(5.0, 6, dtype=np.float32)],
                     np.float32)
    back = golden_file._undelta(golden_file._delta(other, base), base)
    assert np.array_equal(back.view(np.uint32), other.view(np.uint32))


# ---------------------------------------------------------------------------------------
# update


@pytest.fixture(scope="module")
def made():
    """The golden file of the small variant as update makes it today (all three frameworks, real)."""
    return golden.make(V.get(SMALL), command="tests/test_golden.py")


def test_made_today_matches_the_stored_file_within_tolerance(made):
    meta, data = made
    new = golden.decode(data, golden.path_for("today", V.get(SMALL)))
    old = golden.read(golden.path_for(golden.DEFAULT_DIR, V.get(SMALL)))
    tols = compare.tap_tolerances(V.get(SMALL))
    for fw in old.taps:
        for t in old.tap_names:
            assert compare.compare_tap(t, old.taps[fw][t], new.taps[fw][t], (fw, fw), tols[t]).ok, (fw, t)
    assert meta["command"] == "tests/test_golden.py" and meta["frameworks"] == ["torch", "slim", "keras"]


@pytest.fixture
def fake_make(monkeypatch, made):
    """update() with today's real taps made once for the module (running them is not what is tested)."""
    from equiv.frameworks import REGISTRY, adapter

    moved = [fw for fw in REGISTRY if adapter(fw).engine() != REGISTRY[fw].runtime]
    if moved:
        pytest.skip(f"golden files are made with each framework on its registered runtime; {moved[0]} runs elsewhere")
    monkeypatch.setattr(golden, "make", lambda v, progress=None, command=None: made)
    return made


def test_update_reports_new_unchanged_and_changed(tmp_path, fake_make):
    _, data = fake_make
    path = golden.path_for(tmp_path, V.get(SMALL))
    (c,) = golden.update([SMALL], tmp_path)
    assert (c.status, c.path) == ("new", str(path)) and path.read_bytes() == data
    before = path.stat().st_mtime_ns
    (c,) = golden.update([SMALL], tmp_path)
    assert c.status == "unchanged" and not c.notes and path.stat().st_mtime_ns == before  # not rewritten

    rewrite(path, lambda taps: plant(taps, "slim", "stage4/unit1/conv1", 0.02))
    (c,) = golden.update([SMALL], tmp_path)
    assert c.status == "changed" and c.changed_taps == 1
    fw, tap, rel = c.worst
    assert (fw, tap) == ("slim", "stage4/unit1/conv1") and 0.015 < rel < 0.025
    assert f"{SMALL}: changed, 1 tap(s) changed, worst slim stage4/unit1/conv1 relative change" in c.line()
    assert path.read_bytes() == data

    def older_torch(meta):
        meta["versions"]["torch"]["torch"] = "2.12.0"

    rewrite(path, change_meta=older_torch)
    (c,) = golden.update([SMALL], tmp_path)
    assert c.status == "unchanged" and c.notes == [f"versions recorded: torch: torch 2.12.0 -> "
                                                   f"{fake_make[0]['versions']['torch']['torch']}"]
    assert path.read_bytes() == data


def test_update_is_atomic(tmp_path, fake_make, monkeypatch):
    path = golden.path_for(tmp_path, V.get(SMALL))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"the old file")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("equiv.report.os.replace", crash)
    with pytest.raises(EquivError, match="cannot be written: disk full"):  # one line for the CLI
        golden.update([SMALL], tmp_path)
    assert path.read_bytes() == b"the old file"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_update_without_keras_is_one_line_exit_2(tmp_path):
    """Keras not installed (its import fails, as it does where it is absent): one line, nothing written."""
    code = ("import sys; sys.modules['keras'] = None; from equiv.cli import main; "
            f"sys.exit(main(['golden', 'update', '{SMALL}', '--fixtures', {str(tmp_path)!r}, '-q']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("equiv: error: golden update needs slim, keras, torch (a golden file holds the taps") \
        and "'keras'" in last
    assert "Traceback" not in r.stderr and not any(tmp_path.iterdir())


def test_verify_plots_like_check(tmp_path):
    path = copy_golden(tmp_path / "golden")
    rewrite(path, lambda taps: plant(taps, "torch", "stage2/unit1/conv1", 1e-3))
    png = tmp_path / "drift.png"
    r = equiv("golden", "verify", SMALL, "--fixtures", str(tmp_path / "golden"), "--plot", str(png), "-q")
    assert r.returncode == 1, r.stdout + r.stderr
    assert png.read_bytes().startswith(b"\x89PNG") and f"plot: {png} ({SMALL}" in r.stdout
    r = equiv("golden", "verify", SMALL, "--fixtures", str(tmp_path / "golden"), "--plot", str(png), "-q")
    assert r.returncode == 2 and "exists" in r.stderr  # never replaced unasked, checked before any work


def test_update_refuses_keras_on_another_backend(tmp_path):
    r = equiv("golden", "update", SMALL, "--fixtures", str(tmp_path), "-q", env={"KERAS_BACKEND": "torch"})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "golden files are made with keras on tensorflow, and keras runs on torch here" in r.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_every_stored_golden_file_verifies_today():
    report = golden.verify()
    assert report.exit_status == 0, golden.to_text(report)


def test_the_torch214_constraints_are_the_main_pins_but_torch():
    """constraints-torch214.txt (tox -e torch214) is a copy of constraints.txt that swaps torch only."""
    root = golden.DEFAULT_DIR.parents[1]

    def pins(name):
        return [line for line in (root / name).read_text().splitlines() if line and not line.startswith("#")]

    main, t214 = pins("constraints.txt"), pins("constraints-torch214.txt")
    assert "torch==2.13.0" in main and {"torch==2.14.1", "torchvision==0.29.1", "timm==1.0.31",
                                        "transformers==5.24.0"} <= set(t214)
    same = [p for p in t214 if not p.startswith(("torch==", "torchvision==", "timm==", "transformers=="))]
    assert same == [p for p in main if p != "torch==2.13.0"]


def test_a_backend_registered_later_joins_the_stored_files_without_rerunning_the_others(tmp_path, made):
    """A file made before a backend was registered lacks its taps (planted here by dropping slim's).
    verify calls it stale and names the fix; `golden update --frameworks slim` adds slim's taps and
    keeps the others bit for bit; slim's new taps are bit-identical to a whole new file's (`made`,
    an independent run of all three)."""
    path = copy_golden(tmp_path)
    before = golden.read(path)

    def drop_slim(meta):
        meta["frameworks"] = [fw for fw in meta["frameworks"] if fw != "slim"]
        del meta["versions"]["slim"]

    rewrite(path, change_taps=lambda taps: taps.pop("slim"), change_meta=drop_slim)
    (verdict,) = golden.verify([SMALL], directory=tmp_path).verdicts
    assert verdict.status == "stale" and "holds no taps of slim" in verdict.message
    assert f"equiv golden update --frameworks slim {SMALL}" in verdict.message
    r = equiv("golden", "update", SMALL, "--frameworks", "slim", "--fixtures", str(tmp_path), "-q")
    assert r.returncode == 0, r.stderr
    after = golden.read(path)
    assert after.meta["frameworks"] == before.meta["frameworks"]  # native (torch) first, as a whole file
    whole = golden.decode(made[1], path)
    for fw in after.meta["frameworks"]:
        kept = before if fw != "slim" else whole
        for t in after.tap_names:
            assert np.array_equal(after.taps[fw][t].view(np.uint32), kept.taps[fw][t].view(np.uint32)), (fw, t)
    (verdict,) = golden.verify([SMALL], directory=tmp_path, frameworks=["torch", "keras"]).verdicts
    assert verdict.status == "unchanged"
    # a file that is not there, or of other weights, is not merged into: one whole update instead
    r = equiv("golden", "update", "torchvision/resnet34", "--frameworks", "slim", "--fixtures", str(tmp_path), "-q")
    assert r.returncode != 0 and "equiv golden update torchvision/resnet34" in r.stderr


def test_a_convention_added_after_a_file_was_made_reads_as_its_default():
    """Issue 16 A's fields (deep_stem, projection_pool, groups) are not in files made before them: such a file
    still describes its variant, and one changed in a new field no longer does, named by it."""
    v = V.get("torchvision/resnet50")
    g = golden.read(golden.path_for(golden.DEFAULT_DIR, v))
    assert not {"deep_stem", "projection_pool", "groups"} & set(g.meta["variant"]["conventions"])
    assert golden.describes_other(v, g) is None
    changed = golden.describes_other(v.replace(projection_pool="avg"), g)
    assert changed and "1 convention(s) differ (first: projection_pool stored 'stride', now 'avg')" in changed
