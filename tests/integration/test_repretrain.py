"""Scheduled re-pretraining: NLM-style update files over HTTP, the run lock, "nothing new" doing
nothing, and the champion pinned and downloaded as the starting point (default tier: the scheduling
logic, with the DAG run recorded instead of run); and for real, the whole DAG twice: incremental
ingest, only new documents tokenized, pretraining continued from the registry's champion, the gate
deciding (extended tier). Local Ray, DeepSpeed on CPU, an MLflow server over HTTP."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from lxml import etree
from mlflow.tracking import MlflowClient

from tests.test_fetch import NlmLikeServer, _serving

REPO = Path(__file__).resolve().parents[2]
MODEL = "bioray-encoder"


def _update_files(data_root: Path) -> dict[str, bytes]:
    """Two MEDLINE update files from real records: NLM's 2019 sample (176 citations), then a file of
    nine other real citations plus a deletion of one citation of the first file."""
    first = (data_root / "corpus/xml-samples/medline/fatcat_pubmedsample_2019.xml.gz").read_bytes()
    articles = []
    for path in sorted((data_root / "corpus/xml-samples/medline").glob("*.xml")) + [
            data_root / "pubmed-raw/medline_xml/pubmed-29768149.xml"]:
        articles += etree.parse(str(path)).getroot().findall(".//PubmedArticle")
    deleted = etree.fromstring(gzip.decompress(first)).find(".//PubmedArticle/MedlineCitation/PMID").text
    second = etree.Element("PubmedArticleSet")
    second.extend(articles)
    etree.SubElement(etree.SubElement(second, "DeleteCitation"), "PMID", Version="1").text = deleted
    return {"pubmed26n0001.xml.gz": first, "pubmed26n0002.xml.gz": gzip.compress(etree.tostring(second))}


def _serve(server: NlmLikeServer, name: str, content: bytes) -> None:
    server.files[name] = content
    server.files[name + ".md5"] = f"MD5({name})= {hashlib.md5(content).hexdigest()}\n".encode()


def _register_champion(tmp_path: Path, data_root: Path, uri: str, name: str = "champion-v1",
                       score: float = 0.0) -> None:
    """A version of the encoder registered with `score`: a tiny BERT and a WordPiece vocabulary trained
    on real abstracts, put through the register stage's own code (the first becomes champion)."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    from bioray.config import RegisterConfig
    from bioray.pipeline.stages.register import run_register
    from bioray.tracking.context import RunContext
    from bioray.tracking.store import activate
    from tests.support.workflows import mlflow_state_kept

    abstracts = min((data_root / "pubmed-raw/abstracts_one_per_line").glob("*.txt"))  # one abstract a line
    lines = abstracts.read_text().splitlines()[:3000]
    wordpiece = BertWordPieceTokenizer(lowercase=False)
    wordpiece.train_from_iterator(lines, vocab_size=4000)
    tokenizer = BertTokenizerFast(tokenizer_object=wordpiece._tokenizer, do_lower_case=False)
    encoder = tmp_path / name
    tokenizer.save_pretrained(str(encoder))
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=128, max_position_embeddings=256)).save_pretrained(str(encoder))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bioray-bootstrap") or client.get_experiment(
        client.create_experiment("bioray-bootstrap"))
    run = client.create_run(experiment.experiment_id, run_name=name)
    (tmp_path / f"register-{name}").mkdir()
    context = RunContext(uri, experiment.experiment_id, run.info.run_id, run.info.run_id)
    with mlflow_state_kept():
        activate(uri)  # logging a transformers model uses MLflow's fluent API
        run_register(RegisterConfig(model_name=MODEL), encoder_dir=encoder, scores={},
                     report_scores={"report/ncbi-disease/f1": score}, context=context,
                     output=tmp_path / f"register-{name}")


