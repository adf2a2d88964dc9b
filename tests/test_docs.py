"""The reference pages cannot drift from the code: every key of the workflow schema is on
docs/configuration.md (a list entry's keys there or, for datasets, on docs/datasets.md, with each
format's options in its row of the formats table) and every key there is in the schema; every command
and option of the CLI is on docs/cli.md and every command there exists."""

from __future__ import annotations

import re

import click

from bioray.cli import main
from bioray.config import WorkflowConfig, section_model
from bioray.tasks import catalog
from tests.support.cli import REPO


def _schema_keys(model, prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        section = section_model(field.annotation)
        if section is None:
            keys.add(prefix + name)
        else:
            is_list = "list[" in str(field.annotation)
            keys |= _schema_keys(section, f"{prefix}{name}{'[]' if is_list else ''}.")
    return keys


def _expand(token: str) -> list[str]:
    """`a.{b,c}` -> a.b, a.c"""
    match = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", token)
    return [f"{match[1]}{part.strip()}{match[3]}" for part in match[2].split(",")] if match else [token]


def _documented_keys() -> set[str]:
    """First column: `section.key`, then keys of the same section (`lr`, `weight_decay`); `x.{a,b}`. A list
    entry's keys are listed in its row as `{name, format: text|jsonl, path, ...}`; datasets' on datasets.md."""
    keys = set()
    for row in re.findall(r"^\| (`[^|]*`(?: / `[^|]*`)*[^|]*) \|[^|]*\|(.*)\|$",
                          (REPO / "docs" / "configuration.md").read_text(), re.M):
        tokens = re.findall(r"`([^`]+)`", row[0])
        prefix = tokens[0].rpartition(".")[0]
        for i, token in enumerate(tokens):
            keys.update(_expand(token if i == 0 else f"{prefix}.{token}"))
        if tokens[0].endswith("[]"):
            listed = re.search(r"`\{([^`]*)\}`", row[1])
            items = listed[1].split(",") if listed else []
            keys.update(f"{tokens[0]}.{item.split(':')[0].strip()}" for item in items)
    entry_keys = _DATASETS.split("| format |")[0]  # the paragraph before the table of format options
    keys.update(f"finetune.datasets[].{key}" for key in re.findall(r"`([a-z_]+)`", entry_keys))
    return keys


_DATASETS = (REPO / "docs" / "datasets.md").read_text()


def _keys(model) -> set[str]:
    """A model's keys, a nested model's as `key.{a, b}` is written: key.a, key.b."""
    return {f"{name}.{inner}" if inner else name for name, field in model.model_fields.items()
            for inner in (sorted(section_model(field.annotation).model_fields) if section_model(field.annotation)
                          else [""])}


def test_every_format_s_options_are_its_row_on_the_datasets_page():
    table = _DATASETS.split("| format |")[1].split("\n\n")[0]
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.*) \|$", table, re.M))
    assert sorted(rows) == sorted(catalog.FORMATS)
    for name, path in catalog.FORMATS.items():
        documented = set()
        for key, _, inner in re.findall(r"`([a-z_]+)(: \{([^}]*)\})?`", rows[name]):
            documented |= {f"{key}.{part.strip()}" for part in inner.split(",")} if inner else {key}
        options = _keys(catalog._load(path).Options)
        assert sorted(options - documented) == [], name


def test_every_workflow_key_is_documented_and_every_documented_key_exists():
    schema, documented = _schema_keys(WorkflowConfig), _documented_keys()
    assert sorted(schema - documented) == []
    lists = {key.rpartition(".")[0] for key in schema if "[]." in key}
    assert sorted(k for k in documented - schema - lists if not k.startswith("finetune.datasets[].")) == []


def _commands(group: click.Group, path: str = "bioray"):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{path} {name}")
        else:
            yield f"{path} {name}", command


def _same(shown: str, default) -> bool:
    try:
        return float(shown) == float(default)
    except (TypeError, ValueError):
        return shown == str(default)


def test_every_command_and_option_is_on_the_cli_page_with_its_default():
    """Each command's synopsis (first column) names every option; a value shown is the option's default."""
    page = (REPO / "docs" / "cli.md").read_text()
    rows = [row.replace("\\|", "|") for row in re.findall(r"^\| `(bioray [^`]*)` \|", page, re.M)]
    undocumented, wrong_defaults, commands = [], [], set()
    for path, command in _commands(main):
        *parents, name = path.split(" ")
        commands.add(path)
        row = next((r for r in rows if re.match(rf"{' '.join(parents)} (\S*\|)?{re.escape(name)}(\||\s|$)", r)),
                   None)
        if row is None:
            undocumented.append(path)
            continue
        for param in command.params:
            if not isinstance(param, click.Option) or param.opts[0] == "--help":
                continue
            flag = param.opts[0]
            if not re.search(rf"{re.escape(flag)}\b", row):
                undocumented.append(f"{path} {flag}")
            shown = re.search(rf"\[{re.escape(flag)} ([^]\s]+)\]", row)
            if shown and param.default not in (None, ()) and not param.is_flag and not param.multiple \
                    and not _same(shown[1].split("|")[0], param.default):
                wrong_defaults.append(f"{path} {flag} {shown[1]} (default {param.default})")
    assert undocumented == [] and wrong_defaults == []
    named = {" ".join(r.split(" ")[:2]).split("|")[0] for r in rows}
    assert named <= {" ".join(c.split(" ")[:2]) for c in commands}  # no row for a command that does not exist
