"""A user's mistake on the command line ends in one line and exit code 2, no traceback."""

import pytest

from mlops_template.core.config import EXIT_USER_ERROR, run_command
from mlops_template.pipeline.inference import main as contract_main


def test_a_wrong_target_is_one_line_without_traceback(tmp_path, capsys):
    csv = tmp_path / "two.csv"
    csv.write_text("a,b\n1,2\n3,4\n", encoding="utf-8")
    code = run_command("python -m mlops_template.contract", contract_main, ["infer", str(csv), "--target", "zz"])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR
    assert err.strip() == "python -m mlops_template.contract: error: target column 'zz' not in ['a', 'b']"


def test_debug_shows_the_traceback(tmp_path, capsys):
    code = run_command("prog", contract_main, ["infer", str(tmp_path / "nope.csv"), "--target", "x", "--debug"])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR and "Traceback" in err and err.rstrip().endswith("nope.csv'")


def test_a_fault_of_the_program_still_raises():
    def broken(argv):
        raise KeyError("a bug, not a user's mistake")

    with pytest.raises(KeyError):  # a bug keeps its traceback
        run_command("prog", broken, [])
