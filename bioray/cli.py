"""`bioray` command line: run the whole DAG, one stage (with its inputs), or show what is cached."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from bioray.config import ConfigError
from bioray.console import terminal
from bioray.workdir import UnsafePath

workflow_argument = click.argument("workflow", type=click.Path(dir_okay=False))
set_option = click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                          help="Override a config value (repeatable), e.g. --set finetune.lr=3e-5.")
force_option = click.option("--force", "force", multiple=True, metavar="STAGE",
                            help="Run STAGE (a stage, e.g. pretrain, or one instance, e.g. finetune/ncbi-disease/"
                                 "seed-42) and everything downstream of it again, even if cached (repeatable).")
verbose_option = click.option("-v", "--verbose", is_flag=True,
                              help="Everything on the terminal: Ray's, DeepSpeed's and MLflow's output too "
                                   "(default: bioray's lines only, the rest in a log file under the workdir).")
address_option = click.option("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a "
                                                              "local Ray).")


def _load(workflow: str, overrides: tuple[str, ...], address: str | None = None, read_datasets: bool = False):
    from bioray.pipeline.inputs import load_checked

    try:
        config = load_checked(workflow, list(overrides), read_datasets)
    except ConfigError as exc:
        _fail(str(exc))
    if address:
        config.ray.address = address
    return config


def _fail(message: str) -> NoReturn:
    """The one way a command stops on bad input: `error: <message>` on the terminal, exit status 2."""
    click.echo(f"error: {message}", file=terminal.err)
    sys.exit(2)


def _or_exit(action):
    """action(), or _fail with the message of a config error found only now (an unresolvable model URI,
    a stage path that a symlink in the workdir sends elsewhere)."""
    try:
        return action()
    except (ConfigError, UnsafePath) as exc:
        _fail(str(exc))


def _run_scheduled(config, workflow_file: str, quiet: bool):
    """A workflow with a `repretrain` section: the lock, the fetch, nothing at all when nothing is new."""
    from bioray.pipeline.repretrain import run_scheduled
    from bioray.pipeline.runner import run_workflow

    outcome = _or_exit(lambda: run_scheduled(config, lambda resolved: run_workflow(resolved, None, workflow_file,
                                                                                   quiet=quiet)))
    click.echo(f"bioray: {outcome.message}", file=terminal.out)
    for name, error in outcome.fetch_failed.items():
        click.echo(f"bioray: fetch of {name} failed ({error}); it is fetched again next run", file=terminal.err)
    if outcome.summary is None:
        sys.exit(1 if outcome.fetch_failed else 0)
    return outcome.summary, outcome.fetch_failed


def _run(workflow: str, overrides, address, stage: str | None, force: tuple[str, ...] = (),
         verbose: bool = False) -> None:
    config = _load(workflow, overrides, address, read_datasets=True)
    if config.repretrain is not None and stage is None and force:
        _fail("--force does not apply to a scheduled re-pretraining run")
    from datetime import datetime

    from bioray.console import pipeline_output

    started = datetime.now().strftime("%Y%m%d-%H%M%S")
    log_file = _or_exit(lambda: config.paths.log_file(f"{started}-{stage or 'run'}-{os.getpid()}.log"))
    from bioray.pipeline.preemption import EXIT_CODE, DriverPreempted

    preempted = None
    with pipeline_output(log_file, verbose):
        try:
            failed = _run_pipeline(config, os.path.abspath(workflow), stage, force, verbose)
        except DriverPreempted as exc:
            preempted = str(exc)
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()  # now, so that what its teardown prints goes to the log too
    if preempted:  # one line, and the status a scheduler can tell from a failure
        import shlex

        again = shlex.join(["bioray", stage or "run", workflow, *(arg for o in overrides for arg in ("--set", o))])
        click.echo(f"bioray: {preempted}; `{again}` again resumes", file=terminal.err)
        sys.exit(EXIT_CODE)
    if failed:
        sys.exit(1)


def _run_pipeline(config, workflow_file: str, stage: str | None, force: tuple[str, ...], verbose: bool) -> bool:
    """The pipeline, and its summary on the terminal; whether anything failed."""
    from bioray.pipeline.model_refs import resolve_model_refs
    from bioray.pipeline.plan import build_plan, nodes_for
    from bioray.pipeline.runner import run_workflow

    fetch_failed: dict[str, str] = {}
    if config.repretrain is not None and stage is None:
        summary, fetch_failed = _run_scheduled(config, workflow_file, quiet=not verbose)
    else:
        _or_exit(lambda: resolve_model_refs(config))
        targets = nodes_for(build_plan(config), stage) if stage else None
        summary = _or_exit(lambda: run_workflow(config, targets, workflow_file=workflow_file, force=force,
                                                quiet=not verbose))
    ran = [n for n, r in summary.results.items() if not r.cached]
    cached = [n for n, r in summary.results.items() if r.cached]
    click.echo(f"bioray: {len(ran)} stage(s) ran, {len(cached)} cached, {len(summary.failed)} failed "
               f"in {summary.seconds:.1f}s; MLflow parent run {summary.parent_run_id}", file=terminal.out)
    if summary.waited_for_cpus:
        click.echo(f"bioray: {len(summary.waited_for_cpus)} training stage(s) waited for free CPUs", file=terminal.out)
    if verbose:
        for name, result in summary.results.items():
            click.echo(f"  {name:36s} {'cached' if result.cached else 'ran':6s} {result.path}", file=terminal.out)
    for name, error in summary.failed.items():
        click.echo(f"  {name:36s} FAILED {error}", file=terminal.err)
    return bool(summary.failed or fetch_failed)


# `bioray --help` lists commands in these sections, in this order, each with an example
SECTIONS = {
    "Pipeline": (("run", "validate", "status", "gc", "fetch"), "bioray run workflows/quickstart.yaml"),
    "Single stages (and the stale stages they need)": ((), "bioray finetune workflows/blurb.yaml --force finetune"),
    "Models": (("predict", "tag-documents"), "echo 'BRCA1 mutations cause breast cancer .' | bioray predict "
               "--model models:/bioray-ner-ncbi-disease@challenger --workflow workflows/quickstart.yaml"),
    "Benchmarks": (("bench",), "bioray bench quality --arms random,scratch --datasets ncbi-disease --budget-minutes 5"),
}


class _Sections(click.Group):
    """`--help` shows the commands by section (commands no section names are the single stages)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        named = {name for names, _ in SECTIONS.values() for name in names}
        for title, (names, example) in SECTIONS.items():
            names = names or tuple(n for n in self.commands if n not in named)
            rows = [(n, self.commands[n].get_short_help_str(limit=90)) for n in names if n in self.commands]
            with formatter.section(title):
                formatter.write_dl(rows)
                formatter.write_paragraph()
                formatter.write_text(f"e.g. {example}")


