"""Command line: parse, call the engine, print through report/, map outcomes to exit codes.

Exit codes (DESIGN.md): 0 ok / nothing to change, 2 changes pending (plan), 1 failure,
4 invalid input (usage, YAML, schema, inventory, undefined variable), 130 interrupted.
Heavy imports happen inside the commands so `sparkprov --help` starts fast.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sparkprov import __version__

if TYPE_CHECKING:
    from sparkprov.connection.credentials import Credentials
    from sparkprov.errors import InputError
    from sparkprov.executor.journal import Recorder
    from sparkprov.executor.prepare import Prepared
    from sparkprov.report.masking import Masker
    from sparkprov.report.text import TextReporter

EXIT_OK, EXIT_FAILED, EXIT_PENDING, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 4, 130


class ExitCode(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


_ASK_PASS = click.option(
    "-k", "--ask-pass", is_flag=True, help="Ask for the SSH login password (or set SPARKPROV_SSH_PASSWORD)."
)
_ASK_BECOME_PASS = click.option(
    "-K",
    "--ask-become-pass",
    is_flag=True,
    help="Ask for the sudo password of become (or set SPARKPROV_BECOME_PASSWORD).",
)


def _selectors(func: Any) -> Any:
    options = [
        click.argument("playbook", required=False, type=click.Path(path_type=Path)),
        click.option(
            "-i", "--inventory", type=click.Path(path_type=Path), help="Inventory file (default: localhost)."
        ),
        click.option("-l", "--limit", help="Host pattern to restrict the run to (Ansible syntax)."),
        click.option("-t", "--tags", multiple=True, help="Only run tasks with these tags (comma-separated)."),
        click.option("--skip-tags", multiple=True, help="Skip tasks with these tags (comma-separated)."),
        click.option(
            "-e", "--extra-vars", "extra", multiple=True, help="KEY=VAL, @file.yml or a JSON/YAML mapping."
        ),
        click.option(
            "-f",
            "--forks",
            type=click.IntRange(1, 1000),
            default=10,
            show_default=True,
            help="Hosts worked on in parallel.",
        ),
        click.option(
            "--accept-new-hostkeys",
            is_flag=True,
            help="Trust SSH hosts seen for the first time and add their keys to known_hosts "
            "(like OpenSSH accept-new); a changed key still fails.",
        ),
        _ASK_PASS,
        _ASK_BECOME_PASS,
        click.option(
            "--report",
            "report_dir",
            type=click.Path(path_type=Path, file_okay=False),
            help="Also write report.json, junit.xml and report.md into this directory.",
        ),
        click.option(
            "--format",
            "output_format",
            type=click.Choice(["text", "json"]),
            default="text",
            show_default=True,
            help="json prints exactly one JSON document on stdout.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _comparing(func: Any) -> Any:
    """Options of the commands that run verify steps: what their benchmarks are compared with."""
    options = [
        click.option(
            "--baseline",
            type=click.Path(path_type=Path, dir_okay=False),
            help="A report.json of an earlier run: benchmark throughput that falls below it by more than "
            "--baseline-tolerance fails; 'within N% of baseline' expectations are judged against it.",
        ),
        click.option(
            "--baseline-tolerance",
            type=click.FloatRange(0, 100),
            default=10.0,
            show_default=True,
            help="Percent below the baseline that is not yet a regression.",
        ),
        click.option(
            "--outlier-percent",
            type=click.FloatRange(0, 100),
            default=15.0,
            show_default=True,
            help="Fail hosts whose benchmark is this many percent below the fleet median (3+ hosts; 0: off).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _split_tags(values: tuple[str, ...]) -> frozenset[str]:
    return frozenset(t.strip() for v in values for t in v.split(",") if t.strip())


def _masker() -> Masker:
    from sparkprov.report.masking import Masker
    from sparkprov.secrets import secrets_from_environment

    return Masker(secrets_from_environment())


def _input_error(exc: InputError, output_format: str) -> ExitCode:
    masker = _masker()
    if output_format == "json":
        from sparkprov.report.jsonout import render_error_json

        problems = [
            {
                "file": p.place.file,
                "line": p.place.line,
                "column": p.place.column,
                "key": p.key,
                "message": p.message,
                "hint": p.hint,
            }
            for p in exc.problems
        ]
        click.echo(render_error_json("invalid input", problems, EXIT_INPUT, masker))
    count = len(exc.problems)
    click.echo(masker.text(f"error: invalid input ({count} problem{'s' if count != 1 else ''}):"), err=True)
    for problem in exc.problems:
        click.echo(masker.text(f"  {problem}"), err=True)
    click.echo("Nothing was run on any host.", err=True)
    return ExitCode(EXIT_INPUT)


def _run(
    mode_name: str,
    *,
    playbook: Path | None,
    inventory: Path | None,
    limit: str | None,
    tags: tuple[str, ...],
    skip_tags: tuple[str, ...],
    extra: tuple[str, ...],
    forks: int,
    output_format: str,
    diff: bool,
    report_dir: Path | None,
    accept_new_hostkeys: bool,
    ask_pass: bool,
    ask_become_pass: bool,
    no_verify: bool = False,
    resume: bool = False,
    baseline: Path | None = None,
    baseline_tolerance: float = 10.0,
    outlier_percent: float = 15.0,
) -> int:
    from functools import partial

    from sparkprov.connection import connect
    from sparkprov.errors import InputError
    from sparkprov.executor.prepare import load_inputs
    from sparkprov.executor.results import Mode
    from sparkprov.executor.runner import Runner, RunOptions
    from sparkprov.facts.host import ANSIBLE_FACT_NAMES, gather_host_facts
    from sparkprov.report.text import TextReporter

    mode = Mode(mode_name)
    try:
        prepared = load_inputs(playbook, inventory, extra, limit)
    except InputError as exc:
        raise _input_error(exc, output_format) from None
    from sparkprov.report.files import now_iso

    comparisons = None
    benchmarks = any(
        step.module == "ollama_bench" for play in prepared.playbook.plays for step in play.verify
    )
    if baseline is not None or benchmarks:  # the comparison code (and its imports) only when it can matter
        from sparkprov.report.baseline import Comparisons

        try:
            comparisons = Comparisons.load(baseline, baseline_tolerance, outlier_percent)
        except InputError as exc:
            raise _input_error(exc, output_format) from None
    credentials = _credentials(ask_pass, ask_become_pass)
    started_at = now_iso()
    masker = _masker()
    for secret in credentials.secrets():
        masker.add(secret)
    show_diff = diff or mode is not Mode.APPLY
    stream = sys.stderr if output_format == "json" else sys.stdout
    reporter = TextReporter(mode, show_diff=show_diff, masker=masker, stream=stream)
    options = RunOptions(
        mode=mode,
        diff=show_diff,
        tags=_split_tags(tags),
        skip_tags=_split_tags(skip_tags),
        extra_vars=prepared.extra_vars,
        forks=forks,
        limit=limit,
        no_verify=no_verify,
    )
    journal = _open_journal(prepared, masker, reporter, output_format, resume) if mode is Mode.APPLY else None
    runner = Runner(
        prepared.playbook,
        prepared.inventory,
        options,
        reporter,
        connect=partial(connect, accept_new_hostkeys=accept_new_hostkeys, credentials=credentials),
        play_vars_files=prepared.play_vars_files,
        fact_names=ANSIBLE_FACT_NAMES,
        gather_facts=lambda conn: gather_host_facts(conn).as_ansible_facts(),
        on_secret=masker.add,
        journal=journal,
    )
    result = runner.run()
    if comparisons is not None:
        result = comparisons.apply_to(result)
    reporter.finished(result)
    if journal is not None and journal.journal.error:
        warning = f"warning: the run journal stopped part way: {journal.journal.error}"
        click.echo(masker.text(warning), err=True)
    if output_format == "json":
        from sparkprov.report.jsonout import render_json

        click.echo(render_json(result, masker))
    if report_dir is not None:
        from sparkprov.report.files import ReportInfo, write_reports
        from sparkprov.report.fingerprint import collect_fingerprints

        host_connection = partial(_connect_host, prepared, accept_new_hostkeys, credentials)
        fingerprints = collect_fingerprints(result, host_connection, forks=forks)
        info = ReportInfo(started_at, now_iso(), fingerprints, comparisons.findings if comparisons else {})
        write_reports(report_dir, result, masker, info)
    if result.aborted:  # Ctrl-C twice: do not wait for the tasks still running (Python would, at exit)
        _exit_now(EXIT_INTERRUPTED)
    return result.exit_code()


def _connect_host(prepared: Prepared, accept_new_hostkeys: bool, credentials: Credentials, name: str) -> Any:
    from sparkprov.connection import connect

    return connect(
        prepared.inventory.hosts[name], accept_new_hostkeys=accept_new_hostkeys, credentials=credentials
    )


def _credentials(ask_pass: bool, ask_become_pass: bool) -> Credentials:
    """The environment's passwords, or the ones asked for on the terminal (never echoed); asked only
    once the input is known to be valid."""
    from dataclasses import replace

    from sparkprov.connection.credentials import ENV_BECOME_PASSWORD, ENV_PASSWORD, Credentials

    found = Credentials.from_environment()
    if ask_pass:
        login = _ask_secret("SSH password: ", "-k", ENV_PASSWORD)
        found = replace(found, ssh_password=login or None, ssh_password_source="the -k prompt")
    if ask_become_pass:
        prompt = "BECOME password[defaults to SSH password]: " if ask_pass else "BECOME password: "
        become = _ask_secret(prompt, "-K", ENV_BECOME_PASSWORD) or (found.ssh_password if ask_pass else None)
        found = replace(found, become_password=become or None, become_password_source="the -K prompt")
    return found


def _ask_secret(prompt: str, option: str, variable: str) -> str:
    import getpass

    try:
        with open("/dev/tty", "rb"):
            pass
    except OSError:
        raise click.UsageError(
            f"{option} asks on a terminal and there is none here; set {variable} instead"
        ) from None
    return getpass.getpass(prompt)


def _open_journal(
    prepared: Prepared, masker: Masker, reporter: TextReporter, output_format: str, resume: bool
) -> Recorder | None:
    """The apply's run journal; the notice of a previous run that did not finish goes first. A state
    dir that cannot be written costs the journal (with a warning), not the run."""
    from sparkprov.errors import InputError
    from sparkprov.executor.journal import JournalBusy, JournalError, open_recorder

    try:
        recorder = open_recorder(prepared.playbook, prepared.inventory, masker, resume=resume)
    except InputError as exc:
        raise _input_error(exc, output_format) from None
    except JournalBusy as exc:
        click.echo(masker.text(f"error: {exc}. Nothing was run."), err=True)
        raise ExitCode(EXIT_FAILED) from None
    except JournalError as exc:
        click.echo(masker.text(f"warning: running without a run journal: {exc}"), err=True)
        return None
    if recorder.previous is not None:
        reporter.unfinished_run(recorder.previous, recorder.dropped, recorder.resume)
    elif resume:
        reporter.nothing_to_resume()
    return recorder


class SparkprovGroup(click.Group):
    """Maps click's usage errors to exit code 4 and Ctrl-C to 130."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(EXIT_OK)
        except click.UsageError as exc:
            exc.show()
            sys.exit(EXIT_INPUT)
        except click.Abort:
            _exit_interrupted()
        except click.ClickException as exc:
            exc.show()
            sys.exit(EXIT_INPUT)
        except ExitCode as exc:
            sys.exit(exc.code)
        except KeyboardInterrupt:
            _exit_interrupted()


