"""Writes the reliability suite's results (``tests/reliability.py``) into docs/reliability.md, between markers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOC = Path("docs/reliability.md")
BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"


def table(rows: list[dict]) -> str:
    lines = ["| area | fault or bad input | outcome | lost |", "|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r["area"], r["fault"])):
        cells = [row[key].replace("|", "\\|").replace("\n", " ") for key in ("area", "fault", "outcome", "lost")]
        lines.append("| " + " | ".join(cells) + " |")
    lost = [row for row in rows if not row["lost"].startswith("nothing")]  # "nothing; work redone" is no loss
    lines.append("")
    lines.append(f"{len(rows)} cases; {len(lost)} lost anything." if lost else f"{len(rows)} cases; none lost data.")
    return "\n".join(lines)


def update_doc(doc: Path, results: Path) -> None:
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc}: no {BEGIN} ... {END} markers to write the table between")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{table(json.loads(results.read_text()))}\n{END}{tail}")


def main(argv: list[str]) -> int:
    results = Path(argv[0]) if argv else Path("outputs/reliability/results.json")
    if not results.is_file():
        print(f"{results}: no results; run `make reliability`", file=sys.stderr)
        return 2
    update_doc(DOC, results)
    print(f"{DOC}: reliability table from {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
