"""`bioray gc` lists, and with --delete removes, exactly what no given workflow references: other keys'
outputs, stages the workflow no longer has, and what runs that are over left beside the outputs; a
current output, a current stage's resume data and a live run's files stay."""

from __future__ import annotations

from bioray.config import load_workflow
from bioray.pipeline import stage_state
from bioray.pipeline.stage_state import stage_status
from tests.support.cli import run_bioray
from tests.support.workflows import small_workflow, write_workflow

OLD = "0123456789abcdef"  # a key of an older config


def _output(directory):
    directory.mkdir(parents=True)
    (directory / "result.json").write_text("{}")
    (directory / "data.bin").write_bytes(b"x" * 1000)


def test_gc_removes_exactly_what_nothing_references(tmp_path, data_root):
    workflow = write_workflow(small_workflow(tmp_path / "work", data_root), tmp_path / "wf.yaml")
    config = load_workflow(workflow)
    keys = {row["stage"]: row["key"] for row in stage_status(config)}
    stages = config.paths.stages
    kept = [stages / "ingest" / keys["ingest"], stages / "vocab" / f".scratch-{keys['vocab']}",
            stages / "tokenize" / f".tmp-{keys['tokenize']}-aaaa1111"]
    for path in kept[:1]:
        _output(path)
    kept[1].mkdir(parents=True)
    kept[2].mkdir(parents=True)
    stage_state.mark_running(config.paths, "tokenize", keys["tokenize"])  # this live process runs it
    kept.append(config.paths.stage_state("tokenize", keys["tokenize"]))
    garbage = [stages / "ingest" / OLD, stages / "finetune" / "gone-dataset" / "seed-1" / OLD,
               stages / "pretrain" / f".tmp-{keys['pretrain']}-bbbb2222", stages / "vocab" / f".scratch-{OLD}"]
    for path in garbage[:2]:
        _output(path)
    for path in garbage[2:]:
        path.mkdir(parents=True)
    stage_state.mark_failed(config.paths, "vocab", OLD, "an old failure")  # runs/: bookkeeping of other keys
    progress = config.paths.stage_progress("ingest", OLD)
    progress.parent.mkdir(parents=True, exist_ok=True)
    progress.write_text("step 1/2\n")
    garbage += [config.paths.stage_state("vocab", OLD), progress]

    listed = run_bioray("gc", str(workflow))
    assert listed.returncode == 0, listed.stderr[-2000:]
    shown = sorted(line.split()[2] for line in listed.stdout.splitlines() if line.startswith("would remove "))
    assert shown == sorted(str(p) for p in garbage)
    assert all(p.exists() for p in garbage + kept)  # a dry run by default

    removed = run_bioray("gc", str(workflow), "--delete")
    assert removed.returncode == 0, removed.stderr[-2000:]
    assert [p for p in garbage if p.exists()] == [] and all(p.exists() for p in kept)
    assert f"{config.paths.root}: 6 item(s), 0.0 MB" in removed.stdout
