"""`bioray --help` lists every command exactly once, by section, each section with an example;
`bioray --version` prints the installed version."""

from __future__ import annotations

import re
from importlib.metadata import version

from click.testing import CliRunner

from bioray.cli import SECTIONS, main


def test_help_lists_every_command_once_by_section():
    output = CliRunner().invoke(main, ["--help"], prog_name="bioray").output
    listed = re.findall(r"^  ([a-z][a-z-]*)  ", output, flags=re.M)
    assert sorted(listed) == sorted(main.commands)
    titles = [line[:-1] for line in output.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert titles == ["Usage", "Options", *SECTIONS] or titles == ["Options", *SECTIONS]
    assert output.count("\n  e.g. ") == len(SECTIONS)
    pipeline = output[output.index("Pipeline:"):output.index("Single stages")]
    assert "  run " in pipeline and "  finetune " not in pipeline


def test_version():
    done = CliRunner().invoke(main, ["--version"], prog_name="bioray")
    assert done.exit_code == 0 and done.output == f"bioray {version('bioray')}\n"