def _exit_interrupted() -> None:
    """Exit 130 at once: task threads may still be running a command, and Python's exit would wait
    for them (one more Ctrl-C while a run stops must not hang it)."""
    click.echo("Interrupted.", err=True)
    if threading.active_count() == 1:
        sys.exit(EXIT_INTERRUPTED)
    _exit_now(EXIT_INTERRUPTED)


def _exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@click.group(cls=SparkprovGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sparkprov")
def cli() -> None:
    """Provision NVIDIA DGX Spark machines from Ansible-style playbooks.

    Without a PLAYBOOK the bundled playbooks/spark.yml is used; without -i, localhost.
    """


def _finish(code: int) -> None:
    if code:
        raise ExitCode(code)


@cli.command()
@_selectors
@click.option("--check", is_flag=True, help="Change nothing; report what would change (exit 2 if anything).")
@click.option("--diff", is_flag=True, help="Show the diff of every change.")
@click.option("--no-verify", is_flag=True, help="Do not run the playbook's verify steps at the end.")
@_comparing
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the last apply of this playbook on this inventory that did not finish: skip the tasks "
    "it completed on each host (its pending handlers run in any case).",
)
def apply(check: bool, diff: bool, no_verify: bool, resume: bool, **selectors: Any) -> None:
    """Bring the hosts to the state the playbook declares.

    Every apply keeps a run journal (under $SPARKPROV_STATE_DIR, default ~/.local/state/sparkprov);
    when the last one did not finish, the next apply says so and still runs the handlers it notified.
    """
    if check and resume:
        raise click.UsageError("--resume cannot be combined with --check: a plan changes nothing to resume")
    mode = "plan" if check else "apply"
    _finish(_run(mode, diff=diff, no_verify=no_verify, resume=resume, **selectors))


