"""Results as Rich tables on the terminal and as Markdown sections of docs/benchmarks.md."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.suites import Result

__all__ = ["print_result", "print_summary", "update_doc"]

_STATUS = {True: "[green]PASS[/]", False: "[red]MISS[/]", None: "[dim]info[/]"}
_MD_STATUS = {True: "**PASS**", False: "**MISS**", None: "info"}


def print_result(console: Console, result: Result) -> None:
    if result.error:
        console.print(f"[red]{result.title}: ERROR[/] {result.error}")
        return
    table = Table(title=f"{result.title}  [dim]({result.seconds:.0f} s)[/]", title_justify="left")
    for index, column in enumerate(result.columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in result.rows:
        table.add_row(*row)
    console.print(table)


def print_summary(console: Console, results: list[Result]) -> None:
    table = Table(title="Targets", title_justify="left")
    for column in ("benchmark", "check", "measured", "target", "result"):
        table.add_column(column)
    for result in results:
        if result.error:
            table.add_row(
                result.name, result.title, result.error.splitlines()[0][:80], "", "[red]ERROR[/]"
            )
        for check in result.checks:
            table.add_row(
                result.name, check.what, check.measured, check.target, _STATUS[check.passed]
            )
    console.print(table)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _markdown(result: Result, command: str, env: dict[str, str]) -> str:
    lines = [f"### {result.title}", ""]
    lines.append(
        f"`{command}` — {env['date']}, {result.seconds:.0f} s, load average at start "
        f"{env['load average at start']}."
    )
    lines.append("")
    if result.error:
        lines += [f"**ERROR**: `{result.error.splitlines()[0]}`", ""]
        return "\n".join(lines)
    lines.append(_md_row(result.columns))
    lines.append(_md_row(["---"] * len(result.columns)))
    lines += [_md_row(row) for row in result.rows]
    lines.append("")
    if result.checks:
        lines.append(_md_row(["check", "measured", "target", "result"]))
        lines.append(_md_row(["---"] * 4))
        lines += [
            _md_row([c.what, c.measured, c.target, _MD_STATUS[c.passed]]) for c in result.checks
        ]
        lines.append("")
    lines += [f"- {note}" for note in result.notes]
    return "\n".join(lines)


def _replace(doc: str, key: str, body: str) -> str:
    begin, end = f"<!-- bench:{key}:begin -->", f"<!-- bench:{key}:end -->"
    block = f"{begin}\n{body}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(doc):
        return pattern.sub(lambda _m: block, doc)
    return doc.rstrip("\n") + "\n\n" + block + "\n"


def update_doc(path: Path, results: list[Result], env: dict[str, str], command: str) -> None:
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    env_lines = [f"- **{key}**: {value}" for key, value in env.items()]
    doc = _replace(doc, "env", f"Last run: `{command}`\n\n" + "\n".join(env_lines))
    for result in results:
        doc = _replace(doc, result.name, _markdown(result, command, env))
    path.write_text(doc)