@click.group(cls=_Sections, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="bioray", message="%(prog)s %(version)s")
def main() -> None:
    """bioray: pretrain, fine-tune and evaluate BioBERT-style encoders on Ray + DeepSpeed, tracked in MLflow."""


@main.command()
@workflow_argument
@set_option
@force_option
@address_option
@verbose_option
def run(workflow, overrides, force, address, verbose):
    """Run every stage of WORKFLOW (cached stages are reused, not re-run)."""
    _run(workflow, overrides, address, None, force, verbose)


def _stage_command(stage: str, help_text: str):
    @main.command(name=stage, help=f"{help_text} Runs its stale inputs first.")
    @workflow_argument
    @set_option
    @force_option
    @address_option
    @verbose_option
    def command(workflow, overrides, force, address, verbose):
        _run(workflow, overrides, address, stage, force, verbose)

    return command


def _stage_commands() -> None:
    from bioray.pipeline.stage_kinds import STAGES

    for stage in STAGES:
        _stage_command(stage.kind, stage.help)


_stage_commands()


@main.command()
@workflow_argument
@set_option
@click.option("--digests", is_flag=True, help="Show each cached output's content digest (compare two workdirs).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table (digests included).")
def status(workflow, overrides, digests, as_json):
    """List each stage of WORKFLOW as cached, running, interrupted, failed or stale, with its key and output."""
    config = _load(workflow, overrides)
    from bioray.pipeline.stage_state import STATUSES, stage_status

    rows = _or_exit(lambda: stage_status(config))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        shown = f"{row.get('digest') or '-':16s}  " if digests else ""
        shown += f"(may differ between runs: {row['nondeterministic']})  " if digests and row.get("nondeterministic") \
            else ""
        click.echo(f"{row['stage']:36s} {row['status']:11s} {row['key']}  {shown}{row['output']}"
                   + (f"\n{'':36s} {row['error']}" if row.get("error") else ""))
    counts = {status: sum(row["status"] == status for row in rows) for status in STATUSES}
    click.echo(f"{len(rows)} stages: " + ", ".join(f"{n} {status}" for status, n in counts.items() if n))


