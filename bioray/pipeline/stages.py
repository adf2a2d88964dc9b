"""What each stage kind does: inputs from upstream results -> a committed output directory."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from bioray.config import WorkflowConfig
from bioray.pipeline.plan import Node, code_version, stage_dir

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    name: str
    key: str
    path: str  # the committed output directory, wherever the workdir is now (never stored in the output)
    metrics: dict
    cached: bool = False

    @classmethod
    def load(cls, directory: Path, cached: bool = True) -> StageResult:
        stored = json.loads((directory / "result.json").read_text())
        return cls(stored["name"], stored["key"], str(directory), stored["metrics"], cached)

    def save(self, directory: Path) -> None:
        """result.json: no absolute path in it, so a copied or moved workdir keeps its cache."""
        (directory / "result.json").write_text(json.dumps({"name": self.name, "key": self.key,
                                                           "metrics": self.metrics}, indent=2))


def _ingest(config, node, out, up, ctx):
    from bioray.data.ingest import run_ingest
    return run_ingest(config.ingest, Path(config.data_root), out, _same_stage_outputs(config, node))


def _same_stage_outputs(config: WorkflowConfig, node: Node) -> list[Path]:
    """Committed outputs of this stage made with the same settings and code (inputs may differ):
    what an incremental stage can build on."""
    outputs = []
    for stage_file in config.paths.stage_family(node.name).glob("*/stage.yaml"):
        done = yaml.safe_load(stage_file.read_text())
        if (stage_file.parent / "result.json").is_file() and done.get("params") == node.params \
                and done.get("code") == code_version(node.kind):
            outputs.append(stage_file.parent)
    return outputs


def _vocab(config, node, out, up, ctx):
    from bioray.data.vocab import run_vocab
    init = config.data_path(config.vocab.init_checkpoint) if config.vocab.init_checkpoint else None
    return run_vocab(config.vocab, Path(up["ingest"].path) / "documents", out, init)


def _tokenize(config, node, out, up, ctx):
    from bioray.data.tokenize import run_tokenize
    return run_tokenize(config.tokenize, Path(up["ingest"].path) / "documents", Path(up["vocab"].path) / "tokenizer", out)


def _pretrain(config, node, out, up, ctx):
    from bioray.data.tokenize import sequences_dir
    from bioray.plots import plot_history
    from bioray.train.pretrain import run_pretrain
    init = config.data_path(config.pretrain.init_checkpoint) if config.pretrain.init_checkpoint else None
    tokenized = Path(up["tokenize"].path)
    long_dir = sequences_dir(tokenized, config.tokenize, config.tokenize.long_seq_len) if config.tokenize.long_seq_len else None
    metrics = run_pretrain(config.pretrain, sequences_dir=sequences_dir(tokenized, config.tokenize),
                           long_sequences_dir=long_dir,
                           tokenizer_dir=Path(up["vocab"].path) / "tokenizer", output=out, storage=config.train_storage,
                           run_name=f"pretrain-{ctx['key']}", tracking_uri=ctx["tracking_uri"], run_id=ctx["run_id"],
                           init_checkpoint=init)
    curves = ["pretrain/loss", "pretrain/mlm_accuracy"] + (["pretrain/nsp_accuracy"] if config.pretrain.nsp else [])
    plot_history(json.loads((out / "history.json").read_text()), curves, out / "loss_curve.png",
                 title="Pretraining (MLM" + (" + NSP)" if config.pretrain.nsp else ")"))
    return metrics


def _dataset(config: WorkflowConfig, node: Node):
    return next(d for d in config.finetune.datasets if d.name == node.dataset)


def _finetune(config, node, out, up, ctx):
    from bioray.train.finetune import run_finetune
    dataset = _dataset(config, node)
    metrics = run_finetune(config.finetune.for_dataset(dataset), dataset, node.seed, data_root=Path(config.data_root),
                           fold=node.fold, encoder_dir=Path(up["pretrain"].path) / "model", output=out,
                           storage=config.train_storage, run_name=f"{node.name.replace('/', '-')}-{ctx['key']}",
                           tracking_uri=ctx["tracking_uri"], run_id=ctx["run_id"])
    if config.finetune.log_model:
        from bioray.pipeline.models import log_transformers_model
        info = log_transformers_model(out / "model", ctx["run_id"], "model")
        (out / "mlflow_model.json").write_text(json.dumps({"model_uri": info.model_uri}))
        _set_run_tag(ctx, "bioray.mlflow_model", info.model_uri)
    return metrics


def _set_run_tag(ctx: dict, key: str, value: str) -> None:
    from mlflow.tracking import MlflowClient
    MlflowClient(ctx["tracking_uri"]).set_tag(ctx["run_id"], key, value)


def _evaluate(config, node, out, up, ctx):
    from bioray.tasks.evaluate import run_evaluate
    (upstream,) = up.values()
    dataset = _dataset(config, node)
    return run_evaluate(config.evaluate, dataset, model_dir=Path(upstream.path) / "model",
                        data_root=Path(config.data_root), fold=node.fold,
                        max_length=config.finetune.for_dataset(dataset).max_length, output=out)


def _report(config, node, out, up, ctx):
    from bioray.tasks.report import run_report
    return run_report(node.params["datasets"], {name: result.metrics for name, result in up.items()}, out)


def _tag(config, node, out, up, ctx):
    from bioray.tasks.tagging import run_tagging
    model = next(Path(result.path) / "model" for name, result in up.items() if name.startswith("finetune/"))
    stats = run_tagging(model, Path(up["ingest"].path) / "documents", out, actors=config.tag.actors,
                        max_length=config.finetune.max_length, batch_size=config.tag.batch_size)
    return {"tag/documents": stats["documents"], "tag/entities": stats["entities"]}


def _register(config, node, out, up, ctx):
    from bioray.pipeline.register import run_register
    scores = {f"{name.split('/', 1)[1]}/{metric}": value for name, result in up.items() if name.startswith("evaluate/")
              for metric, value in result.metrics.items() if not metric.startswith("stage/")}
    report = {k: v for k, v in up["report"].metrics.items() if k.startswith("report/")}
    return run_register(config.registry, encoder_dir=Path(up["pretrain"].path) / "model", scores=scores,
                        report_scores=report, run_id=ctx["run_id"], tracking_uri=ctx["tracking_uri"], output=out)


RUNNERS = {"ingest": _ingest, "vocab": _vocab, "tokenize": _tokenize, "pretrain": _pretrain,
           "finetune": _finetune, "evaluate": _evaluate, "report": _report, "tag": _tag,
           "register": _register}


def execute_node(node: Node, key: str, config_json: str, run_id: str, tracking_uri: str,
                 *upstream: StageResult) -> StageResult:
    """Run one stage into a temporary directory, then commit it with an atomic rename."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    config = WorkflowConfig.model_validate_json(config_json)
    final, tmp = stage_dir(config, node.name, key), config.paths.stage_tmp(node.name, key)
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:  # read-only volume, full disk, a file where the directory should be
        raise OSError(f"stage {node.name}: cannot write its output under {final.parent}: {exc.strerror or exc}") from exc
    try:
        context = {"key": key, "run_id": run_id, "tracking_uri": tracking_uri}
        import ray  # the node the stage ran on: on a cluster, where to look for its logs
        _set_run_tag(context, "ray.node_id", ray.get_runtime_context().get_node_id())
        started = time.perf_counter()
        metrics = (node.run or RUNNERS[node.kind])(config, node, tmp, {u.name: u for u in upstream}, context)
        metrics["stage/seconds"] = time.perf_counter() - started
        (tmp / "stage.yaml").write_text(yaml.safe_dump({"name": node.name, "key": key, "params": node.params,
                                                        "code": code_version(node.kind),
                                                        "inputs": {u.name: u.key for u in upstream}}, sort_keys=False))
        result = StageResult(node.name, key, str(final), metrics)
        result.save(tmp)
        if final.exists():  # a concurrent run committed the same key first: keep its output
            config.paths.remove(tmp)
        else:
            os.rename(tmp, final)
        return result
    except BaseException:
        config.paths.remove(tmp)
        raise