def _workflow(tmp_path: Path, data_root: Path, uri: str, listing: str) -> Path:
    tree = yaml.safe_load((REPO / "workflows" / "repretrain.yaml").read_text())
    tree.update(workdir=str(tmp_path / "work"), data_root=str(data_root), storage_path=None)
    tree["tracking"]["uri"] = uri
    tree["repretrain"]["fetch"] = [{"listing": listing, "destination": str(tmp_path / "updatefiles")}]
    tree["ingest"]["sources"][0]["path"] = str(tmp_path / "updatefiles")
    tree["tokenize"].update(tokenizer_actors=1, batch_size=64)
    tree["pretrain"].update(num_workers=1, use_gpu=False, precision="fp32", steps=6, global_batch_size=8,
                            micro_batch_size=8, lr=1e-4, warmup_steps=1, checkpoint_every=100, log_every=2,
                            fast={"compile": False})  # CPU here: compiling would outlast 6 steps
    dataset = tree["finetune"]["datasets"][0]  # NCBI-disease only, a slice of its training set
    tree["finetune"].update(datasets=[{**dataset, "max_train_examples": 300}], seeds=[1], epochs=1, lr=1e-3,
                            max_length=128, use_gpu=False, precision="fp32")
    tree["registry"]["gate"]["margin"] = 0.0
    path = tmp_path / "repretrain.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _command(workflow: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "bioray.cli", "run", str(workflow), *[a for o in overrides for a in ("--set", o)]]


def _run(workflow: Path, *overrides: str) -> str:
    done = subprocess.run(_command(workflow, *overrides), cwd=REPO, capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "RAY_ADDRESS": ""})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-6000:]
    return done.stdout + done.stderr