@cli.command()
@_selectors
def plan(**selectors: Any) -> None:
    """Show what apply would change, with diffs; change nothing (exit 2 when changes are pending)."""
    _finish(_run("plan", diff=True, **selectors))


@cli.command()
@_selectors
@_comparing
def verify(**selectors: Any) -> None:
    """Report drift from the playbook and run its verify steps; change nothing (exit 1 on drift)."""
    _finish(_run("verify", diff=True, **selectors))


@cli.command()
@click.argument("playbook", required=False, type=click.Path(path_type=Path))
@click.option(
    "-i", "--inventory", type=click.Path(path_type=Path), help="Inventory file (default: localhost)."
)
@click.option("-e", "--extra-vars", "extra", multiple=True, help="KEY=VAL, @file.yml or a JSON/YAML mapping.")
@click.option(
    "--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def validate(
    playbook: Path | None, inventory: Path | None, extra: tuple[str, ...], output_format: str
) -> None:
    """Check syntax, schemas, variables and templates; contact no host."""
    from sparkprov.compat import compatibility_warnings, format_warning
    from sparkprov.errors import InputError
    from sparkprov.executor.prepare import load_inputs
    from sparkprov.resources import default_playbook

    try:
        prepared = load_inputs(playbook, inventory, extra, None)
    except InputError as exc:
        raise _input_error(exc, output_format) from None
    plays = prepared.playbook.plays
    tasks = sum(len(p.tasks) + len(p.handlers) + len(p.verify) for p in plays)
    path = playbook or default_playbook()
    warnings = compatibility_warnings(prepared.playbook)
    if output_format == "json":
        import json

        click.echo(
            json.dumps(
                {
                    "valid": True,
                    "playbook": str(path),
                    "plays": len(plays),
                    "tasks": tasks,
                    "warnings": [
                        {
                            "file": w.place.file,
                            "line": w.place.line,
                            "column": w.place.column,
                            "rule": w.rule,
                            "message": w.message,
                            "fix": w.fix,
                        }
                        for w in warnings
                    ],
                    "exit_code": EXIT_OK,
                }
            )
        )
        return
    for warning in warnings:
        click.echo(format_warning(warning), err=True)
    noted = f", {len(warnings)} compatibility warning(s)" if warnings else ""
    click.echo(f"{path}: valid ({len(plays)} play(s), {tasks} task(s){noted})")


