import subprocess
import sys
import time
from pathlib import Path

import pytest

from bioray.config import ConfigError, apply_overrides, interpolate_env, load_workflow
from bioray.pipeline.inputs import load_checked

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_validates(write_workflow, quickstart_tree):
    config = load_checked(write_workflow(quickstart_tree))
    assert config.pretrain.zero_stage == 2
    assert config.pretrain.grad_accum_steps == 1
    assert config.finetune.datasets[0].name == "ncbi-disease"


def test_unknown_key_is_named(write_workflow, quickstart_tree):
    quickstart_tree["pretrain"]["learning_rate"] = 1e-4
    with pytest.raises(ConfigError, match=r"pretrain\.learning_rate: unknown key"):
        load_checked(write_workflow(quickstart_tree))


def test_unknown_section_is_named(write_workflow, quickstart_tree):
    quickstart_tree["pretrian"] = {"steps": 3}
    with pytest.raises(ConfigError, match=r"pretrian: unknown key"):
        load_checked(write_workflow(quickstart_tree))


def test_wrong_type_names_key_and_value(write_workflow, quickstart_tree):
    quickstart_tree["pretrain"]["steps"] = "many"
    with pytest.raises(ConfigError, match=r"pretrain\.steps: .*integer.*'many'"):
        load_checked(write_workflow(quickstart_tree))


def test_missing_input_file_is_named(write_workflow, quickstart_tree):
    quickstart_tree["finetune"]["datasets"][0]["test"] = "NCBI-disease/biobert/nope.tsv"
    with pytest.raises(ConfigError,
                       match=r"finetune\.datasets\[0\] \(ncbi-disease\)\.test: file not found: .*nope\.tsv"):
        load_checked(write_workflow(quickstart_tree))


def test_missing_source_files_are_named(write_workflow, quickstart_tree):
    quickstart_tree["ingest"]["sources"][1]["path"] = "no/such/dir"
    with pytest.raises(ConfigError, match=r"ingest\.sources\[1\] \(medline\)\.path: no medline files"):
        load_checked(write_workflow(quickstart_tree))


def test_batch_that_cannot_be_split_is_an_error(write_workflow, quickstart_tree):
    quickstart_tree["pretrain"]["global_batch_size"] = 40  # 2 workers x 16 does not divide 40
    with pytest.raises(ConfigError, match="global_batch_size"):
        load_checked(write_workflow(quickstart_tree))


def test_env_interpolation(monkeypatch):
    monkeypatch.setenv("BIORAY_T_ROOT", "/data/x")
    monkeypatch.delenv("BIORAY_T_UNSET", raising=False)
    tree = {"a": "${BIORAY_T_ROOT}/y", "b": ["${BIORAY_T_UNSET:-fallback}"], "c": 3}
    assert interpolate_env(tree) == {"a": "/data/x/y", "b": ["fallback"], "c": 3}
    with pytest.raises(ConfigError, match=r"a: environment variable \$\{BIORAY_T_UNSET\} is not set"):
        interpolate_env({"a": "${BIORAY_T_UNSET}"})


def test_empty_env_value_takes_the_default(monkeypatch):
    monkeypatch.setenv("BIORAY_T_EMPTY", "")
    assert interpolate_env({"a": "${BIORAY_T_EMPTY:-d}"}) == {"a": "d"}


