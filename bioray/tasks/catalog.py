"""The task types and dataset formats bioray knows, each named once.

Entries are import paths, loaded when first used, so a stage's code key covers only the task type
and format its dataset uses. Adding a task type: one module with a `Task` subclass and one line in
TASK_TYPES (or, outside bioray, `register_task` in a workflow's plugin); adding a format: one module
with a `Format` subclass and one line in FORMATS (or `register_format`), named in the `formats` of
the task types that read it or naming them in its own `tasks`.
"""

from __future__ import annotations

import difflib
import importlib

from pydantic import ValidationError

TASK_TYPES: dict[str, str] = {
    "ner": "bioray.tasks.ner:NerTask",
    "relation": "bioray.tasks.relation:RelationTask",
    "similarity": "bioray.tasks.similarity:SimilarityTask",
    "doc_classification": "bioray.tasks.doc_classification:DocClassificationTask",
    "qa_yesno": "bioray.tasks.qa_yesno:YesNoTask",
    "qa_factoid": "bioray.tasks.qa_factoid:FactoidTask",
    "qa_list": "bioray.tasks.qa_list:ListTask",
}
FORMATS: dict[str, str] = {
    "conll": "bioray.tasks.formats.conll:ConllFormat",
    "pubtator": "bioray.tasks.formats.pubtator:PubtatorFormat",
    "tsv": "bioray.tasks.formats.table:TsvFormat",
    "jsonl": "bioray.tasks.formats.table:JsonlFormat",
    "hoc": "bioray.tasks.formats.hoc:HocFormat",
    "pubmedqa": "bioray.tasks.formats.pubmedqa:PubmedqaFormat",
    "squad": "bioray.tasks.formats.squad:SquadFormat",
    "ddi_xml": "bioray.tasks.formats.ddi_xml:DdiXmlFormat",
    "bioasq": "bioray.tasks.formats.bioasq:BioasqFormat",
}
_classes: dict[str, type] = {}  # task types and formats registered as classes (tests, plugins)


def register_task(name: str, task_class: type) -> None:
    """Add a task type from outside bioray (a class following bioray.tasks.base.Task)."""
    TASK_TYPES[name] = f"{task_class.__module__}:{task_class.__qualname__}"
    _classes[TASK_TYPES[name]] = task_class


def register_format(name: str, format_class: type) -> None:
    """Add a dataset format from outside bioray (a bioray.tasks.formats.base.Format subclass)."""
    FORMATS[name] = f"{format_class.__module__}:{format_class.__qualname__}"
    _classes[FORMATS[name]] = format_class


def _load(path: str) -> type:
    if path not in _classes:
        module, _, name = path.partition(":")
        _classes[path] = getattr(importlib.import_module(module), name)
    return _classes[path]


def task_class(name: str) -> type:
    if name not in TASK_TYPES:
        raise KeyError(f"unknown task type {name!r} (known: {', '.join(TASK_TYPES)})")
    return _load(TASK_TYPES[name])


def format_name(dataset) -> str:
    """The entry's format, or its task type's default."""
    return dataset.format or task_class(dataset.task).formats[0]


def task_for(dataset):
    """The task type object of a dataset entry."""
    return task_class(dataset.task)(dataset)


def format_for(dataset):
    """The format object that reads a dataset entry's files, with the entry's options (its keys beyond
    DatasetConfig's; pydantic.ValidationError when they do not fit: entry_problems says so first)."""
    reader = _load(FORMATS[format_name(dataset)])
    return reader(reader.Options.model_validate(dataset.model_extra or {}))


def code_modules(dataset) -> tuple[str, ...]:
    """The modules of the task type and format a dataset entry uses (roots of a stage's code key)."""
    return (TASK_TYPES[dataset.task].partition(":")[0], FORMATS[format_name(dataset)].partition(":")[0])


def entry_problems(dataset, where: str) -> list[str]:
    """What is wrong with a dataset entry's task type, format and files keys, each naming the key."""
    if dataset.task not in TASK_TYPES:
        return [f"{where}.task: unknown task type {dataset.task!r} (known: {', '.join(TASK_TYPES)})"]
    accepted = task_class(dataset.task).formats
    if dataset.format is not None and dataset.format not in FORMATS:
        return [f"{where}.format: unknown format {dataset.format!r} (known: {', '.join(FORMATS)})"]
    if dataset.format is not None and dataset.format not in accepted and \
            dataset.task not in _load(FORMATS[dataset.format]).tasks:
        return [f"{where}.format: {dataset.format!r} does not fit task {dataset.task!r} (expected one of "
                f"{list(accepted)})"]
    try:
        reader = format_for(dataset)
    except ValidationError as exc:
        return [f"{where}.{problem}" for problem in _option_problems(exc, dataset)]
    problems = task_class(dataset.task).entry_problems(dataset) + reader.entry_problems(dataset)
    return [f"{where}.{problem}" for problem in problems]


def _option_problems(error: ValidationError, dataset) -> list[str]:
    """A format's options that do not fit it, as `key: problem` lines; an unknown key names the format,
    what it takes, and the formats that take it or the closest key."""
    name, options = format_name(dataset), _load(FORMATS[format_name(dataset)]).Options
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            takers = [other for other, path in FORMATS.items() if key in _load(path).Options.model_fields]
            close = difflib.get_close_matches(key, [*type(dataset).model_fields, *options.model_fields], 1, 0.75)
            hint = f"; it is an option of {', '.join(takers)}" if takers else "".join(f"; did you mean {c!r}?"
                                                                                   for c in close)
            problems.append(f"{key}: unknown key for format {name!r} (its options: "
                            f"{', '.join(options.model_fields) or 'none'}{hint})")
        else:
            problems.append(f"{key}: {item['msg']} (got {item['input']!r})")
    return problems
