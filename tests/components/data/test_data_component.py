"""The thin KFP wrappers: the data component runs for real through kfp.local; the train component's typed I/O."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_prepare_data_component_runs_locally(tmp_path, monkeypatch):
    from kfp import local

    from components.data.component import prepare_data

    src = tmp_path / "chats.jsonl"
    rows = [{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
            for i in range(12)] + [{"conversations": []}]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    task = prepare_data(config={"source": str(src), "heldout_size": 2, "seed": 9})
    out = Path(task.outputs["dataset"].path)
    assert len((out / "train.jsonl").read_text().splitlines()) == 10
    assert len((out / "heldout.jsonl").read_text().splitlines()) == 2
    stats = json.loads((out / "stats.json").read_text())
    assert stats["skipped_by_reason"] == {"empty_conversation": 1}


def test_train_component_declares_typed_artifacts():
    from components.train.component import train_model

    spec = train_model.component_spec
    assert set(spec.inputs) == {"dataset", "config"}
    assert spec.inputs["dataset"].type == "system.Dataset@0.0.1"
    outputs = {name: out.type for name, out in spec.outputs.items()}
    assert outputs == {"model": "system.Model@0.0.1", "adapter": "system.Model@0.0.1",
                       "report": "system.Artifact@0.0.1", "metrics": "system.Metrics@0.0.1"}
    assert spec.implementation.container.image.endswith(":" + os.environ.get("RAGTUNE_IMAGE_TAG", "0.1.0"))
    assert "ragtune-train" in spec.implementation.container.image
