"""studies.defaults on a tiny budget: selection, seeds, the reference MLP, the markdown."""
import json
import os

import pytest

from studies import defaults


@pytest.mark.slow  # 24 one-epoch runs and 2 teachers: ~40-70 s on 2 cores
def test_tiny_defaults_study_writes_every_table(tmp_path):
    out = str(tmp_path / "defaults.md")
    results, reference = defaults.main(
        ["--seeds=0,1", "--epochs=1", "--pairs=mnist1d_mlp,mnist", "--learning_rates=0.01,0.003", "--teacher_epochs=1",
         "--reference_epochs=1", f"--workdir={tmp_path}", f"--output={out}"], log=lambda m: None)
    text = open(out).read()
    for needle in ("`mnist1d_cnn` -> `mnist1d_mlp`", "`mnist_cnn` -> `mnist_cnn_small`",
                   "| student, extracurricular |", "| student, DIST |", "The published MLP", "| 3600 examples |",
                   "| 4000 examples |", "Appendix: selection", "(selected)",
                   "Produced by `python -m studies.defaults --seeds=0,1"):
        assert needle in text, needle
    assert [r["student"] for r in results] == ["mnist1d_mlp", "mnist_cnn_small"]
    assert results[1]["rows"] == ["none", "kd", "dist"]  # MNIST: the logit methods
    assert "Against ERM, per-seed differences" in text
    for res in results:
        assert res["epochs"] == 1  # --epochs overrides PAIR_EPOCHS
        for row in res["rows"]:
            assert [r["seed"] for r in res["evaluation"][row]] == [0, 1]
            assert res["selected"][row] in [c["label"] for c in res["selection"][row]]
    assert reference["3600"]["sizes"] == [3600, 1000] and reference["4000"]["sizes"] == [4000, 1000]
    assert len(reference["4000"]["test"]) == 2
    saved = json.load(open(os.path.join(tmp_path, "defaults.json")))
    assert set(saved) == {"results", "reference"}
