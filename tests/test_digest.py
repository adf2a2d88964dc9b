"""A stage output's content digest: its files by path and content, whatever order they were written in,
without the files that record when and where it ran; and the deterministic-kernels switch."""

from __future__ import annotations

import os

import torch

from bioray.pipeline.digest import content_digest, differing_files


def _write(directory, files: dict[str, str]):
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory


def test_the_digest_is_the_content_not_the_run(tmp_path):
    files = {"model/weights.bin": "w", "scores.json": "{}", "history.json": "took 3 s"}
    first = content_digest(_write(tmp_path / "a", files), volatile=("history.json",))
    second = content_digest(_write(tmp_path / "b", dict(reversed(files.items())) | {"history.json": "took 9 s",
                                                                                     "result.json": "{}"}),
                            volatile=("history.json",))
    assert first["digest"] == second["digest"] and sorted(first["files"]) == ["model/weights.bin", "scores.json"]
    changed = content_digest(_write(tmp_path / "c", files | {"model/weights.bin": "W"}), volatile=("history.json",))
    assert changed["digest"] != first["digest"] and differing_files(first, changed) == ["model/weights.bin"]
    renamed = content_digest(_write(tmp_path / "d", {"model/weight.bin": "w", "scores.json": "{}"}))
    assert differing_files(first, renamed) == ["model/weight.bin", "model/weights.bin"]


def test_deterministic_kernels_are_switched_on_only_when_asked(monkeypatch):
    from bioray.train.determinism import use_deterministic_kernels

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled()
    try:
        use_deterministic_kernels(False)
        assert not torch.are_deterministic_algorithms_enabled()
        use_deterministic_kernels(True)
        assert torch.are_deterministic_algorithms_enabled() and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(before)


def test_a_gpu_training_stage_without_deterministic_kernels_says_its_output_may_differ(write_workflow,
                                                                                      quickstart_tree):
    from bioray.pipeline.inputs import load_checked
    from bioray.pipeline.plan import build_plan

    quickstart_tree["pretrain"]["use_gpu"] = True
    nodes = {n.name: n for n in build_plan(load_checked(write_workflow(quickstart_tree)))}
    assert "without pretrain.deterministic" in nodes["pretrain"].stage.nondeterministic(nodes["pretrain"])
    tuned = nodes["finetune/ncbi-disease/seed-42"]
    assert tuned.stage.nondeterministic(tuned) is None  # fine-tuning on CPU
    assert list(nodes["report"].params.nondeterministic) == ["pretrain"]  # the report says so under its table
    quickstart_tree["pretrain"]["deterministic"] = True
    nodes = {n.name: n for n in build_plan(load_checked(write_workflow(quickstart_tree)))}
    assert nodes["pretrain"].stage.nondeterministic(nodes["pretrain"]) is None


def test_the_report_says_which_stages_behind_its_scores_may_differ_between_runs():
    from bioray.tasks.report import build_report, render_markdown

    report = build_report({"ncbi": {"task": "ner", "metric": "f1", "benchmark": None}}, [])
    assert "Not reproducible" not in render_markdown(report)
    report["nondeterministic"] = {"pretrain": "GPU kernels (cuBLAS, atomic adds) without pretrain.deterministic"}
    assert "may differ between runs of the same workflow (docs/reproducibility.md): pretrain (GPU kernels" in \
        render_markdown(report)
