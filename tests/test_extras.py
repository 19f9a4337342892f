"""The core install runs without the extras: `import rag` and the CLI start, and a command that needs a missing
extra says so in one line naming it (exit 2).

The extras are installed in the test environment, so a subprocess hides them: a `sitecustomize` on its path puts
a finder first on `sys.meta_path` that raises ImportError for every module the extras bring (and what they pull
in, such as starlette and pdfminer), as a machine without them would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rag.cli.extras import EXTRAS, missing_extra_line, missing_modules

REPO = Path(__file__).resolve().parent.parent
# what `pip install 'shvayambhu[serve,eval,documents]'` adds, by the names they are imported as
BLOCKED = sorted(
    {m for mods in EXTRAS.values() for m in mods}
    | {"starlette", "multipart", "pdfminer", "pdfplumber", "pypdfium2", "bs4", "markdownify", "mammoth", "pptx"}
)
BLOCKER = """
import sys

BLOCKED = frozenset({blocked!r})


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by tests/test_extras.py)", name=name)
        return None


sys.meta_path.insert(0, Blocker())
"""


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of a Python that cannot import any extra."""
    site = tmp_path_factory.mktemp("no_extras")
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=BLOCKED))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHVAYAMBHU_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    env["SHVAYAMBHU_HOME"] = str(tmp_path_factory.mktemp("home"))
    env["HF_HUB_OFFLINE"] = "1"
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run(env, "-m", "rag.cli", *args)


def test_the_blocker_hides_the_extras(bare: dict[str, str]) -> None:
    for module in ("fastapi", "matplotlib", "markitdown", "sacrebleu"):
        out = run(bare, "-c", f"import {module}")
        assert out.returncode == 1 and "hidden by tests/test_extras.py" in out.stderr, (module, out.stderr)


def test_the_core_imports_without_extras(bare: dict[str, str]) -> None:
    code = (
        "import sys, rag, rag.cli, rag.api, rag.pipeline, ingest.pipeline, index.retrieve\n"
        "from rag import Shvayambhu, load_settings\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r}))\n"
    )
    out = run(bare, "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [("--help",), ("ask", "--help"), ("serve", "--help"), ("eval", "answers", "--help")])
def test_help_works_without_extras(bare: dict[str, str], args: tuple[str, ...]) -> None:
    out = cli(bare, *args)
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout


@pytest.mark.parametrize(
    ("args", "command", "extra"),
    [
        (("serve",), "serve", "serve"),
        (("eval", "answers", "bench/data/answers/dev.json"), "eval answers", "eval"),
        (("eval", "generation"), "eval generation", "eval"),
    ],
)
def test_a_command_names_its_missing_extra(
    bare: dict[str, str], args: tuple[str, ...], command: str, extra: str
) -> None:
    out = cli(bare, *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.strip() == f"shvayambhu {command}: needs the [{extra}] extra: pip install 'shvayambhu[{extra}]'"
    assert out.stdout == ""


def test_a_document_without_the_documents_extra_is_skipped_and_names_it(bare: dict[str, str]) -> None:
    code = (
        "from pathlib import Path\n"
        "from ingest.documents import Unreadable, convert\n"
        "try:\n"
        "    convert(Path('tests/data/docs/ferry_manual.pdf'))\n"
        "except Unreadable as e:\n"
        "    print(e.reason)\n"
    )
    out = run(bare, "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "needs the [documents] extra: pip install 'shvayambhu[documents]'"


def test_the_extras_table_matches_pyproject_and_this_environment() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    assert extras["all"] == [f"shvayambhu[{','.join(sorted(EXTRAS, key=list(extras).index))}]"]
    core = " ".join(project["dependencies"]).lower()
    for extra in EXTRAS:
        for requirement in extras[extra]:
            name = requirement.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
            assert name not in core, f"{name} is in the core and in [{extra}]"
        assert missing_modules(extra) == [], f"[{extra}] is installed here (make setup), so none is missing"
    line = missing_extra_line("serve", "serve")
    assert line == "shvayambhu serve: needs the [serve] extra: pip install 'shvayambhu[serve]'"


@pytest.mark.slow  # loads the embedding model in a fresh process: ~10 s
def test_ingest_and_search_run_on_the_core(bare: dict[str, str], tmp_path: Path) -> None:
    notes = tmp_path / "notes.jsonl"
    notes.write_text(
        '{"prompt": "When is the recycling collected?", "response": "Recycling goes out every second Thursday."}\n'
        '{"prompt": "Where is the spare key?", "response": "The spare key hangs inside the garden shed door."}\n',
        encoding="utf-8",
    )
    env = {**bare, "SHVAYAMBHU_HOME": str(tmp_path / "home")}
    out = cli(env, "ingest", str(notes))
    assert out.returncode == 0, out.stderr
    out = cli(env, "search", "spare key", "-k", "1", "--no-server")
    assert out.returncode == 0, out.stderr
    assert "garden shed" in out.stdout
