"""The serving pins handed to MLflow are requirement strings, never words of a comment."""

from pathlib import Path

from mlops_template.core.io import requirement_pins

ROOT = Path(__file__).resolve().parents[3]


def test_comments_options_and_hashes_are_dropped(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text(
        "# Python packages the service needs at serving time\n"
        "-r other.txt\n"
        "numpy==2.4.6  # inline comment\n"
        "pandas==3.0.6 \\\n"
        "    --hash=sha256:0123abcd \\\n"
        "    --hash=sha256:4567ef01\n"
        "\n",
        encoding="utf-8",
    )
    assert requirement_pins(path) == ["numpy==2.4.6", "pandas==3.0.6"]


def test_the_serving_requirements_are_all_pins():
    pins = requirement_pins(ROOT / "requirements-serve.txt")
    assert pins and all("==" in pin for pin in pins), pins
