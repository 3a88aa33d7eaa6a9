"""The demo-data generator: real layouts, determinism, resumability, and landmarks that match the faces.

Small sets (2-4 subjects, short sequences) from the scikit-image astronaut fallback, plus one set from the
real photos in ../shared/faces (skipped when absent).
"""

from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_manifests.demo import faces as fc
from data_manifests.demo import generate as gen
from data_manifests.demo import geometry as geo
from data_manifests.demo import plan as pl
from data_manifests.demo import prototypes as proto
from data_manifests.demo import sequences as sq
from data_manifests.demo import warp as wp
from data_manifests.demo.writers import LAYOUTS
from data_manifests.errors import ManifestError
from data_manifests.schema import CKPLUS_CODES, CLASS_SETS
from pipeline.runtime.log import setup_logging
from stages.face_geometry import mirror_points, nme

FRAMES = (5, 8)
CK_FLOAT = r"   -?\d\.\d{7}e[+-]\d{2}"


def _generate(out: Path, **kw) -> gen.DemoSummary:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return gen.generate_demo(out, frame_range=kw.pop("frame_range", FRAMES), **kw)


@pytest.fixture(scope="module")
def ck(tmp_path_factory) -> tuple[Path, gen.DemoSummary]:
    out = tmp_path_factory.mktemp("ck") / "set"
    return out, _generate(out, layout="ckplus", n_subjects=3, seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != gen.COMPLETE_FILE
    }


def _sequences(root: Path) -> list[Path]:
    return sorted(p for p in (root / "cohn-kanade-images").glob("S*/*") if p.is_dir())


def _read_ck_landmarks(path: Path) -> np.ndarray:
    return np.loadtxt(path)


# ---------------------------------------------------------------------------------------------- plan


def test_default_plan_has_ckplus_counts_and_distinct_classes_per_subject():
    assert pl.default_sequences(118) == 327
    specs = pl.ckplus_plan(118, 327, np.random.default_rng(0))
    labelled = [s for s in specs if s.label]
    assert {c: sum(s.label == c for s in labelled) for c in pl.CKPLUS_COUNTS} == pl.CKPLUS_COUNTS
    assert len(specs) - len(labelled) == round(0.1 * 327)
    by_subject: dict[str, list[str]] = {}
    for s in labelled:
        by_subject.setdefault(s.subject, []).append(s.label)
    assert len(by_subject) == 118
    assert all(len(v) == len(set(v)) for v in by_subject.values())
    assert [s.index for s in specs] == list(range(len(specs)))


@pytest.mark.parametrize("n_subjects", [1, 3, 10, 40])
def test_scaled_plan_keeps_every_class_and_one_sequence_per_subject(n_subjects):
    n = pl.default_sequences(n_subjects)
    assert n == max(round(327 * n_subjects / 118), n_subjects)
    specs = pl.ckplus_plan(n_subjects, n, np.random.default_rng(1))
    labels = [s.label for s in specs if s.label]
    assert len(labels) == n
    if n >= 7:
        assert set(labels) == set(CLASS_SETS["ckplus7"])
    assert {s.subject for s in specs if s.label} == {s.subject for s in specs}
    assert len({s.subject for s in specs}) == n_subjects


