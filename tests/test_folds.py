"""Subject-independent stratified folds and fold-file validation."""

from __future__ import annotations

import pandas as pd
import pytest
from fixtures_datasets import CKPLUS_COUNTS, ckplus_like_manifest, make_ckplus_tree, write_text, write_video
from hypothesis import given, settings
from hypothesis import strategies as st

from data_manifests.errors import ManifestError
from data_manifests.folds import assign_folds, load_fold_file, subject_folds
from data_manifests.scan import add_neutral_rows, build_manifest, fold_class_table
from data_manifests.scan_common import ScanReport
from data_manifests.schema import CLASS_SETS


def toy_manifest(spec: list[tuple[str, str | None]]) -> pd.DataFrame:
    """Rows from (subject, label or None); sequence ids ``<subject>_<k>``."""
    seen: dict[str, int] = {}
    rows = []
    for subject, label in spec:
        seen[subject] = seen.get(subject, 0) + 1
        rows.append(
            {
                "sequence_id": f"{subject}_{seen[subject]:03d}",
                "subject": subject,
                "label": label,
                "labelled": label is not None,
                "frame_paths": ["/f/0.png", "/f/1.png"],
            }
        )
    return pd.DataFrame(rows)


def assert_subject_independent(df: pd.DataFrame, n_folds: int) -> None:
    lab = df[df["labelled"]]
    assert lab["fold"].notna().all(), "every labelled row has a fold"
    assert df.loc[~df["labelled"], "fold"].isna().all(), "unlabelled rows have no fold"
    assert lab.groupby("subject")["fold"].nunique().max() == 1, "a subject crosses folds"
    assert set(lab["fold"]) == set(range(n_folds)), "folds are 0..k-1 and none is empty"


@settings(max_examples=25, deadline=None, database=None)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 30), st.sampled_from(["anger", "happy", "fear", "surprise", None])),
        min_size=12,
        max_size=120,
    ),
    n_folds=st.integers(2, 10),
    seed=st.integers(0, 2**31 - 1),
)
def test_no_subject_crosses_folds(data, n_folds, seed):
    df = toy_manifest([(f"P{s:02d}", lab) for s, lab in data])
    n_subjects = df.loc[df["labelled"], "subject"].nunique()
    if df.loc[df["labelled"], "label"].nunique() < 2:
        with pytest.raises(ManifestError, match="needs at least 2 classes"):
            assign_folds(df, n_folds, seed)
        return
    if n_subjects < n_folds:
        with pytest.raises(ManifestError, match=f"only {n_subjects} labelled subjects for {n_folds} folds"):
            assign_folds(df, n_folds, seed)
        return
    out = assign_folds(df, n_folds, seed)
    assert list(out["sequence_id"]) == list(df["sequence_id"]), "row order kept"
    assert str(out["fold"].dtype) == "Int64"
    assert_subject_independent(out, n_folds)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_every_class_spread_over_folds_when_subjects_allow(seed):
    # 3 classes x 30 single-sequence subjects, plus 10 subjects with two classes each: 3+ subjects/class/fold
    spec = [(f"{c}{i}", c) for c in ("anger", "happy", "fear") for i in range(30)]
    spec += [(f"mix{i}", c) for i in range(10) for c in ("anger", "happy")]
    out = assign_folds(toy_manifest(spec), 10, seed)
    table = pd.crosstab(out["fold"], out["label"])
    assert (table > 0).all().all(), table
    assert table.max().max() - table.min().min() <= 3, table


def test_deterministic_and_independent_of_row_order():
    df = ckplus_like_manifest(seed=3)
    a = assign_folds(df, 10, seed=5)
    b = assign_folds(df, 10, seed=5)
    shuffled = assign_folds(df.sample(frac=1.0, random_state=11), 10, seed=5)
    pd.testing.assert_series_equal(a["fold"], b["fold"])
    by_id = dict(zip(a["sequence_id"], a["fold"], strict=True))
    assert all(
        (pd.isna(f) and pd.isna(by_id[s])) or f == by_id[s]
        for s, f in zip(shuffled["sequence_id"], shuffled["fold"], strict=True)
    )
    other = assign_folds(df, 10, seed=6)
    assert not a["fold"].equals(other["fold"]), "a different seed gives different folds"
    assert_subject_independent(other, 10)


def test_ckplus_like_folds(capsys):
    df = ckplus_like_manifest()
    lab = df[df["labelled"]]
    assert len(lab) == 327 and lab["subject"].nunique() == 118
    assert lab["label"].value_counts().to_dict() == CKPLUS_COUNTS
    out = assign_folds(df, 10, seed=0)
    assert_subject_independent(out, 10)
    table = fold_class_table(out, CLASS_SETS["ckplus7"])
    with capsys.disabled():
        print("\nCK+-like set (118 subjects, 327 labelled sequences), 10 folds, seed 0:\n" + table.to_string())
    per_fold = table.drop(index="total")
    classes = CLASS_SETS["ckplus7"]
    assert ((per_fold[classes] > 0).sum() >= 9).all(), "each class in at least 9 of 10 folds"
    assert per_fold["all"].between(25, 40).all(), "fold sizes near 327/10"
    assert per_fold["subjects"].between(8, 16).all()


