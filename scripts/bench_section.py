"""Replaces one named section of docs/benchmarks.md with standard input, so each benchmark script
updates its own table without touching the others'."""
import pathlib
import sys

name = sys.argv[1]
path = pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
body = sys.stdin.read().rstrip() + "\n"
text = path.read_text() if path.exists() else "# Benchmarks\n\nEach section is written by the script it names; rerun that script to refresh it.\n"
if start in text and end in text:
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    text = before + start + "\n" + body + end + after
else:
    text = text.rstrip() + "\n\n" + start + "\n" + body + end + "\n"
path.parent.mkdir(exist_ok=True)
path.write_text(text)
sys.stdout.write(body)
