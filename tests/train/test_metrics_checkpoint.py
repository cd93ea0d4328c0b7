import os
import pickle

import numpy as np
import pytest
import torch

from climbq_deploy.errors import ArtifactError, DataError
from climbq_deploy.train.checkpoint import load_checkpoint, save_checkpoint
from climbq_deploy.train.metrics import long_tail_metrics


def test_long_tail_metrics_by_hand() -> None:
    counts = [500, 100, 20, 19]  # many, medium, medium, few (boundaries included as specified)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    preds = np.array([0, 0, 1, 0, 0, 0, 3, 3])
    m = long_tail_metrics(preds, labels, counts)
    assert m.per_class == [100.0, 50.0, 0.0, 100.0]
    assert m.top1 == 62.5
    assert (m.many, m.medium, m.few) == (100.0, 25.0, 100.0)


def test_empty_groups_are_none_and_bad_inputs_are_clear() -> None:
    m = long_tail_metrics(np.array([0, 1]), np.array([0, 1]), [200, 150])
    assert (m.medium, m.few) == (None, None)
    with pytest.raises(DataError, match="no images of class"):
        long_tail_metrics(np.array([0]), np.array([0]), [10, 10])
    with pytest.raises(DataError, match="must be equal"):
        long_tail_metrics(np.array([0, 1]), np.array([0]), [10, 10])


def test_checkpoint_round_trip_and_refusals(tmp_path) -> None:
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "epoch": 3, "history": [1.5, 2.0]}
    save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(tmp_path / "c.pt")
    assert back["epoch"] == 3 and torch.equal(back["model"]["w"], state["model"]["w"])
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="corrupt, truncated or unsafe"):
        load_checkpoint(tmp_path / "t.pt")
    with pytest.raises(ArtifactError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_checkpoint_with_code_is_refused_not_run(tmp_path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with (tmp_path / "evil.pt").open("wb") as handle:
        torch.save({"checkpoint_version": 1, "x": Evil()}, handle, pickle_module=pickle)
    with pytest.raises(ArtifactError, match="unsafe"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_failed_write_keeps_the_old_checkpoint(tmp_path) -> None:
    save_checkpoint(tmp_path / "c.pt", {"epoch": 1})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path / "c.pt", {"epoch": 2, "bad": Boom()})
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
