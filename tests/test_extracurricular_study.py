"""studies.extracurricular: the gap-closed measure, the capacity sweep's table and its flags."""
import pytest

from pipeline import experiment
from studies import extracurricular as ec_study


def test_gap_closed_is_the_share_of_kds_gap():
    assert ec_study.gap_closed(0.9, 0.5, 0.7) == pytest.approx(0.5)
    assert ec_study.gap_closed(0.9, 0.5, 0.5) == pytest.approx(0.0)
    assert ec_study.gap_closed(0.9, 0.5, 0.4) == pytest.approx(-0.25)
    assert ec_study.gap_closed(0.5, 0.6, 0.7) != ec_study.gap_closed(0.5, 0.6, 0.7)  # nan: no gap


def _row(seed, teacher, accs):
    return {"seed": seed, "teacher": teacher,
            **{m: {"accuracy": a} for m, a in zip(("none", "kd", "ec", "oracle"), accs)}}


def test_capacity_table_gives_each_students_gap_closed_from_seed_means():
    sweep = [{"student": "s", "params": 1234, "per_seed": [
        _row(0, 0.9, (0.3, 0.40, 0.60, 0.70)), _row(1, 0.9, (0.3, 0.60, 0.80, 0.90))]}]
    cfg = experiment.RunConfig(label_fraction=0.1, epochs=300)
    lines = ec_study.capacity_markdown(sweep, cfg, ec_study.Variant("gmm_full", 4.0, 4.0, 4.0))
    row = next(line for line in lines if line.startswith("| `s` |"))
    # teacher 0.9, KD 0.5, EC 0.7, oracle 0.8: 50% and 75% of the gap.
    assert "| 1,234 |" in row and row.endswith("| +50% | +75% |")
    assert "10% of the labels, 300 student epochs" in lines[0]


def test_a_bad_variant_names_the_flag():
    with pytest.raises(SystemExit, match="--variant"):
        ec_study.main(["--capacity_students=mnist1d_mlp", "--variant=gmm_full,4"])