def _latest(client: MlflowClient) -> tuple:
    experiment = client.get_experiment_by_name("bioray-repretrain")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=100)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {r.data.tags["bioray.stage"]: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    return parent, children, len(runs)


@pytest.mark.extended
@pytest.mark.timeout(1200)
def test_repretrain_does_only_new_work_and_promotes_only_a_winner(tmp_path, data_root, mlflow_server):
    client = MlflowClient(mlflow_server)
    files = _update_files(data_root)
    server = NlmLikeServer({})
    with _serving(server):
        listing = f"http://127.0.0.1:{server.server_address[1]}/pubmed/updatefiles/"
        _serve(server, "pubmed26n0001.xml.gz", files["pubmed26n0001.xml.gz"])
        _register_champion(tmp_path, data_root, mlflow_server)
        workflow = _workflow(tmp_path, data_root, mlflow_server, listing)
        # --- first run (the lock, a concurrent run and a stale lock are the default tier's logic test) ----
        _run(workflow)
        assert not (tmp_path / "work" / "repretrain.lock").exists()

        parent, children, _ = _latest(client)
        assert parent.info.status == "FINISHED"
        ingest, tokenize = children["ingest"].data.metrics, children["tokenize"].data.metrics
        assert ingest["ingest/files_parsed"] == 1 and ingest["ingest/documents_new"] == ingest["ingest/documents"]
        assert tokenize["tokenize/documents"] == ingest["ingest/documents_new"] > 100
        documents_before = ingest["ingest/documents"]
        assert f"/{MODEL}/1/" in children["pretrain"].data.params["init_checkpoint"]  # from champion v1
        f1 = children["evaluate/ncbi-disease/seed-1"].data.metrics["ner/test_f1"]
        promoted = children["register"].data.metrics["gate/promoted"] == 1
        assert promoted == (100 * f1 > 0.0)  # v1 scored 0.0, margin 0
        champion = client.get_model_version_by_alias(MODEL, "champion").version
        assert champion == ("2" if promoted else "1")
        assert client.get_model_version_by_alias(MODEL, "challenger").version == "2"

        # --- nothing new: nothing done, no MLflow run ------------------------------------------------
        _, _, runs_before = _latest(client)
        idle = _run(workflow)
        assert "no new files since the last successful run" in idle and "nothing to do" in idle
        assert _latest(client)[2] == runs_before
        assert server.bytes_sent["pubmed26n0001.xml.gz"] == len(files["pubmed26n0001.xml.gz"])  # fetched once

        # --- a new update file: only it is fetched, parsed and tokenized; a 100-point margin keeps the champion
        _serve(server, "pubmed26n0002.xml.gz", files["pubmed26n0002.xml.gz"])
        _run(workflow, "registry.gate.margin=100")
        assert server.bytes_sent["pubmed26n0001.xml.gz"] == len(files["pubmed26n0001.xml.gz"])
        _, children, _ = _latest(client)
        ingest, tokenize = children["ingest"].data.metrics, children["tokenize"].data.metrics
        assert ingest["ingest/files_parsed"] == 1 and ingest["ingest/files_reused"] == 1
        # the second file's citations are all new PMIDs; its deletion removes one of the first file's
        assert ingest["ingest/documents"] == documents_before + ingest["ingest/documents_new"] - 1
        assert 0 < tokenize["tokenize/documents"] == ingest["ingest/documents_new"] <= 9
        assert f"/{MODEL}/{champion}/" in children["pretrain"].data.params["init_checkpoint"]
        assert children["register"].data.metrics["gate/promoted"] == 0
        assert client.get_model_version_by_alias(MODEL, "champion").version == champion
        assert client.get_model_version_by_alias(MODEL, "challenger").version == "3"



def test_scheduled_run_logic_lock_nothing_new_takeover_and_champion_pinning(tmp_path, data_root, mlflow_server,
                                                                             caplog):
    from bioray.pipeline.inputs import load_checked
    from bioray.pipeline.lock import RunLock
    from bioray.pipeline.repretrain import run_scheduled
    from bioray.pipeline.runner import RunSummary

    client = MlflowClient(mlflow_server)
    files = _update_files(data_root)
    server = NlmLikeServer({})
    started: list = []  # the configs the DAG would have run with

    def record_dag_run(config):
        started.append(config.model_copy(deep=True))
        return RunSummary(parent_run_id=f"recorded-{len(started)}")

    with _serving(server):
        listing = f"http://127.0.0.1:{server.server_address[1]}/pubmed/updatefiles/"
        _serve(server, "pubmed26n0001.xml.gz", files["pubmed26n0001.xml.gz"])
        _register_champion(tmp_path, data_root, mlflow_server)
        workflow = _workflow(tmp_path, data_root, mlflow_server, listing)

        def scheduled():
            return run_scheduled(load_checked(workflow), record_dag_run)

        # another live run holds the lock: nothing at all happens
        work = tmp_path / "work"
        with RunLock(work / "repretrain.lock", stale_after_s=3600) as held:
            outcome = scheduled()
            assert outcome.status == "locked" and "another run holds the lock" in outcome.message
            assert f"pid {os.getpid()}" in outcome.message and json.loads(held.path.read_text())["token"] == held.token
        assert started == [] and server.bytes_sent == {} and not (tmp_path / "updatefiles").exists()

        # the first run fetches the file and starts from the champion, pinned to its version and downloaded
        outcome = scheduled()
        assert outcome.status == "ran" and outcome.fetched == ["pubmed26n0001.xml.gz"] and len(started) == 1
        for key in ("vocab", "pretrain"):
            checkpoint = Path(getattr(started[0], key).init_checkpoint)
            assert checkpoint.is_relative_to(work / "models") and f"/{MODEL}/1/" in str(checkpoint)
            assert (checkpoint / "config.json").is_file() and (checkpoint / "tokenizer_config.json").is_file()
        state = json.loads((work / "repretrain-state.json").read_text())
        assert state["models"]["pretrain.init_checkpoint"] == f"models:/{MODEL}/1" and state["files"] == 1
        assert not (work / "repretrain.lock").exists()

        # nothing new: nothing fetched again, no DAG run, no MLflow run
        runs_before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
        outcome = scheduled()
        assert outcome.status == "nothing-new" and "nothing to do" in outcome.message and len(started) == 1
        assert server.bytes_sent["pubmed26n0001.xml.gz"] == len(files["pubmed26n0001.xml.gz"])
        assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == runs_before

        # a new champion and a new file: the run starts from the new champion's version
        _register_champion(tmp_path, data_root, mlflow_server, name="champion-v2", score=50.0)
        assert client.get_model_version_by_alias(MODEL, "champion").version == "2"
        _serve(server, "pubmed26n0002.xml.gz", files["pubmed26n0002.xml.gz"])
        outcome = scheduled()
        assert outcome.status == "ran" and outcome.fetched == ["pubmed26n0002.xml.gz"] and len(started) == 2
        assert f"/{MODEL}/2/" in started[1].pretrain.init_checkpoint

        # a lock left by a dead run is taken over once stale, and the run goes on
        lock = work / "repretrain.lock"
        lock.write_text(json.dumps({"token": "dead", "pid": 999999, "host": "gone", "started": "2026-01-01T00:00:00Z"}))
        old = time.time() - 7200
        os.utime(lock, (old, old))
        with caplog.at_level(logging.WARNING):
            outcome = scheduled()
        assert "took over a stale lock" in caplog.text and "pid 999999" in caplog.text
        assert outcome.status == "nothing-new" and not lock.exists()
