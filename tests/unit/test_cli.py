"""One command line: a user's mistake ends in one line and its documented exit code, never a traceback.

Each command runs in this process (``mlops_template.cli.main``) from a scratch folder holding a
params.yaml whose stores are local (or a tracking URL nothing listens on), so nothing here touches
the repository's workspace. The old spellings run as a subprocess, as cron runs them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlops_template import cli
from mlops_template.core.exitcodes import ExitCode
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the project's params.yaml and contracts (local stores), as the working directory."""
    for name in ("MLFLOW_TRACKING_URI", "ROUTING_URL", "API_KEYS_FILE", "INFERENCE_LOG_URL", "DVC_ROOT"):
        monkeypatch.delenv(name, raising=False)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "contracts", tmp_path / "contracts")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def error_line_of(err: str, command: str) -> str:
    """The one line a command printed on stderr, checked to be its error line."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"mlops-template {command}: error: "), lines
    return lines[0]


def error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """:func:`error_line_of` what the command printed on stderr."""
    return error_line_of(capsys.readouterr().err, command)


def test_every_code_has_one_meaning_and_the_readme_lists_each() -> None:
    assert len({int(code) for code in ExitCode}) == len(ExitCode)
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Exit codes"):]
    section = section[: section.find("\n## ", 1)]
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \| `{code.name}` \|", section, re.MULTILINE), code


def test_a_usage_error_is_64_not_argparses_2(scratch, capsys) -> None:
    assert cli.main(["canary", "decide"]) == ExitCode.USAGE
    assert "mlops-template canary decide: error: one of the arguments" in capsys.readouterr().err
    assert cli.main(["no-such-command"]) == ExitCode.USAGE
    assert cli.main(["drift", "--last-n", "many"]) == ExitCode.USAGE


def test_apikeys_without_a_key_file_is_a_usage_error(scratch, capsys) -> None:
    assert cli.main(["apikeys", "list"]) == ExitCode.USAGE
    assert "--file" in capsys.readouterr().err


def test_a_wrong_target_is_one_line_without_traceback(scratch, capsys) -> None:
    csv = scratch / "two.csv"
    csv.write_text("a,b\n1,2\n3,4\n", encoding="utf-8")
    assert cli.main(["contract", "infer", str(csv), "--target", "zz"]) == ExitCode.BAD_INPUT
    assert error_line(capsys, "contract") == "mlops-template contract: error: target column 'zz' not in ['a', 'b']"


def test_debug_shows_the_traceback(scratch, caplog, capsys) -> None:
    code = cli.main(["contract", "infer", str(scratch / "nope.csv"), "--target", "x", "--debug"])
    assert code == ExitCode.BAD_INPUT
    assert any(r.exc_info for r in caplog.records)
    assert capsys.readouterr().err.rstrip().endswith("nope.csv: No such file or directory")


def test_a_fault_of_the_program_still_raises(scratch, monkeypatch) -> None:
    from mlops_template.pipeline import inference

    def broken(args):
        raise KeyError("a bug, not a user's mistake")

    monkeypatch.setattr(inference, "handle", broken)
    with pytest.raises(KeyError):  # a bug keeps its traceback
        cli.main(["contract", "check", "x.yaml"])


def test_outside_the_repository_names_the_missing_params(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["rollback"]) == ExitCode.BAD_INPUT
    assert "params.yaml not found in" in error_line(capsys, "rollback")


@pytest.mark.parametrize("option", ["--metrics-file", "--labels"])
def test_canary_decide_names_a_missing_file(scratch, capsys, option) -> None:
    metrics = scratch / "metrics.txt"
    metrics.write_text("", encoding="utf-8")
    given = {"--metrics-file": str(metrics), "--labels": str(metrics)}
    given[option] = str(scratch / "absent.txt")
    words = ["canary", "decide", *[w for pair in given.items() for w in pair]]
    assert cli.main(words) == ExitCode.BAD_INPUT
    assert error_line(capsys, "canary").endswith(f"{option} {scratch / 'absent.txt'}: no such file")


@pytest.mark.parametrize("option", ["--metrics-url", "--prometheus-url"])
def test_canary_decide_names_an_unreachable_url(scratch, capsys, option) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["canary", "decide", option, f"{url}/metrics"]) == ExitCode.UNAVAILABLE
    assert url in error_line(capsys, "canary")


def test_canary_start_refuses_a_share_outside_0_1(scratch, capsys) -> None:
    assert cli.main(["canary", "start", "--version", "2", "--share", "1.5"]) == ExitCode.BAD_INPUT
    assert "--share 1.5" in error_line(capsys, "canary")


def test_canary_status_without_a_routing_file_is_one_line(scratch, capsys) -> None:
    assert cli.main(["canary", "status"]) == ExitCode.FAILED
    assert "routing" in error_line(capsys, "canary")


def test_retrain_refuses_a_missing_incoming_path_with_its_json_line(scratch, capsys) -> None:
    code = cli.main(["retrain", "--incoming", "no/such/batches"])
    captured = capsys.readouterr()
    assert code == ExitCode.BAD_INPUT
    assert json.loads(captured.out.strip().splitlines()[-1]) == {
        "status": "bad_input", "exit_code": 65, "error": "--incoming no/such/batches: no such file or folder"}
    assert captured.err.strip() == "mlops-template retrain: error: --incoming no/such/batches: no such file or folder"


def test_a_shared_service_down_stops_retrain_before_anything(scratch, capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    params = yaml.safe_load((scratch / "params.yaml").read_text(encoding="utf-8"))
    params["mlflow"]["tracking_uri"] = url
    (scratch / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    code = cli.main(["retrain"])
    captured = capsys.readouterr()
    assert code == ExitCode.UNAVAILABLE
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["status"] == "unavailable" and url in summary["error"]
    assert "nothing was changed" in error_line_of(captured.err, "retrain")
    assert sorted(p.name for p in scratch.iterdir()) == ["contracts", "params.yaml"]  # no lock, no store


def test_quality_names_a_missing_labels_file(scratch, capsys) -> None:
    assert cli.main(["quality", "--labels", "labels.csv"]) == ExitCode.BAD_INPUT
    assert error_line(capsys, "quality") == "mlops-template quality: error: --labels labels.csv: no such file"


def test_experiments_promote_names_an_unknown_experiment(scratch, capsys) -> None:
    assert cli.main(["experiments", "promote", "no-such-exp"]) == ExitCode.BAD_INPUT
    assert "no experiment named 'no-such-exp'" in error_line(capsys, "experiments")


def test_golden_freeze_names_a_missing_source(scratch, capsys) -> None:
    assert cli.main(["golden", "freeze", "--source", "rows.csv", "--no-dvc"]) == ExitCode.BAD_INPUT
    assert error_line(capsys, "golden") == "mlops-template golden: error: --source rows.csv: no such file"


def test_keygen_never_overwrites_and_says_so_in_one_line(scratch, capsys) -> None:
    assert cli.main(["keygen", "deploy.pem", "verify.pem"]) == ExitCode.OK
    capsys.readouterr()
    assert cli.main(["keygen", "deploy.pem", "other.pem"]) == ExitCode.BAD_INPUT
    assert "deploy.pem" in error_line(capsys, "keygen")


def test_apikeys_refusals_are_one_line(scratch, capsys) -> None:
    keys = str(scratch / "keys.txt")
    assert cli.main(["apikeys", "create", "ci", "--file", keys]) == ExitCode.OK
    capsys.readouterr()
    assert cli.main(["apikeys", "revoke", "nobody", "--file", keys]) == ExitCode.BAD_INPUT
    assert "no key named 'nobody'" in error_line(capsys, "apikeys")


@pytest.mark.parametrize(("old", "words", "new"), [
    ("contract", ["check", "absent.yaml"], "contract"),
    ("monitoring", ["quality", "--labels", "absent.csv"], "quality"),
    ("core.signing", ["keygen", "exists.pem", "other.pem"], "keygen"),
])
def test_an_old_spelling_still_works_and_names_the_new_one(tmp_path, old, words, new) -> None:
    (tmp_path / "exists.pem").write_text("", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", f"mlops_template.{old}", *words],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    notice, error = done.stderr.strip().splitlines()
    assert f"`python -m mlops_template.{old}" in notice and "deprecated" in notice, notice
    assert f"`mlops-template {new}`" in notice, notice
    assert error.startswith(f"mlops-template {new}: error: ") and words[-2 if new == "keygen" else -1] in error
    assert done.returncode == ExitCode.BAD_INPUT


def test_the_package_runs_as_one_command(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "mlops_template", "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert done.returncode == ExitCode.OK
    assert all(name in done.stdout for name in cli.COMMANDS), done.stdout


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_builds_its_options_from_its_module(scratch, capsys, command) -> None:
    assert cli.main([command, "--help"]) == ExitCode.OK
    assert capsys.readouterr().out.startswith(f"usage: mlops-template {command} ")