def test_plan_refuses_more_sequences_than_distinct_classes_allow():
    with pytest.raises(ValueError):
        pl.ckplus_plan(2, 15, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------- ckplus


def test_ckplus_layout_is_the_real_one(ck):
    root, summary = ck
    seqs = _sequences(root)
    assert len(seqs) == summary.n_sequences and summary.n_labelled < summary.n_sequences
    n_unlabelled = 0
    for d in seqs:
        sid, num = d.parent.name, d.name
        assert re.fullmatch(r"S\d{3}", sid) and re.fullmatch(r"\d{3}", num)
        frames = sorted(d.glob("*.png"))
        assert FRAMES[0] <= len(frames) <= FRAMES[1]
        assert [f.name for f in frames] == [f"{sid}_{num}_{k:08d}.png" for k in range(1, len(frames) + 1)]
        img = cv2.imread(str(frames[0]), cv2.IMREAD_UNCHANGED)
        assert img.shape == (490, 640) and img.dtype == np.uint8
        assert 40 < img.mean() < 220  # a backdrop, not black
        lm_dir = root / "Landmarks" / sid / num
        for f in frames:
            text = (lm_dir / f"{f.stem}_landmarks.txt").read_text()
            rows = text.splitlines()
            assert len(rows) == 68 and all(re.fullmatch(CK_FLOAT * 2, r) for r in rows)
        peak = frames[-1].stem
        facs = (root / "FACS" / sid / num / f"{peak}_facs.txt").read_text().splitlines()
        assert facs and all(re.fullmatch(CK_FLOAT * 2, r) for r in facs)
        emotion = list((root / "Emotion" / sid / num).glob("*")) if (root / "Emotion" / sid / num).exists() else []
        if emotion:
            assert [e.name for e in emotion] == [f"{peak}_emotion.txt"]
            text = emotion[0].read_text()
            assert re.fullmatch(r"   [1-7]\.0000000e\+00\n", text)
            assert CKPLUS_CODES[int(float(text))] in summary.counts
        else:
            n_unlabelled += 1
    assert n_unlabelled == summary.n_sequences - summary.n_labelled >= 1
    assert (root / ".DS_Store").is_file() and (root / "cohn-kanade-images" / ".DS_Store").is_file()
    readme = (root / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "Seed: 0" in readme and fc.FALLBACK_SOURCE in readme
    assert summary.faces_source == fc.FALLBACK_SOURCE and "astronaut" in summary.text()


def test_each_ckplus_subject_shows_distinct_classes(ck):
    root, summary = ck
    seen: dict[str, list[int]] = {}
    for f in (root / "Emotion").rglob("*_emotion.txt"):
        seen.setdefault(f.parent.parent.name, []).append(int(float(f.read_text())))
    assert sum(len(v) for v in seen.values()) == summary.n_labelled
    assert all(len(v) == len(set(v)) for v in seen.values())


def test_sequence_starts_unwarped_and_ends_at_apex(ck):
    root, _ = ck
    for d in _sequences(root):
        lm = np.stack([_read_ck_landmarks(p) for p in sorted((root / "Landmarks" / d.parent.name / d.name).glob("*"))])
        move = np.linalg.norm(lm - lm[0], axis=2).mean(axis=1)
        assert move[0] == 0 and move[-1] > 0.5
        assert move[-1] >= 0.8 * move.max()  # apex at (or at the hold near) the end


# ---------------------------------------------------------------------------------------------- determinism


def test_workers_do_not_change_the_output(ck, tmp_path):
    root, summary = ck
    summary2 = _generate(tmp_path / "w2", layout="ckplus", n_subjects=3, seed=0, workers=2)
    assert summary2.n_frames == summary.n_frames
    assert _files(tmp_path / "w2") == _files(root)


def test_another_seed_gives_another_set(ck, tmp_path):
    root, _ = ck
    _generate(tmp_path / "s1", layout="ckplus", n_subjects=3, seed=1)
    a, b = _files(root), _files(tmp_path / "s1")

    def subjects(files: dict[str, bytes]) -> set[str]:
        return {k.split("/")[1] for k in files if k.startswith("cohn-kanade-images/S")}

    def labels(files: dict[str, bytes]) -> list[float]:
        return [float(files[k]) for k in sorted(files) if k.endswith("_emotion.txt")]

    # other subject ids, the same CK+-proportional class counts dealt out differently, and not one frame alike
    assert len(subjects(a)) == len(subjects(b)) == 3 and subjects(a).isdisjoint(subjects(b))
    assert sorted(labels(a)) == sorted(labels(b)) and labels(a) != labels(b)
    frames_a = {v for k, v in a.items() if k.endswith(".png")}
    assert frames_a and frames_a.isdisjoint(v for k, v in b.items() if k.endswith(".png"))


def test_rerun_is_a_noop_and_interrupted_run_resumes(ck, tmp_path):
    root, summary = ck
    again = _generate(root, layout="ckplus", n_subjects=3, seed=0)
    assert again.reused and again.n_frames == summary.n_frames

    class Stop(Exception):
        pass

    def stop_after_three(done, total):
        if done == 3:
            raise Stop

    out = tmp_path / "resume"
    with pytest.raises(Stop):
        _generate(out, layout="ckplus", n_subjects=3, seed=0, progress=stop_after_three)
    assert not (out / gen.COMPLETE_FILE).exists()
    finished = _generate(out, layout="ckplus", n_subjects=3, seed=0)
    assert finished.resumed == 3 and not finished.reused
    assert _files(out) == _files(root)


def test_foreign_or_mismatched_folder_is_refused(ck, tmp_path):
    root, _ = ck
    with pytest.raises(ManifestError, match="other parameters"):
        _generate(root, layout="ckplus", n_subjects=3, seed=5)
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(ManifestError, match="not empty"):
        _generate(tmp_path, layout="ckplus", n_subjects=1)
    with pytest.raises(ManifestError, match="layout"):
        _generate(tmp_path / "x", layout="affectnet", n_subjects=1)


# ---------------------------------------------------------------------------------------------- oulu, videos


def test_oulu_layout(tmp_path):
    s = _generate(tmp_path, layout="oulu", n_subjects=2, seed=0)
    assert s.n_sequences == 12 and s.counts == {c: 2 for c in CLASS_SETS["basic6"]}
    base = tmp_path / "OriginalImg" / "VL" / "Strong"
    assert sorted(p.name for p in base.iterdir()) == ["P001", "P002"]
    for subject in base.iterdir():
        assert sorted(p.name for p in subject.iterdir()) == [
            "Anger",
            "Disgust",
            "Fear",
            "Happiness",
            "Sadness",
            "Surprise",
        ]
        for cls in subject.iterdir():
            frames = sorted(cls.glob("*"))
            assert [f.name for f in frames] == [f"{k:03d}.jpeg" for k in range(len(frames))]
            img = cv2.imread(str(frames[-1]), cv2.IMREAD_UNCHANGED)
            assert img.shape == (240, 320, 3)
            truth = np.load(tmp_path / "_truth" / f"VL_Strong_{subject.name}_{cls.name}.npy")
            assert truth.shape == (len(frames), 68, 2) and truth.dtype == np.float32
    with pytest.raises(ManifestError, match="all 6"):
        _generate(tmp_path / "bad", layout="oulu", n_subjects=2, n_sequences=5)


def test_videos_layout_decodes(tmp_path):
    import av
    import decord

    s = _generate(tmp_path, layout="videos", n_subjects=3, seed=0)
    with (tmp_path / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == s.n_sequences and list(rows[0]) == ["path", "subject", "label"]
    assert {Path(r["path"]).suffix for r in rows} == {".mp4", ".avi"}
    assert all(r["label"] in CLASS_SETS["ckplus7"] for r in rows)
    for r in rows:
        path = tmp_path / r["path"]
        truth = np.load(tmp_path / "_truth" / f"{path.stem}.npy")
        vr = decord.VideoReader(str(path))
        assert len(vr) == len(truth)
        assert vr[len(vr) - 1].asnumpy().shape == (480, 640, 3)
        with av.open(str(path)) as container:
            assert sum(1 for _ in container.decode(video=0)) == len(truth)


# ---------------------------------------------------------------------------------------------- faces, warp


def test_pts_reader_is_one_based(tmp_path):
    pts = np.arange(136, dtype=float).reshape(68, 2) + 1
    body = "\n".join(f"{x} {y}" for x, y in pts)
    (tmp_path / "a.pts").write_text(f"version: 1\nn_points: 68\n{{\n{body}\n}}\n")
    assert np.array_equal(fc.read_pts(tmp_path / "a.pts"), pts - 1)
    (tmp_path / "b.pts").write_text("version: 1\n{\n1 2\n}\n")
    with pytest.raises(ManifestError, match="68 points"):
        fc.read_pts(tmp_path / "b.pts")


def test_mirroring_keeps_ibug_order():
    pts = fc.astronaut_face().landmarks
    m = mirror_points(pts, 320)
    assert m[36, 0] < m[45, 0] and m[48, 0] < m[54, 0] and m[0, 0] < m[16, 0]
    assert np.allclose(mirror_points(m, 320), pts)


@pytest.mark.parametrize("label", CLASS_SETS["ckplus7"])
def test_no_triangle_folds_and_mouth_is_painted(label):
    canvas = LAYOUTS["oulu"].canvas
    face = fc.SubjectFace(fc.astronaut_face(), 0)
    style = sq.subject_style(0, 0, canvas, morph=False)
    base = sq.build_subject(face, canvas, style)
    rng = np.random.default_rng(3)
    expr = proto.sample_expression(label, rng, 1.2)
    seq = sq.render_sequence(base, style, expr, 6, rng)
    face_tris = base.mesh.tris[~base.mesh.mouth & np.all(base.mesh.tris < 68, axis=1)]
    for lm in seq.landmarks:  # (anchor triangles are checked inside render_sequence)
        assert (geo.signed_areas(lm, face_tris) > 0).all()
    if label == "surprise":
        apex, lm = seq.frames[-1], seq.landmarks[-1]
        mask = np.zeros(apex.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(lm[60:68]).astype(np.int32)], 1)
        inside = apex[mask.astype(bool)].astype(float)
        skin = float(wp.skin_level(apex, lm).mean())
        assert inside.mean() < 0.6 * skin and inside.std() > 5  # a dark cavity with teeth, not flat black


# ---------------------------------------------------------------------------------------------- dlib agreement


def _dlib_nme(root: Path) -> tuple[list[float], int]:
    errors, missed = [], 0
    for d in _sequences(root):
        frames = sorted(d.glob("*.png"))
        lm_dir = root / "Landmarks" / d.parent.name / d.name
        for f in (frames[0], frames[-1]):
            found = fc.dlib_landmarks(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))
            if found is None:
                missed += 1
                continue
            errors.append(nme(found, _read_ck_landmarks(lm_dir / f"{f.stem}_landmarks.txt")))
    return errors, missed


def test_dlib_finds_the_written_landmarks_fallback_faces(ck):
    errors, missed = _dlib_nme(ck[0])
    assert missed <= 1 and np.mean(errors) < 0.06 and max(errors) < 0.12


@pytest.mark.shared
def test_dlib_finds_the_written_landmarks_real_faces(shared_dir, tmp_path):
    s = _generate(tmp_path, layout="ckplus", n_subjects=3, seed=0, faces_dir=shared_dir / "faces")
    assert s.faces_source == str((shared_dir / "faces").resolve())
    errors, missed = _dlib_nme(tmp_path)
    assert missed <= 1 and np.mean(errors) < 0.06


@pytest.mark.shared
def test_too_few_photos_are_reused_as_variants(shared_dir, tmp_path, capsys):
    faces = tmp_path / "faces"
    faces.mkdir()
    ranked, _ = fc.rank_faces(shared_dir / "faces")
    for cand in ranked[:2]:
        for p in (cand.image_path, cand.pts_path):
            (faces / p.name).write_bytes(p.read_bytes())
    setup_logging()  # as the CLI does: the warning is a "warning: ..." line on stderr
    subjects = fc.choose_faces(faces, 3)
    assert re.search(r"^warning: .*reusing them as mirrored/morphed variants$", capsys.readouterr().err, re.M)
    assert [s.variant for s in subjects] == [0, 0, 1] and subjects[2].face is subjects[0].face


def test_fallback_faces_are_announced(tmp_path, capsys):
    setup_logging()
    s = gen.generate_demo(tmp_path, layout="oulu", n_subjects=1, frame_range=(3, 3))
    assert re.search(r"^warning: no faces folder given: .*astronaut", capsys.readouterr().err, re.M)
    assert s.faces_source == fc.FALLBACK_SOURCE
    assert fc.FALLBACK_SOURCE in (tmp_path / "README.txt").read_text()
