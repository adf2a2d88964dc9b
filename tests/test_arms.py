"""Several encoders in one workflow (the arms of a BioBERT-style comparison), a learning-rate grid
chosen on dev, and an existing checkpoint fine-tuned as it is (bring your own encoder): the plans they
make, and the parts that choose, copy and report."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from bioray.config import ConfigError
from bioray.pipeline.inputs import load_checked
from bioray.pipeline.plan import build_plan, compute_keys


def _checkpoint(directory, bin_weights: bool = False):
    """A tiny BERT checkpoint with a tokenizer, as a general-domain model ships."""
    from bioray.data.vocab import train_wordpiece
    from bioray.model.encoder import build_mlm_model

    tokenizer = train_wordpiece(["Aspirin lowers fever.", "Statins lower cholesterol."] * 30, 100, lowercase=True,
                                min_frequency=1)
    model = build_mlm_model(len(tokenizer), tokenizer.pad_token_id, layers=1, hidden=32, heads=2, intermediate=64,
                            max_position=64)
    model.save_pretrained(str(directory))
    if bin_weights:  # as older checkpoints ship (BioBERT's): a pickled state dict
        (directory / "model.safetensors").unlink()
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    tokenizer.save_pretrained(str(directory))
    return directory


def test_arms_make_one_branch_each(write_workflow, quickstart_tree, tmp_path):
    general = _checkpoint(tmp_path / "general")
    quickstart_tree["encoders"] = [
        {"name": "random", "source": "random"}, {"name": "scratch"},
        {"name": "scratch-half", "at_fraction": 0.5},
        {"name": "general", "source": "checkpoint", "checkpoint": str(general)},
        {"name": "continued", "source": "checkpoint", "checkpoint": str(general), "continue_pretraining": True,
         "steps": 40, "pretrain_lr": 1e-4, "export_fractions": [0.25, 0.5, 1.0]}]
    nodes = {n.name: n for n in build_plan(load_checked(write_workflow(quickstart_tree)))}
    for arm, source in (("random", "encoder/random"), ("scratch", "pretrain"), ("scratch-half", "pretrain"),
                        ("general", "encoder/general"), ("continued", "pretrain/continued")):
        tuned = nodes[f"finetune/{arm}/ncbi-disease/seed-42"]
        assert tuned.inputs == (source,)
        assert nodes[f"evaluate/{arm}/ncbi-disease/seed-42"].inputs == (tuned.name,)
    # the curve point: the pretraining exports the model at half its steps, the arm fine-tunes that export
    assert nodes["pretrain"].params.export_steps == [150]
    assert nodes["finetune/scratch-half/ncbi-disease/seed-42"].params.encoder_model == "model-step-150"
    # continued pretraining keeps the checkpoint's vocabulary and starts from its weights, on the same corpus
    assert nodes["vocab/continued"].params.init_checkpoint == str(general)
    assert nodes["tokenize/continued"].inputs == ("vocab/continued", "ingest")
    assert nodes["pretrain/continued"].params.init_checkpoint == str(general)
    # its own length (a minutes budget for a bigger model), warmup within it; the scratch arm keeps its own
    assert (nodes["pretrain/continued"].params.steps, nodes["pretrain/continued"].params.warmup_steps) == (40, 8)
    assert nodes["pretrain"].params.steps == 300
    assert nodes["pretrain/continued"].params.export_steps == [10, 20]  # of its own steps; the end is its model
    assert (nodes["pretrain/continued"].params.lr, nodes["pretrain"].params.lr) == (1e-4, 5e-4)
    assert nodes["encoder/random"].inputs == ("vocab",)  # random: the workflow's vocabulary and shape
    # the report has every arm; the register stage registers this workflow's own pretraining
    assert len(nodes["report"].inputs) == 5 and nodes["report"].params.arms[0] == "random"
    assert nodes["register"].inputs[0] == "pretrain" and nodes["register"].params.arm == "scratch"
    assert len(set(compute_keys(list(nodes.values())).values())) == len(nodes)


def test_every_evaluation_stage_reads_one_typed_coordinate(write_workflow, quickstart_tree, tmp_path):
    """finetune, evaluate, register-task, report, register and tag read where a model sits (arm, dataset,
    fold, seed, lr) from its Coordinate, not from its instance name."""
    from bioray.pipeline.stages.arms import Coordinate, instance_name

    quickstart_tree["encoders"] = [{"name": "random", "source": "random"}, {"name": "scratch"}]
    quickstart_tree["finetune"]["lr"] = [1e-3, 3e-4]
    quickstart_tree["finetune"]["seeds"] = [1, 2]
    quickstart_tree["registry"] = {"enabled": True, "encoder": "scratch"}
    config = load_checked(write_workflow(quickstart_tree))
    nodes = {n.name: n for n in build_plan(config)}
    evaluated = [n for n in nodes.values() if n.kind == "evaluate"]
    for node in (n for n in nodes.values() if n.kind in ("finetune", "evaluate")):
        assert instance_name(node.kind, config, node.params.at) == node.name
        assert node.params.at.dataset == node.params.dataset.name
    assert nodes["finetune/random/ncbi-disease/seed-2/lr-0.0003"].params.at == Coordinate(
        arm="random", dataset="ncbi-disease", seed=2, lr=3e-4)
    assert nodes["report"].params.evaluations == {n.name: n.params.at for n in evaluated}
    assert nodes["register-task/ncbi-disease"].params.evaluations["evaluate/scratch/ncbi-disease/seed-1"].at == \
        Coordinate(arm="scratch", dataset="ncbi-disease", seed=1)
    registered = nodes["register"].params.evaluations
    assert {at.arm for at in registered.values()} == {"scratch"} and len(registered) == 2
    assert sorted(at.label for at in registered.values()) == ["ncbi-disease/seed-1", "ncbi-disease/seed-2"]


def test_an_existing_checkpoint_alone_needs_no_corpus(write_workflow, quickstart_tree, tmp_path):
    quickstart_tree.pop("ingest")
    quickstart_tree["encoders"] = [{"name": "biobert", "source": "checkpoint",
                                    "checkpoint": str(_checkpoint(tmp_path / "biobert"))}]
    names = [n.name for n in build_plan(load_checked(write_workflow(quickstart_tree)))]
    assert names == ["encoder/biobert", "finetune/biobert/ncbi-disease/seed-42",
                     "evaluate/biobert/ncbi-disease/seed-42", "report", "register-task/ncbi-disease", "register"]
    quickstart_tree["encoders"].append({"name": "scratch"})
    with pytest.raises(ConfigError, match=r"ingest: required, the encoders \['scratch'\]"):
        load_checked(write_workflow(quickstart_tree))


def test_a_learning_rate_grid_is_one_run_per_value_and_one_evaluation(write_workflow, quickstart_tree):
    quickstart_tree["finetune"]["lr"] = [1e-3, 3e-4]
    nodes = {n.name: n for n in build_plan(load_checked(write_workflow(quickstart_tree)))}
    runs = ("finetune/ncbi-disease/seed-42/lr-0.001", "finetune/ncbi-disease/seed-42/lr-0.0003")
    assert nodes["evaluate/ncbi-disease/seed-42"].inputs == runs
    assert [nodes[r].params.training.lr for r in runs] == [1e-3, 3e-4]
    quickstart_tree["finetune"]["lr"] = [1e-3, 1e-3]
    with pytest.raises(ConfigError, match="distinct values"):
        load_checked(write_workflow(quickstart_tree))


def test_an_arm_s_own_learning_rate_or_grid_wins_over_the_dataset_s(write_workflow, quickstart_tree, tmp_path):
    general = _checkpoint(tmp_path / "general")
    quickstart_tree["finetune"]["lr"] = 1e-3
    quickstart_tree["encoders"] = [{"name": "scratch"},
                                   {"name": "general", "source": "checkpoint", "checkpoint": str(general),
                                    "finetune_lr": [1e-4, 3e-5]}]
    nodes = {n.name: n for n in build_plan(load_checked(write_workflow(quickstart_tree)))}
    assert nodes["finetune/scratch/ncbi-disease/seed-42"].params.training.lr == 1e-3
    runs = ("finetune/general/ncbi-disease/seed-42/lr-0.0001", "finetune/general/ncbi-disease/seed-42/lr-3e-05")
    assert nodes["evaluate/general/ncbi-disease/seed-42"].inputs == runs
    assert [nodes[r].params.training.lr for r in runs] == [1e-4, 3e-5]
    quickstart_tree["encoders"][1]["finetune_lr"] = -1
    with pytest.raises(ConfigError, match="finetune_lr"):
        load_checked(write_workflow(quickstart_tree))


def test_evaluation_scores_the_run_best_on_dev():
    from bioray.pipeline.stages.evaluate import choose
    from bioray.pipeline.stages.finetune import FinetuneOutput

    runs = {f"lr-{lr}": FinetuneOutput(f"/x/{lr}", {"finetune/best_dev_f1": dev})
            for lr, dev in (("1e-3", 0.61), ("3e-4", 0.70), ("1e-4", 0.70))}
    assert choose(runs, "f1")[0] == "lr-3e-4"  # the best, the first of equals
    assert choose({"only": FinetuneOutput("/x", {})}, "f1")[0] == "only"
    with pytest.raises(ValueError, match="has no dev score"):
        choose({"a": FinetuneOutput("/a", {}), "b": FinetuneOutput("/b", {})}, "f1")


def test_a_bin_checkpoint_is_loaded_weights_only_and_stored_as_safetensors(tmp_path):
    from transformers import AutoModelForMaskedLM

    from bioray.model.checkpoint import copy_checkpoint

    source = _checkpoint(tmp_path / "bin", bin_weights=True)
    assert (source / "pytorch_model.bin").is_file() and not (source / "model.safetensors").exists()
    metrics = copy_checkpoint(source, tmp_path / "copy")
    copy = tmp_path / "copy"
    assert (copy / "model.safetensors").is_file() and not (copy / "pytorch_model.bin").exists()
    original = AutoModelForMaskedLM.from_pretrained(str(source), use_safetensors=False)
    copied = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "copy"), use_safetensors=True)
    assert all(torch.equal(a, b) for a, b in zip(original.state_dict().values(), copied.state_dict().values()))
    assert metrics["encoder/parameters"] > 0

    class Payload:  # unpickling this would run code
        def __reduce__(self):
            return (open, (str(tmp_path / "code-ran"), "w"))

    with open(source / "pytorch_model.bin", "wb") as stream:
        pickle.dump({"weight": Payload()}, stream)
    with pytest.raises(pickle.UnpicklingError):
        copy_checkpoint(source, tmp_path / "refused")
    assert not (tmp_path / "code-ran").exists()


def test_the_report_has_a_column_and_a_macro_per_arm():
    from bioray.tasks.report import build_report, render_markdown

    scores = [{"dataset": "ncbi-disease", "seed": seed, "arm": arm, "metrics": {"ner/test_f1": f1}}
              for arm, f1s in (("random", (0.40, 0.42)), ("scratch", (0.55, 0.57))) for seed, f1 in zip((1, 2), f1s)]
    report = build_report({"ncbi-disease": {"task": "ner", "metric": "f1", "benchmark": "ncbi-disease"}}, scores,
                          ["random", "scratch"])
    (row,) = report["rows"]
    assert row["arms"]["random"]["mean"] == pytest.approx(41.0)
    assert row["arms"]["scratch"]["mean"] == pytest.approx(56.0)
    assert report["macro"]["arms"] == pytest.approx({"random": 41.0, "scratch": 56.0})
    table = render_markdown(report)
    assert "| bioray: random | bioray: scratch |" in table and "56.00 ± 1.41 (n=2)" in table


@pytest.mark.parametrize(("arm", "rule"), [
    ({"name": "x", "source": "checkpoint"}, "`checkpoint` is set with"),
    ({"name": "x", "continue_pretraining": True}, "it needs source: checkpoint"),
    ({"name": "x", "steps": 10}, "it needs continue_pretraining: true"),
    ({"name": "x", "source": "random", "at_fraction": 0.5}, "it needs source: pretrain"),
])
def test_an_arm_with_fields_of_another_source_is_a_config_error(arm, rule):
    from pydantic import ValidationError

    from bioray.config import EncoderConfig

    with pytest.raises(ValidationError, match=rule):
        EncoderConfig.model_validate(arm)


def test_bench_quality_arms_of_the_general_checkpoint_use_its_rates(write_workflow, quickstart_tree, tmp_path,
                                                                     monkeypatch):
    from bioray.bench import quality

    monkeypatch.setattr(quality, "general_checkpoint", lambda: _checkpoint(tmp_path / "general"))
    quickstart_tree["encoders"] = quality._encoders(["random", "general", "continued"], (), continued_steps=20)
    nodes = {n.name: n for n in build_plan(load_checked(write_workflow(quickstart_tree)))}
    assert nodes["finetune/random/ncbi-disease/seed-42"].params.training.lr == 1e-3  # the workflow's
    for arm in ("general", "continued"):
        assert nodes[f"finetune/{arm}/ncbi-disease/seed-42"].params.training.lr == quality.CHECKPOINT_FINETUNE_LR
    assert nodes["pretrain/continued"].params.lr == quality.CHECKPOINT_PRETRAIN_LR
    assert nodes["pretrain/continued"].params.steps == 20


def test_bench_quality_takes_one_budget():
    from click.testing import CliRunner

    from bioray.cli import main

    done = CliRunner().invoke(main, ["bench", "quality", "--budget-minutes", "5", "--budget-tokens", "1000"])
    assert done.exit_code == 2 and "not both" in done.output


def test_a_minutes_budget_is_timed_once_per_workdir(tmp_path, monkeypatch):
    """A rerun of the same budget gets the same steps: its pretraining stages are cache hits."""
    from bioray.bench import quality

    timings = []
    monkeypatch.setattr(quality, "_training_rate", lambda *args: timings.append(args) or 2048.0)
    pretrain = {"global_batch_size": 32, "micro_batch_size": 16, "num_workers": 2, "mask_rate": 0.3}
    tiny, rates = {"layers": 2, "hidden": 128}, tmp_path / "training_rates.json"
    assert quality.steps_for(pretrain, tiny, 8000, 128, None, 1.0, rates) == 60 * 2048 // (32 * 128)
    assert quality.steps_for(pretrain, tiny, 8000, 128, None, 1.0, rates) == 30 and len(timings) == 1
    quality.steps_for(pretrain, {"layers": 6, "hidden": 384}, 30522, 128, None, 1.0, rates)  # another shape
    assert len(timings) == 2 and len(json.loads(rates.read_text())) == 2
    assert quality.steps_for(pretrain, tiny, 8000, 128, 4096 * 70, None, rates) == 70 and len(timings) == 2
