"""The recipes of docs/development.md ("How to add ...") done as a new contributor would: each adds a
dataset format with its own option, a task type or a stage kind from a module outside bioray (written
here into a temporary directory), named in a workflow's `plugins`, and uses it as a workflow would; a
benchmark from a package of its own, found by the CLI through its entry point."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from bioray.config import ConfigError
from bioray.metric_names import is_test_score
from bioray.pipeline import stage_kinds
from bioray.pipeline.inputs import load_checked
from bioray.pipeline.plan import build_plan, compute_keys
from bioray.tasks import catalog

CSV_FORMAT = '''
from pydantic import Field

from bioray.tasks import catalog
from bioray.tasks.examples import DatasetError, Example
from bioray.tasks.formats.base import FormatOptions, PerFileFormat, require_file


class CsvOptions(FormatOptions):
    delimiter: str = Field(",", description="What separates the text from its label.")


class CsvFormat(PerFileFormat):
    """`text<delimiter>label` lines (the last delimiter splits)."""

    Options = CsvOptions
    tasks = ("relation",)  # an existing task type reads it

    def read(self, path, dataset):
        require_file(path)
        examples = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            text, found, label = line.rpartition(self.options.delimiter)
            if not found:
                raise DatasetError(f"{path}:{number}: expected text{self.options.delimiter}label")
            examples.append(Example(text, None, label, f"{path}:{number}"))
        return examples


catalog.register_format("csv", CsvFormat)
'''

POLARITY_TASK = '''
from bioray.tasks import catalog
from bioray.tasks.sequence import SequenceTask


class PolarityTask(SequenceTask):
    """Positive/negative sentences, scored by balanced accuracy (the mean of per-class recall)."""

    name, primary_metric, formats = "polarity", "balanced_accuracy", ("tsv", "jsonl")

    def score(self, examples, predictions, labels):
        recalls = []
        for label in sorted({e.label for e in examples}):
            gold = [p for e, p in zip(examples, predictions) if e.label == label]
            recalls.append(sum(p == label for p in gold) / len(gold))
        return {"balanced_accuracy": sum(recalls) / len(recalls)}


catalog.register_task("polarity", PolarityTask)
'''

LABEL_COUNTS_STAGE = '''
import json

from pydantic import BaseModel

from bioray.config import DatasetConfig
from bioray.pipeline import stage_kinds
from bioray.pipeline.stages.base import Node, Stage
from bioray.pipeline.stages.finetune import dataset_files
from bioray.tasks import catalog as tasks


class LabelCountsParams(BaseModel):
    dataset: DatasetConfig


class LabelCounts(Stage):
    kind = "label-counts"
    help = "How often each label occurs in a dataset's training split."
    Params = LabelCountsParams
    headline = ("label_counts/examples",)
    num_cpus = 1

    def nodes(self, config, upstream):
        return [Node(f"label-counts/{d.name}", self, {}, LabelCountsParams(dataset=d), dataset_files(config, d),
                     tasks.code_modules(d)) for d in config.finetune.datasets]

    def run(self, node, inputs, output, env):
        from collections import Counter

        from bioray.tasks.splits import load_splits

        task = tasks.task_for(node.params.dataset)
        train = load_splits(node.params.dataset, env.dataset_path)["train"]
        counts = Counter(label for example in train for label in task.labels_of(example))
        (output / "counts.json").write_text(json.dumps(counts, indent=2))
        return {"label_counts/examples": len(train), "label_counts/labels": len(counts)}


stage_kinds.register_stage(LabelCounts())
'''

SPLIT_BENCH = '''
import time

import click

from bioray.cli import run_bench


def measure(text: str, repeats: int) -> dict:
    """str.split against the regular expression it replaces, on the same text, in one run."""
    import re

    timings = {}
    for name, split in (("split", str.split), ("regex", re.compile(r"\\S+").findall)):
        started = time.perf_counter()
        for _ in range(repeats):
            words = split(text)
        timings[name] = time.perf_counter() - started
    return {"words": len(words), "repeats": repeats, **{f"{n}_s": t for n, t in timings.items()},
            "ratio": timings["regex"] / timings["split"]}


def render(result: dict) -> str:
    return (f"{result['words']} words x {result['repeats']}: split {result['split_s']:.4f} s, regex "
            f"{result['regex_s']:.4f} s, ratio {result['ratio']:.2f}")


@click.command()
@click.option("--repeats", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def split_words(repeats, as_json):
    """str.split vs. a regular expression on the same text."""
    run_bench(as_json, lambda: measure("Aspirin lowers fever in adults. " * 200, repeats), render)
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Write a module into a directory on sys.path; the registries it fills are restored afterwards."""
    saved = dict(catalog.TASK_TYPES), dict(catalog.FORMATS), list(stage_kinds.STAGES)
    (tmp_path / "plugins").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    written = []

    def write(name: str, source: str):
        (tmp_path / "plugins" / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()  # the directory's listing was cached before the file was there
        written.append(name)
        return tmp_path / "plugins" / f"{name}.py"

    yield write
    for name in written:
        sys.modules.pop(name, None)
    for table, before in zip((catalog.TASK_TYPES, catalog.FORMATS, stage_kinds.STAGES), saved):
        table.clear()
        table.update(before) if isinstance(table, dict) else table.extend(before)


def _files(tmp_path, rows: dict[str, list[str]], suffix: str) -> dict[str, str]:
    for split, lines in rows.items():
        (tmp_path / f"{split}.{suffix}").write_text("\n".join(lines) + "\n")
    return {split: str(tmp_path / f"{split}.{suffix}") for split in rows}


def test_a_format_with_its_own_option(plugin, tmp_path, write_workflow, quickstart_tree):
    from bioray.tasks.splits import load_splits

    source = plugin("csv_relations", CSV_FORMAT)
    pairs = ["@GENE$ binds @CHEMICAL$;CPR:3", "@GENE$ is near @CHEMICAL$;false"]
    entry = {"name": "pairs", "task": "relation", "format": "csv", "delimiter": ";", "negative_label": "false",
             **_files(tmp_path, {"train": pairs * 3, "dev": pairs, "test": pairs}, "csv")}
    quickstart_tree.update(plugins=["csv_relations"])
    quickstart_tree["finetune"]["datasets"] = [entry]
    config = load_checked(write_workflow(quickstart_tree), read_datasets=True)  # its option, read as it says
    train = load_splits(config.finetune.datasets[0], config.dataset_path)["train"]
    assert [(e.text, e.label) for e in train[:2]] == [("@GENE$ binds @CHEMICAL$", "CPR:3"),
                                                      ("@GENE$ is near @CHEMICAL$", "false")]
    # the format's module is part of the fine-tuning stages' code key: editing it makes them stale
    before = compute_keys(build_plan(config))
    source.write_text(source.read_text().replace("(the last delimiter splits)", "(split at the last delimiter)"))
    after = compute_keys(build_plan(config))
    assert {name for name in before if before[name] != after[name] and name.startswith("finetune/")} == {
        "finetune/pairs/seed-42"}
    # an option it does not take, or its option on another format, is an error naming the key and format
    entry["separator"] = ","
    with pytest.raises(ConfigError, match=r"\(pairs\)\.separator: unknown key for format 'csv' \(its options: "
                                          r"delimiter\)"):
        load_checked(write_workflow(quickstart_tree))
    quickstart_tree["finetune"]["datasets"] = [{"name": "ncbi", "task": "ner", "train": "a", "test": "b",
                                                "delimiter": ";"}]
    with pytest.raises(ConfigError, match=r"delimiter: unknown key for format 'conll' \(its options: none; it is "
                                          r"an option of csv\)"):
        load_checked(write_workflow(quickstart_tree))


def test_a_task_type(plugin, tmp_path, write_workflow, quickstart_tree):
    from bioray.tasks.evaluate import run_evaluate
    from bioray.tasks.splits import load_splits
    from tests.test_arms import _checkpoint

    plugin("polarity", POLARITY_TASK)
    lines = ["sentence\tlabel", "Aspirin lowers fever.\tpositive", "Statins raise cholesterol.\tnegative"]
    entry = {"name": "moods", "task": "polarity", **_files(tmp_path, {"train": lines, "test": lines}, "tsv")}
    quickstart_tree.update(plugins=["polarity"], encoders=[{"name": "general", "source": "checkpoint",
                                                            "checkpoint": str(_checkpoint(tmp_path / "general"))}])
    quickstart_tree.pop("ingest")
    quickstart_tree["finetune"]["datasets"] = [entry]
    config = load_checked(write_workflow(quickstart_tree), read_datasets=True)
    nodes = {n.name: n for n in build_plan(config)}
    evaluation = nodes["evaluate/general/moods/seed-42"]
    assert evaluation.stage.headline_for(evaluation) == ("polarity/test_balanced_accuracy",)
    assert nodes["register-task/moods"].params.model_name == "bioray-polarity-moods"
    # scored as the evaluate stage scores it: the task's head on an encoder, its metric under its name
    dataset = config.finetune.datasets[0]
    test = load_splits(dataset, config.dataset_path)["test"]
    (tmp_path / "scored").mkdir()
    metrics = run_evaluate(catalog.task_for(dataset), test, model_dir=tmp_path / "general",
                           labels=["negative", "positive"], max_length=32, batch_size=2, output=tmp_path / "scored",
                           title="moods")
    assert metrics["polarity/test_balanced_accuracy"] == 0.5  # one class
    assert [name for name in metrics if is_test_score(name)] == ["polarity/test_balanced_accuracy"]
    quickstart_tree["plugins"] = ["no_such_plugin"]
    with pytest.raises(ConfigError, match=r"plugins\[0\]: cannot import 'no_such_plugin' \(ModuleNotFoundError"):
        load_checked(write_workflow(quickstart_tree))


def test_a_stage_kind(plugin, ray_session, tmp_path, data_root):
    """Planned after the built-in kinds, keyed by its own code, run on Ray with an MLflow run and cached."""
    from ray import cloudpickle

    from tests.support.workflows import NCBI, run_in_process, small_workflow, write_workflow

    plugin("label_counts", LABEL_COUNTS_STAGE)
    module = __import__("label_counts")
    cloudpickle.register_pickle_by_value(module)  # Ray's workers cannot import a temporary directory
    try:
        tree = small_workflow(tmp_path / "work", data_root, plugins=["label_counts"])
        workflow = write_workflow(tree, tmp_path / "wf.yaml")
        summary = run_in_process(workflow, ["label-counts/ncbi-disease"])
        again = run_in_process(workflow, ["label-counts/ncbi-disease"])
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    assert summary.failed == {} and list(summary.results) == ["label-counts/ncbi-disease"]
    result = summary.results["label-counts/ncbi-disease"]
    train = (data_root / NCBI["train"]).read_text().split("\n\n")
    assert 0 < result.metrics["label_counts/examples"] <= len(train) + 1
    assert result.metrics["label_counts/labels"] == 3  # B, I, O
    assert again.results["label-counts/ncbi-disease"].key == result.key  # the second run found it cached


def test_a_benchmark(tmp_path):
    """A package's `bioray.bench` entry point becomes `bioray bench <name>`: its table, or --json."""
    import json

    from tests.support.cli import run_bioray

    (tmp_path / "split_bench.py").write_text(textwrap.dedent(SPLIT_BENCH))
    info = tmp_path / "split_bench-0.1.dist-info"  # what `pip install` of a package with the entry point writes
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: split-bench\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bioray.bench]\nsplit-words = split_bench:split_words\n")
    env = {"PYTHONPATH": str(tmp_path)}
    table = run_bioray("bench", "split-words", "--repeats", "3", env=env, timeout=300)
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("1000 words x 3: split ") and "ratio" in table.stdout
    measured = run_bioray("bench", "split-words", "--repeats", "3", "--json", env=env, timeout=300)
    result = json.loads(measured.stdout)  # stdout holds the JSON alone
    assert result["words"] == 1000 and result["ratio"] > 0
    listed = run_bioray("bench", "--help", env=env, timeout=300).stdout
    assert "split-words" in listed and "str.split vs. a regular expression" in listed