@main.command()
@click.argument("workflows", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--delete", is_flag=True, help="Remove what is listed (default: only list it).")
def gc(workflows, delete):
    """List (and with --delete remove) the stage outputs in the WORKFLOWS' workdirs that none of them
    references any more: give every workflow that shares a workdir."""
    from bioray.pipeline.gc import find_garbage

    configs = [_load(workflow, ()) for workflow in workflows]
    for root, garbage in _or_exit(lambda: find_garbage(configs)).items():
        paths = next(config.paths for config in configs if config.paths.root == root)
        for item in garbage:
            click.echo(f"{'removed' if delete else 'would remove'} {item.path}  ({item.bytes / 1e6:.1f} MB: "
                       f"{item.why})")
            if delete:
                paths.remove(item.path)
        size = sum(item.bytes for item in garbage)
        click.echo(f"{root}: {len(garbage)} item(s), {size / 1e6:.1f} MB"
                   + ("" if delete or not garbage else "; run again with --delete to remove them"))


@main.command()
@click.argument("destination", type=click.Path(file_okay=False))
@click.option("--source", type=click.Choice(["pubmed-baseline", "pubmed-updates", "pmc-oa", "benchmarks"]),
              default="pubmed-updates", show_default=True,
              help="Which NLM collection to mirror, or the public benchmark files (by URL and SHA-256).")
@click.option("--url", default=None, help="Listing (PubMed) or bucket (PMC) URL instead of NLM's, or (benchmarks) a "
                                          "base URL holding the files' paths: a mirror.")
@click.option("--dataset", "datasets", multiple=True, help="benchmarks: only this one (repeatable; default all).")
@click.option("--prefix", default=None, help="pmc-oa: the bucket prefix to mirror (default oa_comm/xml/all/).")
@click.option("--limit", type=int, default=None, help="At most this many files of the listing (the first ones).")
def fetch(destination, source, url, prefix, limit, datasets):
    """Download the PubMed / PMC OA files, or the benchmark files, DESTINATION lacks (resuming partial
    ones, checking checksums)."""
    from bioray.corpus import fetch as nlm

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if source == "benchmarks":
        from bioray.tasks.downloads import fetch_benchmarks

        try:
            report = fetch_benchmarks(Path(destination), tuple(datasets), url)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    elif source == "pmc-oa":
        report = nlm.fetch_s3_prefix(url or nlm.PMC_OA_BUCKET, prefix or nlm.PMC_OA_PREFIX, Path(destination),
                                     limit=limit)
    else:
        listing = url or (nlm.PUBMED_BASELINE if source == "pubmed-baseline" else nlm.PUBMED_UPDATES)
        report = nlm.fetch_pubmed(listing, Path(destination), limit=limit)
    click.echo(json.dumps(report.__dict__, indent=2))
    if report.failed:
        sys.exit(1)


@main.group()
def bench() -> None:
    """Benchmarks (speed is measured here, never asserted in tests)."""


def run_bench(as_json: bool, measure, render) -> None:
    """Run a bench; print the table its module renders, or its result as one JSON object: then stdout
    carries only that, everything printed meanwhile (Ray's forwarded worker logs included) going to
    stderr, and Ray is shut down first (its log thread prints late)."""
    if not as_json:
        click.echo(render(measure()))
        return
    import ray

    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        result = measure()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    click.echo(json.dumps(result))


@bench.command(name="tokenize")
@click.option("--data", "data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Raw corpus directory (.jsonl[.gz], MEDLINE/PMC .xml[.gz], .nxml, .txt).")
@click.option("--tokenizer", type=click.Path(exists=True, file_okay=False), default=None,
              help="HF tokenizer directory (default: train a 30,522-piece WordPiece on the corpus, untimed).")
@click.option("--seq-len", type=int, default=128, show_default=True)
@click.option("--scale", "scales", default="1", show_default=True, callback=lambda _c, _p, v: _scales(v),
              help="Corpus sizes to run, comma-separated multiples (distinct copies of the JSON Lines and text "
                   "sources), each in a fresh process and Ray session: `--scale 1,10` is the bounded-memory check "
                   "(memory_growth_* = peak at the last / peak at the first).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_tokenize_command(data, tokenizer, seq_len, scales, as_json):
    """Raw tokenizer vs. the Ray Data tokenize+pack stage vs. ingest, in one run."""
    from bioray.bench.tokenize import bench_tokenize_scales, render

    run_bench(as_json, lambda: bench_tokenize_scales(Path(data), Path(tokenizer) if tokenizer else None, seq_len,
                                                     scales), render)


def _scales(value: str) -> list[int]:
    try:
        scales = [int(part) for part in value.split(",")]
    except ValueError:
        scales = []
    if not scales or min(scales) < 1:
        raise click.BadParameter(f"expected positive whole numbers separated by commas (e.g. 1,10), got {value!r}")
    return scales


@bench.command(name="pretrain")
@click.option("--data", "data", type=click.Path(exists=True, file_okay=False), default=None,
              help="Text files, one document per line (default: ../shared/data/pubmed-raw/abstracts_one_per_line).")
@click.option("--tokenizer", type=click.Path(exists=True, file_okay=False), default=None,
              help="HF tokenizer directory (default: train a WordPiece of up to 30,522 pieces on the text, untimed).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cpu: T=128, fp32; cuda: T=128 and T=512, bf16, compiled.")
@click.option("--model-size", "size", type=click.Choice(["tiny", "base"]), default=None,
              help="tiny: a 2 x 128 BERT (the default on cpu); base: BERT-base, 12 layers x 768 hidden, 12 heads, "
                   "3072 feed-forward, 30,522 vocabulary rows (the default on cuda). On cpu, base measures a few "
                   "steps only: batch 8 at T=128, 1 warmup step, then 4 batches' worth of real tokens (4 x 8 x 128) "
                   "per arm unless --tokens says otherwise (the line-by-line arm needs more, smaller steps for them).")
@click.option("--seq-len", "seq_lens", type=int, multiple=True,
              help="Sequence lengths to measure (repeatable; default per device).")
@click.option("--tokens", "budget", type=int, default=None,
              help="Real tokens each arm trains on per setting (default: cpu tiny 150,000, cpu base 4 batches, "
                   "cuda 10,000,000).")
@click.option("--breakdown/--no-breakdown", default=True, show_default=True,
              help="Profile 2 more bioray steps per setting (CPU) and say where their time went: GEMM, attention, "
                   "layer norm, activation, dropout, embedding, loss, optimizer, other.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_pretrain_command(data, tokenizer, device, size, seq_lens, budget, breakdown, as_json):
    """bioray's pretraining step vs. HF run_mlm's step, line by line and packed: real tokens/s, MFU, in one run,
    and each against this machine's measured GEMM peak at the model's shapes."""
    from bioray.bench.pretrain import bench_pretrain, render

    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pubmed-raw" / "abstracts_one_per_line"
    run_bench(as_json, lambda: bench_pretrain(Path(data) if data else default, Path(tokenizer) if tokenizer else None,
                                              budget, device=device, seq_lens=tuple(seq_lens) or None, size=size,
                                              breakdown=breakdown),
              render)


@bench.command(name="finetune")
@click.option("--data", "data", type=click.Path(exists=True, file_okay=False), default=None,
              help="BioBERT-format NER folder with train.tsv and test.tsv "
                   "(default: ../shared/data/NCBI-disease/biobert).")
@click.option("--model", "model", type=click.Path(exists=True, file_okay=False), default=None,
              help="Initial HF checkpoint for both sides (default: a tiny BERT with a vocabulary of the training "
                   "text).")
@click.option("--epochs", type=int, default=3, show_default=True)
@click.option("--seeds", default="42", show_default=True,
              help="Comma-separated seeds: both sides run once per seed; F1 and speed are means, with standard "
                   "errors (5 or more seeds recommended).")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--size", type=click.Choice(["mini", "tiny"]), default="mini", show_default=True,
              help="Shape of the default initial checkpoint: BERT-mini (4 layers, 256 hidden) or tiny (2, 128).")
@click.option("--max-train", type=int, default=None, help="Use only the first N training sentences (a quick check).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes a side: above 1, bioray's run_finetune on a group of that many Ray workers vs. the HF "
                   "Trainer on that many torchrun processes (gloo), each with cores / N torch threads; "
                   "--batch-size is the global batch and must divide by N.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_finetune_command(data, model, epochs, seeds, lr, batch_size, size, max_train, workers, as_json):
    """bioray's NER fine-tuning vs. a plain HF Trainer: entity F1 and examples/s, in one run."""
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        _fail("the HF Trainer baseline needs accelerate: pip install -e '.[bench]'")

    if batch_size % workers:
        raise click.BadParameter(f"{batch_size} is not divisible by --workers {workers} (the HF Trainer's "
                                 "processes take batch-size / workers sentences a step)", param_hint="--batch-size")
    from bioray.bench.finetune import bench_finetune, render

    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "NCBI-disease" / "biobert"
    run_bench(as_json, lambda: bench_finetune(Path(data) if data else default, Path(model) if model else None,
                                              epochs=epochs, seeds=tuple(int(s) for s in seeds.split(",")), lr=lr,
                                              batch_size=batch_size, size=size, max_train=max_train,
                                              workers=workers), render)


def _ncbi_disease_default() -> Path:
    """The NCBI-disease folder where the tests find it: $BIORAY_DATA_ROOT, ../shared/data beside the
    checkout, else the repository's sample-data/ (a bare clone)."""
    repo = Path(__file__).resolve().parents[1]
    roots = [os.environ.get("BIORAY_DATA_ROOT", ""), str(repo.parent / "shared" / "data"), str(repo / "sample-data")]
    folders = [Path(root) / "NCBI-disease" / "biobert" for root in roots if root]
    return next((folder for folder in folders if (folder / "train.tsv").is_file()), folders[-1])


@bench.command(name="fanout")
@click.option("--data", "data", type=click.Path(exists=True, file_okay=False), default=None,
              help="BioBERT-format NER folder with train.tsv and test.tsv (default: NCBI-disease/biobert under "
                   "$BIORAY_DATA_ROOT, else ../shared/data, else the repository's sample-data).")
@click.option("--stages", type=click.IntRange(min=1), default=20, show_default=True,
              help="Fine-tuning runs K: seeds x the most of the lr grid that divides K (20: 5 seeds x 4 rates).")
@click.option("--lrs", default="1e-3,5e-4,3e-4,1e-4", show_default=True, help="The learning-rate grid.")
@click.option("--max-train", type=click.IntRange(min=1), default=200, show_default=True,
              help="Training sentences per run (the first N).")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_fanout_command(data, stages, lrs, max_train, epochs, batch_size, as_json):
    """K small fine-tunes as pipeline stages vs. HF's Trainer one after another in one process vs. every core
    training: stages/hour and each stage's start-up, in one run."""
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        _fail("the HF Trainer baseline needs accelerate: pip install -e '.[bench]'")
    try:
        grid = tuple(float(lr) for lr in lrs.split(","))
    except ValueError:
        grid = ()
    if not grid or min(grid) <= 0:
        raise click.BadParameter(f"expected positive numbers separated by commas, got {lrs!r}", param_hint="--lrs")
    from bioray.bench.fanout import bench_fanout, render

    run_bench(as_json, lambda: bench_fanout(Path(data) if data else _ncbi_disease_default(), stages, max_train,
                                            epochs, batch_size, lrs=grid), render)


@bench.command(name="quality")
@click.option("--workflow", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The recipe (default: workflows/miniature.yaml of this checkout).")
@click.option("--workdir", type=click.Path(file_okay=False), default="./work/quality", show_default=True,
              help="Stage outputs and MLflow store (cached stages are reused by a second run).")
@click.option("--arms", default="random,scratch,general-scratch,general,continued", show_default=True,
              help="Comma-separated arms: random, scratch, general-scratch, general, continued.")
@click.option("--budget-minutes", type=float, default=None,
              help="Pretraining budget per pretrained arm in minutes (steps from this machine's training rate; "
                   "default: 15 when --budget-tokens is not given).")
@click.option("--budget-tokens", type=int, default=None, help="Pretraining budget per pretrained arm in tokens.")
@click.option("--seeds", default="42,43,44", show_default=True, help="Comma-separated fine-tuning seeds.")
@click.option("--datasets", default=None, help="Comma-separated dataset names of the workflow (default: all).")
@click.option("--max-train", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Fine-tune on the first N training sentences of each dataset (0: all of them).")
@click.option("--max-docs", type=click.IntRange(min=1), default=None,
              help="Read at most N documents of each corpus source file (a quick run: less to ingest and tokenize).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_quality_command(workflow, workdir, arms, budget_minutes, budget_tokens, seeds, datasets, max_train, max_docs,
                          as_json):
    """The same fine-tuning from different starting points: F1 mean +- std per arm and dataset (each fine-tune
    to its dev plateau), the scratch arm's learning curve and the domain matrix of held-out loss (one DAG of
    workflows/miniature.yaml, tracked in MLflow)."""
    from bioray.bench.quality import DEFAULT_BUDGET_MINUTES, bench_quality, render

    if budget_minutes is not None and budget_tokens is not None:
        _fail("give --budget-minutes or --budget-tokens, not both")
    if budget_tokens is None and budget_minutes is None:
        budget_minutes = DEFAULT_BUDGET_MINUTES
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    default = Path(__file__).resolve().parents[1] / "workflows" / "miniature.yaml"
    try:
        run_bench(as_json, lambda: bench_quality(Path(workflow) if workflow else default, Path(workdir).resolve(),
                                                 arms.split(","), [int(s) for s in seeds.split(",")],
                                                 datasets.split(",") if datasets else None, max_train or None,
                                                 budget_tokens, budget_minutes, max_docs=max_docs), render)
    except (ValueError, ConfigError) as exc:
        _fail(str(exc))


def _model_directory(uri: str, workflow: str | None):
    """The fine-tuned model's local directory, downloaded from the workflow's tracking store (else
    MLFLOW_TRACKING_URI) for an MLflow URI; what cannot be used exits 2 with one line."""
    from bioray.tracking.models import resolve_model
    from bioray.tracking.store import tracking_uri_for

    tracking = None
    if workflow:
        config = _load(workflow, ())
        tracking = tracking_uri_for(config.tracking.uri, config.paths.mlflow_db)
    try:
        return resolve_model(uri, tracking)
    except (OSError, ValueError) as exc:
        _fail(f"--model {exc}")


model_workflow_option = click.option("--workflow", type=click.Path(exists=True, dir_okay=False), default=None,
                                     help="Read an MLflow --model URI from this workflow's tracking store "
                                          "(default: MLFLOW_TRACKING_URI).")


@main.command()
@click.option("--model", "uri", required=True,
              help="Fine-tuned model: a directory, or an MLflow URI (models:/name@alias, runs:/<id>/path).")
@model_workflow_option
@click.option("--input", "source", type=click.File("r"), default="-", show_default=True,
              help="Text, one input per line (a tab separates a pair: sentence pairs, question<TAB>context).")
@click.option("--max-length", type=int, default=None, help="Sub-tokens per window (default 128 for NER, 512 "
                                                           "otherwise).")
@click.option("--batch-size", type=int, default=32, show_default=True)
def predict(uri, workflow, source, max_length, batch_size):
    """Run a fine-tuned model on raw text; print one JSON line per input line: entities with character
    offsets, types and scores (NER models), or labels with probabilities (classification models)."""
    from bioray.tasks.inference import Predictor

    directory = _model_directory(uri, workflow)
    lines = [line.rstrip("\n") for line in source]
    try:
        results = Predictor(directory)(lines, max_length, batch_size)
    except (OSError, ValueError) as exc:
        _fail(f"--model {uri}: {exc}")
    for number, (line, result) in enumerate(zip(lines, results), start=1):
        click.echo(json.dumps({"line": number, "text": line, **result}))


@main.command(name="tag-documents")
@click.option("--model", "uri", required=True, help="Fine-tuned NER model: a directory or an MLflow URI.")
@model_workflow_option
@click.option("--documents", required=True, type=click.Path(exists=True, file_okay=False),
              help="A documents Parquet folder (the ingest stage's documents/: doc_id, source, text, sentence_starts).")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Where entities/*.parquet go.")
@click.option("--actors", type=int, default=1, show_default=True, help="Ray Data actors holding a model.")
@click.option("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray).")
def tag_documents(uri, workflow, documents, output, actors, address):
    """Batch inference: tag every document with a fine-tuned NER model on Ray Data; write an
    entities Parquet (doc_id, source, start, end, text, type, score)."""
    import ray

    from bioray.tasks.tagging import run_tagging

    directory = _model_directory(uri, workflow)
    Path(output).mkdir(parents=True, exist_ok=True)
    ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
    stats = run_tagging(directory, Path(documents), Path(output), actors=actors)
    click.echo(json.dumps(stats))


@main.command()
@workflow_argument
@set_option
def validate(workflow, overrides):
    """Check WORKFLOW (keys, types, input files, every dataset split's contents) without starting anything."""
    config = _load(workflow, overrides, read_datasets=True)
    click.echo(f"{workflow}: ok (data_root {config.data_root})")


def _plugin_benches() -> None:
    """Benchmarks other packages add: click commands of the `bioray.bench` entry point group."""
    for entry in importlib.metadata.entry_points(group="bioray.bench"):
        try:
            bench.add_command(entry.load(), name=entry.name)
        except Exception as exc:  # a broken plugin must not take the other commands with it
            click.echo(f"bioray bench {entry.name}: not loaded ({type(exc).__name__}: {exc})", err=True)


_plugin_benches()

if __name__ == "__main__":
    main()
