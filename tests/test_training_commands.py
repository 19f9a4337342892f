"""The `train` and `eval bpb` command bodies (training.commands) reject what they cannot run, in one line,
before they read a corpus or write a run folder. Training itself is tested in test_blt_train.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from index.errors import UsageError
from training.commands import STAGES, BpbEvalConfig, TrainRunConfig, eval_bpb_command
from training.data import TrainingError


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], home: Path, *argv: str) -> tuple[int, str]:
    """(exit code, stderr) of `shvayambhu ARGV` in this process, with an empty SHVAYAMBHU_HOME."""
    from rag import cli as rag_cli

    monkeypatch.setenv("SHVAYAMBHU_HOME", str(home))
    monkeypatch.delenv("SHVAYAMBHU_CONFIG", raising=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        rag_cli.main(list(argv))
    return int(exit_.value.code or 0), capsys.readouterr().err


def test_a_run_config_names_the_stage_or_size_it_does_not_know(tmp_path: Path):
    assert tuple(TrainRunConfig(out_dir=tmp_path).stages) == STAGES
    with pytest.raises(UsageError, match=r"unknown stage\(s\) \['blt2'\]: use entropy, blt, baseline"):
        TrainRunConfig(out_dir=tmp_path, stages=["entropy", "blt2"])
    with pytest.raises(UsageError, match="unknown size 'huge': use tiny, small, base"):
        TrainRunConfig(out_dir=tmp_path, size="huge")


def test_train_with_an_unknown_stage_fails_before_it_writes(monkeypatch, capsys, tmp_path: Path):
    corpus, out = tmp_path / "c.jsonl", tmp_path / "run"
    corpus.write_text('{"prompt": "What is rain?", "response": "Water falling from clouds."}\n')
    code, err = cli(monkeypatch, capsys, tmp_path / "home", "train", str(corpus), "--out", str(out), "--stages", "x")
    assert code == 2 and "unknown stage(s) ['x']" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_eval_bpb_names_the_folders_it_looked_in(monkeypatch, capsys, tmp_path: Path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(TrainingError, match="no checkpoint in .*nothing .*nothing/best.*nothing/blt/best"):
        eval_bpb_command(BpbEvalConfig(checkpoint=empty), sources=[str(tmp_path / "c.jsonl")])
    code, err = cli(monkeypatch, capsys, tmp_path / "home", "eval", "bpb", str(empty), str(tmp_path / "c.jsonl"))
    assert code != 0 and "no checkpoint in" in err and "Traceback" not in err