@cli.command()
@click.option(
    "-i", "--inventory", type=click.Path(path_type=Path), help="Inventory file (default: localhost)."
)
@click.option("-l", "--limit", help="Host pattern to restrict to.")
@click.option(
    "--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--accept-new-hostkeys", is_flag=True, help="Trust and record SSH hosts seen for the first time."
)
@click.option(
    "-f",
    "--forks",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Hosts probed in parallel.",
)
@_ASK_PASS
def facts(
    inventory: Path | None,
    limit: str | None,
    output_format: str,
    accept_new_hostkeys: bool,
    forks: int,
    ask_pass: bool,
) -> None:
    """Gather host facts (OS, CPU, memory, GPU, docker, machine-id) with one probe per host, and
    flag fleet problems (duplicate machine-ids, mixed driver/CUDA versions)."""
    from sparkprov.errors import InputError
    from sparkprov.facts.fleet import fleet_problems
    from sparkprov.facts.gather import gather_all, select_hosts
    from sparkprov.report.facts import render_facts_json, render_facts_text

    try:
        hosts = select_hosts(inventory, limit)
    except InputError as exc:
        raise _input_error(exc, output_format) from None
    credentials = _credentials(ask_pass, ask_become_pass=False)
    found = gather_all(hosts, forks=forks, accept_new_hostkeys=accept_new_hostkeys, credentials=credentials)
    problems = fleet_problems(found)  # reported, but not failures: the exit code is about reachability
    masker = _masker()
    for secret in credentials.secrets():
        masker.add(secret)
    if output_format == "json":
        click.echo(masker.text(render_facts_json(found, problems)))
    else:
        click.echo(masker.text(render_facts_text(found, problems)))
    _finish(EXIT_FAILED if any(isinstance(v, str) for v in found.values()) else EXIT_OK)


def main() -> None:
    cli.main(prog_name="sparkprov")
