"""Every figure the README quotes comes from bench/RESULTS.md, where the command and machine that gave it are.

The rule (what counts as a figure): in the README's prose (fenced code blocks and `inline code` are commands and
settings, not claims, and are left out), a number that carries a decimal point (0.22), a ratio (2.33x, 6-11x),
a percentage (92%), or a unit of time, speed or size (23.1 tok/s, 8.5 ms, 538 MB). Each must appear in
bench/RESULTS.md written the same way, as a number of its own (tokens/s and tok/s are one unit; a dash is a
dash). Plain integers (counts, settings such as "2,000 or more records") are not figures. The few numbers of a
figure's shape that are not measurements are listed in NOT_FIGURES, each with why.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NUMBER = r"\d+(?:,\d{3})*(?:\.\d+)?"
UNITS = r"x\b|%|ms\b|s\b|min\b|tok/s|GFLOP/s|B/s|MB\b|GB\b|KiB\b|MiB\b|GiB\b"
FIGURE = re.compile(rf"(?<![\w.])({NUMBER}(?:-{NUMBER})?)(?!\.\d)\s?({UNITS})?")  # not an address: 127.0.0.1
NOT_FIGURES = {
    "3.11": "the Python version the project needs",
    "32 KiB": "the server's limit on a question, a setting",
    "0.21": "the similarity in an example of the message a user sees, not a measurement",
}


def prose(text: str) -> str:
    """`text` without code (fenced blocks and inline spans), with one spelling per unit and dash."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", " ", text)
    return normalise(text)


def normalise(text: str) -> str:
    return text.replace("\u2013", "-").replace("\u2212", "-").replace("tokens/s", "tok/s")


def figures(text: str) -> list[str]:
    """The figures of `text` by the rule above, as written (number, a space where the text has one, unit)."""
    found = []
    for m in FIGURE.finditer(text):
        number, unit = m.group(1), m.group(2)
        if unit or "." in number:
            found.append(m.group(0).strip())
    return found


def appears(figure: str, results: str) -> bool:
    """Whether `figure` is in `results` as a figure of its own (not the tail or head of a longer number)."""
    number = re.match(rf"{NUMBER}(?:-{NUMBER})?", figure).group(0)
    unit = figure[len(number) :].strip()
    pattern = rf"(?<![\w.,-]){re.escape(number)}" + (rf"\s?{re.escape(unit)}" if unit else r"(?![\d])(?!\.\d)")
    if unit and unit[-1].isalpha():
        pattern += r"\b"
    return re.search(pattern, results) is not None


def test_the_rule_finds_figures_and_only_figures() -> None:
    text = prose(
        "Python 3.11 runs `--k 4` at 23 tokens/s and 111.1 tok/s (2.33x, 6–11x, 92%) over 2,000 records, "
        "F1 0.22; a 1024x1024 matmul on 127.0.0.1.\n```\nmake demo 9.9x\n```"
    )
    assert figures(text) == ["3.11", "23 tok/s", "111.1 tok/s", "2.33x", "6-11x", "92%", "0.22"]
    assert appears("2.33x", "ratio **2.33x** with") and not appears("2.33x", "12.33x")
    assert appears("0.22", "F1 0.22 [0.13") and not appears("0.22", "0.225") and not appears("0.22", "10.22")
    assert appears("23.1 tok/s", "**23.1 tok/s**") and not appears("23 tok/s", "23.1 tok/s")


def test_every_readme_figure_is_in_the_results() -> None:
    readme = prose((REPO / "README.md").read_text(encoding="utf-8"))
    results = normalise((REPO / "bench" / "RESULTS.md").read_text(encoding="utf-8"))
    found = [f for f in figures(readme) if f not in NOT_FIGURES]
    assert len(found) >= 10, found  # the README does quote figures: the rule still finds them
    missing = [f for f in found if not appears(f, results)]
    assert not missing, f"README figures not in bench/RESULTS.md (measure them there, or drop them): {missing}"
