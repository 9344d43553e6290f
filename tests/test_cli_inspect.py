import json

import numpy as np

from compatctl.cli import app
from compatctl.store import save_artifact, write_embedding_set
from tests.conftest import make_block


def test_inspect_embedding_set_json(runner, tmp_path):
    write_embedding_set(tmp_path / "emb", make_block(rows=12, dim=5), header={"model_fingerprint": "f00"},
                        shard_rows=5)
    result = runner.invoke(app, ["inspect", str(tmp_path / "emb"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["rows"] == 12 and info["dim"] == 5 and info["shards"] == 3 and info["fingerprint"] == "f00"
    assert info["provenance"]["native"] == 12


def test_inspect_model_table(runner, tmp_path):
    save_artifact(tmp_path / "m.safetensors", {"w": np.zeros(2)}, "model", {"config": {"arch": "tiny_cnn"}})
    result = runner.invoke(app, ["inspect", str(tmp_path / "m.safetensors")])
    assert result.exit_code == 0 and "model" in result.output and "tiny_cnn" in result.output


def test_inspect_bad_paths_exit_2(runner, tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    for path in [tmp_path / "missing", tmp_path / "notes.txt"]:
        result = runner.invoke(app, ["inspect", str(path)])
        assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output