def test_neutral_rows_follow_their_subject():
    df = ckplus_like_manifest(n_subjects=40, n_unlabelled=0)
    df = df[df.groupby("subject").cumcount() < 3]  # a smaller set
    df = add_neutral_rows(df, 1, ScanReport())
    assert df["sequence_id"].str.endswith("_neutral").sum() == df["labelled"].sum() / 2
    out = assign_folds(df, 10, seed=0)
    assert_subject_independent(out, 10)
    assert out.groupby("subject")["fold"].nunique().max() == 1


def test_fewer_subjects_than_folds():
    df = toy_manifest([(f"P{i}", ["happy", "fear"][i % 2]) for i in range(4)] + [("P9", None)])
    with pytest.raises(ManifestError, match="only 4 labelled subjects for 10 folds"):
        assign_folds(df, 10)


def test_sklearn_refusal_and_empty_folds_repaired():
    # every class smaller than n_folds (sklearn refuses) and exactly n_folds subjects (risk of an empty fold)
    df = toy_manifest([(f"P{i}", ["anger", "happy", "fear"][i % 3]) for i in range(10)])
    out = assign_folds(df, 10, seed=2)
    assert_subject_independent(out, 10)


# ----------------------------------------------------------------------------------------------- fold files


@pytest.fixture()
def small() -> pd.DataFrame:
    spec = [(f"S{i:03d}", ["anger", "happy", "fear"][i % 3]) for i in range(12)] + [("S100", None)]
    return toy_manifest(spec)


def _fold_csv(tmp_path, lines: list[str]):
    return write_text(tmp_path / "folds.csv", "subject,fold\n" + "".join(line + "\n" for line in lines))


def test_fold_file_round_trip(small, tmp_path):
    auto = assign_folds(small, 3, seed=0)
    path = tmp_path / "folds.csv"
    subject_folds(auto).to_csv(path, index=False)
    loaded = load_fold_file(path, small, 3)
    pd.testing.assert_series_equal(loaded["fold"], auto["fold"])
    extra = write_text(tmp_path / "extra.csv", path.read_text() + "S999,1\n")  # unknown subjects are fine
    pd.testing.assert_series_equal(load_fold_file(extra, small, 3)["fold"], auto["fold"])


@pytest.mark.parametrize(
    "lines, n_folds, message",
    [
        ([f"S{i:03d},{i % 3}" for i in range(11)], 3, r"1 labelled subjects have no fold: S011"),
        (
            [f"S{i:03d},{i % 3}" for i in range(12)] + ["S004,2"],
            3,
            r"each subject may appear once; repeated: line 6: S004,1; line 14: S004,2",
        ),
        ([f"S{i:03d},{i % 4}" for i in range(12)], 3, r"folds must lie in 0..2 .*bad rows: line 5: S003,3"),
        (
            [f"S{i:03d},{i % 3 + 1}" for i in range(12)],
            3,
            r"folds are 0-based \(0..2\) but this file uses 1..3\. Subtract 1",
        ),
        ([f"S{i:03d},{i % 2}" for i in range(12)], 3, r"folds 2 hold no labelled subject"),
        ([f"S{i:03d},x" for i in range(12)], 3, r"folds must be integers; bad rows: line 2: S000,x"),
    ],
    ids=["missing-subject", "duplicate", "out-of-range", "one-based", "empty-fold", "not-integer"],
)
def test_fold_file_errors(small, tmp_path, lines, n_folds, message):
    path = _fold_csv(tmp_path, lines)
    with pytest.raises(ManifestError, match=message) as err:
        load_fold_file(path, small, n_folds)
    assert str(path) in str(err.value)


def test_fold_file_bad_columns_and_missing(small, tmp_path):
    path = write_text(tmp_path / "f.csv", "id,split\nS000,0\n")
    with pytest.raises(ManifestError, match=r"f\.csv: fold file needs columns 'subject,fold'"):
        load_fold_file(path, small, 3)
    with pytest.raises(ManifestError, match="nope.csv: fold file not found"):
        load_fold_file(tmp_path / "nope.csv", small, 3)


# ------------------------------------------------------------------------------------------ build_manifest


def test_build_manifest_meta_and_fold_file(tmp_path):
    root = make_ckplus_tree(tmp_path / "ck")
    df, meta, report = build_manifest(root, "ckplus", n_folds=3, seed=4)
    assert meta.classes == CLASS_SETS["ckplus7"] and meta.n_folds == 3 and meta.fold_seed == 4
    assert meta.fold_source == "stratified-group" and meta.extra["format"] == "ckplus"
    assert_subject_independent(df, 3)
    assert "fold 2" in report.summary(df)
    path = tmp_path / "folds.csv"
    subject_folds(df).to_csv(path, index=False)
    df2, meta2, _ = build_manifest(root, "ckplus", n_folds=3, fold_file=path)
    assert meta2.fold_source == str(path.resolve())
    pd.testing.assert_series_equal(df2["fold"], df["fold"])


def test_build_manifest_without_labels_has_no_folds(tmp_path):
    write_video(tmp_path / "m" / "a.mp4")
    df, meta, report = build_manifest(tmp_path / "m", "folder")
    assert df["fold"].isna().all() and meta.fold_source == "none"
    assert any("folds not assigned" in m for _, m in report.notes)
