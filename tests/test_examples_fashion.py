"""Fashion-MNIST from IDX files: the loader's checks on small files written here (CI never
needs Debian's package), and a one-epoch smoke run of the ``fashion_mnist`` config."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("grain")

from examples.compare_losses import input_pipeline, main
from examples.compare_losses.configs import get_config

FILES = input_pipeline.FASHION_MNIST_FILES


def _idx_bytes(array: np.ndarray, *, magic: int | None = None) -> bytes:
    """An IDX file of unsigned bytes, written from the format's definition."""
    array = np.asarray(array, np.uint8)
    magic = (0x08 << 8 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def _write(folder: Path, name: str, payload: bytes) -> None:
    with gzip.open(folder / FILES[name], "wb") as f:
        f.write(payload)


def write_fashion(folder: Path, *, num_train: int = 300, num_test: int = 100, seed: int = 0):
    """Four valid IDX files of random 28×28 images with learnable labels (class = brightest
    of ten vertical stripes), so a short training run can fit them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", num_train), ("test", num_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            images[i, :, 2 * y + 4 : 2 * y + 6] = 250
        _write(folder, f"{split}_images", _idx_bytes(images))
        _write(folder, f"{split}_labels", _idx_bytes(labels))
        out[split] = (images, labels)
    return out


def test_reads_valid_files_exactly(tmp_path):
    data = write_fashion(tmp_path, num_train=50, num_test=20)
    splits = input_pipeline.get_splits("fashion_mnist", seed=1, data_dir=str(tmp_path))
    assert splits.info == input_pipeline.DatasetInfo("fashion_mnist", 10, (28, 28, 1), 255.0)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (45, 5, 20)
    images, labels = data["test"]
    for i in (0, 7, 19):
        item = splits.test[i]
        np.testing.assert_array_equal(item["image"][..., 0], images[i])
        assert item["label"] == labels[i]
    # The validation split is the same seeded 10% as for every other dataset.
    _, val_idx = input_pipeline.split_train_validation(50, val_fraction=0.1, seed=1)
    seen = {splits.validation[j]["image"].tobytes() for j in range(len(val_idx))}
    assert seen == {data["train"][0][i].tobytes() for i in val_idx}


def test_missing_files_name_the_package_and_the_flag(tmp_path):
    with pytest.raises(RuntimeError, match=r"apt-get install dataset-fashion-mnist.*--data_dir"):
        input_pipeline.get_splits("fashion_mnist", seed=0, data_dir=str(tmp_path))


@pytest.mark.parametrize("defect", ["truncated", "too_long", "wrong_magic", "not_gzip"])
def test_corrupt_image_file_is_an_error(tmp_path, defect):
    data = write_fashion(tmp_path, num_train=30, num_test=10)
    payload = _idx_bytes(data["train"][0])
    if defect == "truncated":
        payload = payload[:-100]
    elif defect == "too_long":
        payload = payload + b"\0" * 28
    elif defect == "wrong_magic":
        payload = _idx_bytes(data["train"][0], magic=0x0801)  # a label file's magic
    if defect == "not_gzip":
        (tmp_path / FILES["train_images"]).write_bytes(payload)
    else:
        _write(tmp_path, "train_images", payload)
    match = {
        "truncated": "truncated or corrupt",
        "too_long": "truncated or corrupt",
        "wrong_magic": "magic number 0x00000801",
        "not_gzip": "cannot read as a gzip file",
    }[defect]
    with pytest.raises(input_pipeline.IdxError, match=match):
        input_pipeline.get_splits("fashion_mnist", seed=0, data_dir=str(tmp_path))


def test_truncated_gzip_stream_is_an_error(tmp_path):
    write_fashion(tmp_path, num_train=30, num_test=10)
    path = tmp_path / FILES["test_images"]
    path.write_bytes(path.read_bytes()[:-40])  # cut inside the compressed stream
    with pytest.raises(input_pipeline.IdxError, match="cannot read as a gzip file"):
        input_pipeline.get_splits("fashion_mnist", seed=0, data_dir=str(tmp_path))


def test_label_count_mismatch_is_an_error(tmp_path):
    data = write_fashion(tmp_path, num_train=30, num_test=10)
    _write(tmp_path, "test_labels", _idx_bytes(data["test"][1][:9]))
    with pytest.raises(input_pipeline.IdxError, match=r"10 images but .* 9 labels"):
        input_pipeline.get_splits("fashion_mnist", seed=0, data_dir=str(tmp_path))


def test_wrong_image_size_is_an_error(tmp_path):
    write_fashion(tmp_path, num_train=30, num_test=10)
    _write(tmp_path, "test_images", _idx_bytes(np.zeros((10, 8, 8), np.uint8)))
    with pytest.raises(input_pipeline.IdxError, match="28×28"):
        input_pipeline.get_splits("fashion_mnist", seed=0, data_dir=str(tmp_path))


def test_config_one_epoch_smoke_run_with_curves(tmp_path):
    data_dir = tmp_path / "idx"
    write_fashion(data_dir, num_train=400, num_test=100)
    workdir = tmp_path / "run"
    config = get_config("fashion_mnist")
    assert config.dataset == "fashion_mnist" and config.track_curves
    rows = main.main(
        [
            "--config", "fashion_mnist", "--num_epochs", "1", "--losses", "ce",
            "--data_dir", str(data_dir), "--workdir", str(workdir), "--no_progress",
        ]
    )  # fmt: skip
    assert [r["calibration"] for r in rows] == ["none", "TS (NLL)", "TS (ECE grid)"]
    saved = json.loads(next(workdir.rglob("results.json")).read_text())
    curves = saved["curves"]["ce"]
    assert {k: len(v) for k, v in curves.items()} == {
        "train_loss": 1, "test_error": 1, "test_nll": 1, "test_ece": 1,
    }  # fmt: skip
    # The last epoch's curve point is the final model's test evaluation.
    assert curves["test_error"][-1] == pytest.approx(rows[0]["error"], abs=1e-6)
    assert curves["test_nll"][-1] == pytest.approx(rows[0]["nll"], rel=1e-5)
    assert 0.0 <= saved["final_train_error"]["ce"] <= 1.0
    png = next(workdir.rglob("training_curves.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- aggregate


def _fake_run(folder: Path, seed: int, rows: list[dict], **config) -> None:
    folder.mkdir(parents=True)
    base = {"dataset": "fashion_mnist", "seed": seed, "losses": ["ce"], "num_epochs": 30}
    (folder / "results.json").write_text(json.dumps({"config": {**base, **config}, "rows": rows}))


def _row(loss, calibration, t, value):
    fields = ("error", "nll", "ece", "ada_ece", "classwise_ece", "mce")
    return {"loss": loss, "calibration": calibration, "temperature": t} | dict.fromkeys(
        fields, value
    )


def test_seed_table_is_mean_and_sample_std(tmp_path):
    from examples.compare_losses import aggregate

    values = [0.10, 0.13, 0.20]
    for seed, v in enumerate(values):
        _fake_run(tmp_path / f"s{seed}", seed, [_row("ce", "none", None, v)])
    text = aggregate.main([str(tmp_path / f"s{s}") for s in range(3)])
    mean, sd = 100 * np.mean(values), 100 * np.std(values, ddof=1)
    assert f"| ce | none | 3 |  | {mean:.2f} ± {sd:.2f} |" in text
    _fake_run(tmp_path / "other", 3, [_row("ce", "none", None, 0.1)], num_epochs=5)
    with pytest.raises(SystemExit):  # a run with another setup is refused
        aggregate.main([str(tmp_path / "s0"), str(tmp_path / "other")])


def test_seed_table_accepts_runs_older_than_a_config_field(tmp_path):
    from examples.compare_losses import aggregate, configs

    default = configs.Config()
    # s0 predates the `calibrators` and `ls_epsilon` fields; s1 names other calibrators.
    _fake_run(tmp_path / "s0", 0, [_row("ce", "none", None, 0.1)])
    _fake_run(tmp_path / "s1", 1, [_row("ce", "none", None, 0.2)], calibrators=["ts_nll"])
    _fake_run(tmp_path / "s2", 2, [_row("ce", "none", None, 0.3)], ls_epsilon=default.ls_epsilon)
    assert "| ce | none | 3 |" in aggregate.main([str(tmp_path / f"s{s}") for s in range(3)])
    # A field absent from an old run counts as its default, so a run changing it is refused.
    _fake_run(tmp_path / "s3", 3, [_row("ce", "none", None, 0.1)], ls_epsilon=0.2)
    with pytest.raises(SystemExit):
        aggregate.main([str(tmp_path / "s0"), str(tmp_path / "s3")])


def test_sweep_table_and_plot(tmp_path):
    from examples.compare_losses import aggregate

    rows = []
    for loss, ece in (("fl2", 0.02), ("ce", 0.05), ("fl1", 0.03)):
        rows += [_row(loss, "none", None, ece), _row(loss, "TS (NLL)", 1.5, ece / 2)]
    _fake_run(tmp_path / "sweep", 0, rows)
    out = tmp_path / "sweep.md"
    aggregate.main(["--sweep", str(tmp_path / "sweep"), "--out", str(out)])
    lines = out.read_text().splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["0", "1", "2"]
    assert lines[2].split("|")[3].strip() == "5.00" and lines[2].split("|")[4].strip() == "2.50"
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