def test_overrides_parse_yaml_values_and_list_items():
    tree = {"finetune": {"lr": 1e-3, "datasets": [{"name": "a"}]}}
    apply_overrides(tree, ["finetune.lr=3e-5", "finetune.datasets[0].max_train_sentences=10",
                           "finetune.seeds=[1, 2]", "pretrain.steps=7"])
    assert float(tree["finetune"]["lr"]) == 3e-5  # YAML 1.1 reads 3e-5 as a string; validation coerces it
    assert tree["finetune"]["datasets"][0]["max_train_sentences"] == 10
    assert tree["finetune"]["seeds"] == [1, 2]
    assert tree["pretrain"]["steps"] == 7
    with pytest.raises(ConfigError, match="no list item 3"):
        apply_overrides(tree, ["finetune.datasets[3].name=x"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_overrides(tree, ["finetune.lr"])


def test_override_reaches_the_typed_config(write_workflow, quickstart_tree):
    config = load_checked(write_workflow(quickstart_tree), ["finetune.lr=3e-5", "pretrain.steps=12"])
    assert config.finetune.lr == 3e-5 and config.pretrain.steps == 12


def test_override_typo_is_caught_by_validation(write_workflow, quickstart_tree):
    with pytest.raises(ConfigError, match=r"finetune\.learning_rate: unknown key"):
        load_checked(write_workflow(quickstart_tree), ["finetune.learning_rate=1e-5"])


def test_cli_misspelled_key_fails_fast_and_names_it(write_workflow, quickstart_tree):
    quickstart_tree["tokenize"]["seq_lenght"] = 128
    path = write_workflow(quickstart_tree)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bioray.cli", "run", str(path)],
                          capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - started
    assert done.returncode == 2
    assert "tokenize.seq_lenght: unknown key" in done.stderr
    print(f"misspelled key rejected in {elapsed:.2f}s")  # the target (< 5 s) is reported, not asserted


def test_every_command_has_help():
    from click.testing import CliRunner

    from bioray.cli import main

    runner = CliRunner()
    assert runner.invoke(main, ["--help"]).exit_code == 0
    for command in ["run", "status", "validate", "fetch", "ingest", "vocab", "tokenize", "pretrain", "finetune",
                    "evaluate", "register-task", "register"]:
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0, command
        assert ("DESTINATION" if command == "fetch" else "WORKFLOW") in result.output


@pytest.mark.parametrize("tokenize, pretrain, message", [
    ({"long_seq_len": None}, {"long_phase_fraction": 0.1}, r"pretrain\.long_phase_fraction needs "
                                                           r"tokenize\.long_seq_len"),
    ({"long_seq_len": 64}, {}, r"tokenize\.long_seq_len \(64\) must be longer than tokenize\.seq_len \(128\)"),
    ({"long_seq_len": 1024}, {"long_phase_fraction": 0.1}, r"1024 tokens exceed pretrain\.model\.max_position \(512\)"),
    ({"long_seq_len": 512}, {"long_phase_fraction": 0.1, "long_micro_batch_size": 5},
     r"num_workers x long_micro_batch_size \(2 x 5 = 10\)"),
    ({"long_seq_len": 512}, {"long_phase_fraction": 0.001}, r"less than one step"),
    ({}, {"nsp": True}, r"pretrain\.nsp needs tokenize\.nsp"),
])
def test_pretraining_options_that_need_the_tokenize_stage(write_workflow, quickstart_tree, tokenize, pretrain, message):
    quickstart_tree["tokenize"].update(tokenize)
    quickstart_tree["pretrain"].update(pretrain)
    with pytest.raises(ConfigError, match=message):
        load_checked(write_workflow(quickstart_tree))


def test_two_phase_schedule_splits_the_steps(write_workflow, quickstart_tree):
    quickstart_tree["tokenize"]["long_seq_len"] = 512
    quickstart_tree["pretrain"].update(long_phase_fraction=0.1, long_micro_batch_size=4)
    config = load_checked(write_workflow(quickstart_tree))
    assert config.tokenize.seq_lens == [128, 512]
    assert (config.pretrain.long_steps, config.pretrain.long_micro) == (30, 4)  # 10% of 300 steps


def test_shipped_production_workflow_validates():
    """workflows/pubmedbert.yaml is for a GPU cluster (its corpus is not here): its keys and batch
    splits must still be valid."""
    config = load_workflow(REPO / "workflows" / "pubmedbert.yaml")
    assert config.pretrain.grad_accum_steps == 2 and config.pretrain.long_steps == 6250
    assert config.tokenize.seq_lens == [128, 512]
    fast = config.pretrain.fast  # the GPU fast path, every switch on
    assert fast.compile and fast.unpad and fast.masked_only_decoder and fast.fused_optimizer
    assert config.pretrain.effective_zero_stage == 1 and config.pretrain.precision == "bf16"
    assert config.finetune.use_gpu and config.finetune.precision == "bf16" and config.finetune.fast.unpad


def test_shipped_repretrain_workflow_validates():
    """workflows/repretrain.yaml: a scheduled run continuing the registry's champion on new documents."""
    config = load_workflow(REPO / "workflows" / "repretrain.yaml")
    assert config.repretrain.fetch[0].listing.startswith("https://ftp.ncbi.nlm.nih.gov/pubmed/updatefiles")
    assert config.tokenize.documents == "new"
    assert config.vocab.init_checkpoint == config.pretrain.init_checkpoint == "models:/bioray-encoder@champion"


def test_scheduled_fetch_destination_need_not_exist_yet(write_workflow, quickstart_tree, tmp_path):
    """The first scheduled run fetches before it ingests; a missing model URI is no file error either."""
    quickstart_tree["ingest"]["sources"] = [{"name": "updates", "format": "medline", "path": str(tmp_path / "updates")}]
    quickstart_tree["pretrain"]["init_checkpoint"] = "models:/bioray-encoder@champion"
    with pytest.raises(ConfigError, match=r"ingest\.sources\[0\] \(updates\)\.path: no medline files"):
        load_checked(write_workflow(quickstart_tree))
    quickstart_tree["repretrain"] = {
        "fetch": [{"listing": "http://127.0.0.1:1/", "destination": str(tmp_path / "updates")}]}
    config = load_checked(write_workflow(quickstart_tree))
    assert config.repretrain.lock_stale_after_s == 3600
    quickstart_tree["tokenize"]["documents"] = "latest"
    with pytest.raises(ConfigError, match=r"tokenize\.documents"):
        load_checked(write_workflow(quickstart_tree))


def test_every_error_about_a_list_entry_names_the_entry(write_workflow, quickstart_tree):
    """A schema error inside a dataset entry (or any named list entry) says which entry, as the inputs
    check does: `finetune.datasets[0] (ncbi-disease).epochs`."""
    quickstart_tree["finetune"]["datasets"][0]["epochs"] = "many"
    quickstart_tree["ingest"]["sources"][1]["max_docs"] = -1
    with pytest.raises(ConfigError) as raised:
        load_checked(write_workflow(quickstart_tree))
    assert "finetune.datasets[0] (ncbi-disease).epochs: " in str(raised.value)
    assert f"ingest.sources[1] ({quickstart_tree['ingest']['sources'][1]['name']}).max_docs: " in str(raised.value)


def test_an_unknown_key_is_told_the_closest_key_of_its_section(write_workflow, quickstart_tree):
    quickstart_tree["pretrain"]["warmup_step"] = 3
    quickstart_tree["pretrian"] = {}
    with pytest.raises(ConfigError) as raised:
        load_checked(write_workflow(quickstart_tree))
    message = str(raised.value)
    assert "pretrain.warmup_step: unknown key (did you mean 'warmup_steps'?)" in message
    assert "pretrian: unknown key (did you mean 'pretrain'?)" in message


def test_a_dataset_key_its_format_does_not_take_is_an_error_naming_the_format(write_workflow, quickstart_tree):
    """Beside the common keys, an entry takes its format's options only (bioray.tasks.formats.*.Options)."""
    entry = quickstart_tree["finetune"]["datasets"][0]  # conll: no options
    entry.update(trian="x", entity_markers="tags")
    with pytest.raises(ConfigError) as raised:
        load_checked(write_workflow(quickstart_tree))
    assert str(raised.value).splitlines()[1:] == [
        "  finetune.datasets[0] (ncbi-disease).trian: unknown key for format 'conll' (its options: none; did you "
        "mean 'train'?)",
        "  finetune.datasets[0] (ncbi-disease).entity_markers: unknown key for format 'conll' (its options: none; it "
        "is an option of ddi_xml)"]
    entry.pop("trian")
    entry.update(format="pubtator", entity_markers=None, entity_types=["Disease"])
    entry.pop("entity_markers")
    with pytest.raises(ConfigError, match=r"\(ncbi-disease\)\.entity_types: Input should be a valid dictionary"):
        load_checked(write_workflow(quickstart_tree))


@pytest.mark.parametrize("section, key, value, message", [
    ("finetune", "fast", {"masked_only_decoder": False}, r"finetune\.fast\.masked_only_decoder: unknown key"),
    ("finetune", "fast", {"reduce_once_per_step": False}, r"finetune\.fast\.reduce_once_per_step: unknown key"),
    ("registry", "gate", {"margin": 150}, r"registry\.gate\.margin: Input should be less than or equal to 100"),
])
def test_a_value_the_docs_rule_out_is_refused(write_workflow, quickstart_tree, section, key, value, message):
    """Switches that do not apply to fine-tuning, a margin beyond the 0-100 scale: errors, never silently kept."""
    quickstart_tree[section][key] = value
    with pytest.raises(ConfigError, match=message):
        load_checked(write_workflow(quickstart_tree))
