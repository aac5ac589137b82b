"""The `aiforge` command line. Heavy libraries (torch, transformers) load inside commands only,
so `aiforge --help` stays fast. User errors print a code, the problem and the fix, and exit 2
without a traceback."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aiforge.errors import AiforgeError
from aiforge.tables import print_table

app = typer.Typer(
    name="aiforge",
    help="The applied-ML workbench: doctor, run, train, serve, RAG.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List default and packaged models; manage registry aliases.")
app.add_typer(models_app, name="models")
rag_app = typer.Typer(
    help="Questions over your documents: ingest, ask (cited answers), eval.", no_args_is_help=True
)
app.add_typer(rag_app, name="rag")

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(func: F) -> F:
    """Turn AiforgeError and Ctrl-C into a clear message and a non-zero exit, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AiforgeError as exc:
            print_error(exc)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_error(exc: AiforgeError, also: str = "") -> None:
    """An error's code, message and fix on stderr (``also`` is appended to the fix)."""
    # escape: a fix such as pip install "aiforge[ray]" must not be read as rich markup
    line = f"[bold red]error[/] \\[{exc.code}] {escape(exc.message)}"
    err.print(line, markup=True, highlight=False)
    if exc.fix:
        err.print(f"  [bold]fix:[/] {escape(exc.fix + also)}", markup=True, highlight=False)


def parse_params(pairs: list[str] | None, sets: list[str] | None = None) -> dict[str, Any]:
    """`-p top_k=3 -p candidate_labels='["a","b"]'` -> {"top_k": 3, "candidate_labels": ["a", "b"]}.

    ``-p KEY=VALUE`` is short for ``--set params.KEY=VALUE`` (run's only settings are the task's
    parameters); values in the grammar of :mod:`aiforge.config`, validated by the task's Params."""
    from aiforge.config import parse_sets

    overrides = [
        *parse_sets(pairs or [], flag="-p", example="top_k=3", code="AF-INPUT-002", prefix="params."),
        *parse_sets(sets or [], example="params.top_k=3", code="AF-INPUT-002"),
    ]
    params: dict[str, Any] = {}
    for override in overrides:
        section, _, key = override.key.partition(".")
        if section != "params" or not key:
            raise AiforgeError(
                "AF-CONFIG-001",
                f"{override.origin}: `aiforge run` settings are task parameters, params.KEY",
                "write --set params.top_k=3 (the model, device and batch size have their own flags)",
            )
        params[key] = override.value()
    return params


BackendOption = Annotated[
    str, typer.Option("--backend", help="local | ray (scale out on a Ray cluster; see README 'Scaling out')")
]
RayAddressOption = Annotated[
    str | None,
    typer.Option("--ray-address", help="Ray cluster HOST:PORT (default $RAY_ADDRESS, else a local Ray)"),
]


def check_backend(backend: str, **local_only: Any) -> bool:
    """True for the Ray backend; refuses unknown backends and Ray-only options given locally."""
    if backend not in ("local", "ray"):
        raise AiforgeError("AF-CONFIG-001", f"unknown backend '{backend}'", "use --backend local or ray")
    if backend == "local":
        given = [name for name, value in local_only.items() if value not in (None, False)]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise AiforgeError("AF-RAY-004", f"{flags} only apply with --backend ray", "add --backend ray")
    return backend == "ray"


# ---- doctor ---------------------------------------------------------------------------------------
@app.command()
@friendly
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable report")] = False,
    no_device_ops: Annotated[
        bool, typer.Option("--no-device-ops", help="skip the tensor test on devices")
    ] = False,
) -> None:
    """Check Python, packages, accelerators, caches and disk; every problem comes with its fix."""
    from aiforge import doctor as doc

    findings = doc.run_checks(device_ops=not no_device_ops)
    if as_json:
        typer.echo(json.dumps(doc.to_json(findings), indent=2, ensure_ascii=False))
    else:
        doc.render(findings, out)
    raise typer.Exit(doc.exit_code(findings))


# ---- tasks and models -------------------------------------------------------------------------------
@app.command()
@friendly
def tasks(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the tasks with their backend, default models, input and output."""
    from aiforge.tasks import task_cards

    rows = [card.describe() for card in task_cards()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    print_table(
        out,
        ["task", "backend", "default (online / offline)", "input", "output"],
        [
            [
                row["task"],
                row.get("backend", row.get("unavailable", "")),
                f"{row['hub_default'] or '-'}\n{row['offline_default'] or '-'}",
                row.get("input", ""),
                row.get("output", ""),
            ]
            for row in rows
        ],
        names={"task", "default (online / offline)"},
    )


@models_app.callback(invoke_without_command=True)
@friendly
def models(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Default model per task, packaged offline models, and whether each is available now."""
    if ctx.invoked_subcommand is not None:
        return
    from aiforge.models import PACKAGED
    from aiforge.tasks import default_status, task_cards

    defaults = [default_status(card) for card in task_cards()]
    packaged = [
        {
            "name": m.name,
            "package": m.package,
            "tasks": list(m.tasks),
            "installed": m.available(),
            "install": m.install_command(),
            "licence": m.licence,
            "terms_file": m.terms_file(),
            "upstream": m.upstream,
            "description": m.description,
        }
        for m in PACKAGED.values()
    ]
    if as_json:
        typer.echo(json.dumps({"defaults": defaults, "packaged": packaged}, indent=2, ensure_ascii=False))
        return
    print_table(
        out,
        ["task", "online default", "cached", "offline default", "offline now"],
        [
            [
                d["task"],
                d["hub_default"] or "-",
                _yes(d["hub_cached"]),
                (d["offline_default"] or "-") + _engines(d.get("offline_engines", [])),
                _yes(d["offline_available"])
                + (f"\nbuild it with: {d['offline_build']}" if d.get("offline_build") else ""),
            ]
            for d in defaults
        ],
        names={"task", "online default", "offline default"},
        title="Defaults",
    )
    ready = sum(d["offline_available"] for d in defaults)
    buildable = sum(bool(d.get("offline_build")) for d in defaults)
    out.print(
        f"{ready} of {len(defaults)} tasks work offline now"
        + (f"; {buildable} more after the 'build it with' command" if buildable else "")
    )
    print_table(
        out,
        ["packaged model", "tasks", "installed", "licence", "install"],
        [
            [
                p["name"],
                "\n".join(p["tasks"]),
                _yes(p["installed"]),
                p["licence"] + (f"\nfull terms: {p['terms_file']}" if p["terms_file"] else ""),
                "\n".join(p["install"].split(" && ")),  # one command per line, each copyable
            ]
            for p in packaged
        ],
        names={"packaged model", "tasks", "install"},
        title="Packaged (offline) models",
    )


def _engines(engines: list[dict[str, Any]]) -> str:
    """The packaged models a default hands inputs to (ocr: Korean to Tesseract), one per line."""
    return "".join(
        f"\n{e['inputs']}: {e['model']}" + ("" if e["installed"] else " [red](not installed)[/]")
        for e in engines
    )


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(title=title, show_lines=True)
    for name in columns:
        table.add_column(name, overflow="fold")
    return table


def _yes(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[red]no[/]"


# ---- run --------------------------------------------------------------------------------------------
@app.command()
@friendly
def run(
    task: Annotated[str, typer.Argument(help="task name (see `aiforge tasks`)")],
    inputs: Annotated[list[str] | None, typer.Argument(help="texts, or image/audio paths")] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="path, hub id, packaged:NAME, registry:NAME@ALIAS")
    ] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input-file", "-i", help=".jsonl/.csv/.tsv/.txt or a directory")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write JSON lines here")] = None,
    column: Annotated[str | None, typer.Option("--column", help="CSV/JSONL column holding the input")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b", min=1)] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps")] = "auto",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="task parameter KEY=VALUE")] = None,
    settings_pairs: Annotated[
        list[str] | None, typer.Option("--set", help="params.KEY=VALUE, the same as -p KEY=VALUE")
    ] = None,
    backend: BackendOption = "local",
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Ray: model actors (default: one per cluster CPU)")
    ] = None,
    ray_address: RayAddressOption = None,
) -> None:
    """Run a pretrained model on inputs; prints one JSON object per input, in input order."""
    from aiforge import io
    from aiforge.tasks import get_task, load_pipeline
    from aiforge.tasks.execute import is_error

    spec = get_task(task)
    if not inputs and input_file is None:
        raise AiforgeError(
            "AF-INPUT-001", "no input given", f'aiforge run {spec.name} "some input" or --input-file FILE'
        )
    if check_backend(backend, workers=workers, ray_address=ray_address):
        params = parse_params(param, settings_pairs)
        _run_on_ray(
            spec.name, input_file, output, model, column, batch_size, device, params, workers, ray_address
        )
        return
    spec.load_class()  # a missing extra is reported before any model loads
    params = parse_params(param, settings_pairs)
    pipe = load_pipeline(spec.name, model, device=device, **params)
    if getattr(pipe, "runtime_fallback", None):
        err.print(f"ONNX Runtime is off for this model, running on PyTorch: {pipe.runtime_fallback}")
    cls = type(pipe)  # the runtime's input fields (GGUF chat models also read "messages")
    records: Any = list(inputs or [])
    total = len(records)
    if input_file is not None:
        fields = cls.Input.model_fields
        records = (
            io.project_record(r, fields, cls.primary_field, column) for r in io.read_records(input_file)
        )
        total = io.count_records(input_file)

    sink = output.open("w", encoding="utf-8") if output else sys.stdout
    failures = 0
    try:
        results = pipe.stream(records, batch_size=batch_size)
        if input_file is not None:
            from tqdm import tqdm

            results = tqdm(results, total=total, unit="item", file=sys.stderr, disable=None)
        for result in results:
            failures += is_error(result)
            io.write_jsonl(result, sink)
    finally:
        if output:
            sink.close()
    if failures:
        err.print(f"{failures} input(s) failed; their lines hold an 'error' object")
        if input_file is None:
            raise typer.Exit(2)


def _run_on_ray(
    task: str,
    input_file: Path | None,
    output: Path | None,
    model: str | None,
    column: str | None,
    batch_size: int | None,
    device: str,
    params: dict[str, Any],
    workers: int | None,
    ray_address: str | None,
) -> None:
    if input_file is None:
        raise AiforgeError(
            "AF-RAY-004",
            "--backend ray runs files (--input-file), not inputs on the command line",
            f"aiforge run {task} -i items.jsonl -o out.jsonl --backend ray",
        )
    from aiforge.scale.batch import run_file

    report = run_file(
        task,
        input_file,
        output,
        model=model,
        column=column,
        batch_size=batch_size,
        device="cpu" if device == "auto" else device,
        params=params,
        workers=workers,
        address=ray_address,
    )
    if report.resumed_from:
        err.print(f"resumed: kept {report.resumed_from} results already in {output}")
    if report.failures:
        err.print(f"{report.failures} input(s) failed; their lines hold an 'error' object")


# ---- train, runs, promote ----------------------------------------------------------------------------
@app.command()
@friendly
def train(
    config: Annotated[Path | None, typer.Argument(help="train.yaml (see --init)")] = None,
    init: Annotated[str | None, typer.Option("--init", help="print a commented template for TASK")] = None,
    from_scratch: Annotated[
        bool, typer.Option("--from-scratch", help="with --init: a model built from sizes, random weights")
    ] = False,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="override a field (YAML value): training.lr=3e-5")
    ] = None,
    dry: Annotated[
        bool, typer.Option("--dry-run", help="check data and model, estimate time; no training")
    ] = False,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint")] = False,
    from_run: Annotated[str | None, typer.Option("--from-run", help="re-run a tracked run's config")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="fail on empty or undecodable rows")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    backend: BackendOption = "local",
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Ray: data-parallel workers (default 2)")
    ] = None,
    ray_address: RayAddressOption = None,
) -> None:
    """Fine-tune a model on your data; tracked in MLflow, registered in the model registry."""
    from aiforge import train as training

    if init:
        from aiforge.tasks import get_task

        typer.echo(training.init_template(get_task(init).name, from_scratch=from_scratch))
        return
    if config is None and from_run is None:
        raise AiforgeError(
            "AF-CONFIG-001",
            "no config given",
            "aiforge train train.yaml (start one with: aiforge train --init text-classification)",
        )
    base = training.config_from_run(from_run) if from_run else None
    cfg = training.load_config(config, overrides or [], base=base)
    if dry:
        report = training.dry_run(cfg, strict=strict)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        else:
            for line in report.lines():
                out.print(line, highlight=False)
        return
    import logging

    # tracking warnings (AF-TRACK-001) and "resuming from ..." are logged, not printed
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if check_backend(backend, workers=workers, ray_address=ray_address):
        from aiforge.scale.train import train as train_on_ray

        result = train_on_ray(cfg, workers=workers or 2, resume=resume, strict=strict, address=ray_address)
    else:
        from aiforge.api import train_model

        result = train_model(cfg, resume=resume, strict=strict)
    if as_json:
        typer.echo(json.dumps(result.summary(), indent=2, ensure_ascii=False, default=str))
        return
    for line in result.lines():
        out.print(line, highlight=False)


@app.command()
@friendly
def quantize(
    model: Annotated[
        str, typer.Argument(help="a text-classification model: directory, hub id or registry ref")
    ],
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data",
            "-d",
            help="labelled JSONL/CSV split (text, label); repeat: validation, held-back. "
            "Default: the validation and test splits of the model's training run",
        ),
    ] = None,
    text_column: Annotated[str, typer.Option("--text-column")] = "text",
    label_column: Annotated[str, typer.Option("--label-column")] = "label",
    tolerance: Annotated[float, typer.Option(help="accuracy / macro-F1 points int8 may lose")] = 0.5,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="ONNX recipe to gate: plain, per-channel, fused or fused-per-channel "
            "(default: the default recipe)"
        ),
    ] = None,
) -> None:
    """Measure int8 (ONNX Runtime) against fp32 on the model's validation and held-back splits;
    int8 becomes the model's default precision for -p runtime=onnx only within the tolerance (exit 3
    when refused). The verdict goes to onnx/quality.json, aiforge.json, MLflow and registry tags."""
    from aiforge import io
    from aiforge.train.quantize import quantize_model

    splits = None
    for path in data or []:
        rows = [r for r in io.read_records(path) if isinstance(r, dict)]
        if not rows or any(text_column not in r or label_column not in r for r in rows):
            raise AiforgeError(
                "AF-DATA-001",
                f"'{path}' needs '{text_column}' and '{label_column}' in every row",
                "pass --text-column / --label-column",
            )
        splits = splits or {}
        splits[path.stem] = ([str(r[text_column]) for r in rows], [str(r[label_column]) for r in rows])
    record = quantize_model(model, splits, tolerance, recipe)
    typer.echo(json.dumps(record, indent=2, ensure_ascii=False))
    if not record["int8_default"]:
        err.print(
            f"[AF-ONNX-002] int8 loses {max(record['loss_points'].values()):.2f} points (> {tolerance}): "
            "-p runtime=onnx stays fp32 for this model; -p precision=int8 still forces int8"
        )
        raise typer.Exit(3)


@app.command()
@friendly
def sweep(
    spec: Annotated[Path, typer.Argument(help="sweep.yaml: the training config and the fields to search")],
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="override a sweep field (YAML value): trials=20")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the interrupted sweep")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    backend: BackendOption = "local",
    ray_address: RayAddressOption = None,
) -> None:
    """Search training configs (grid, random or TPE): a nested MLflow run per trial, pruning, plots."""
    from aiforge import sweeps

    loaded = sweeps.load_spec(spec, overrides or [])
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    def report(outcome: Any) -> None:
        value = "" if outcome.value is None else f" {outcome.value:.4f}"
        problem = f": {outcome.error.get('message', '')}" if outcome.error else ""
        err.print(
            f"trial {outcome.number} {outcome.state}{value} ({outcome.seconds:.0f} s){problem}",
            highlight=False,
        )

    if check_backend(backend, ray_address=ray_address):
        from aiforge.scale.sweep import sweep_on_ray

        result = sweep_on_ray(loaded, resume=resume, address=ray_address, on_trial=report)
    else:
        result = sweeps.run_sweep(loaded, resume=resume, on_trial=report)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str))
        return
    headers, cells = result.table()
    print_table(out, headers, [[escape(cell) for cell in row] for row in cells], {"trial", "state"})
    for line in result.lines():
        out.print(line, highlight=False)


@app.command()
@friendly
def runs(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recent training runs and their metrics (MLflow tracking store)."""
    from aiforge import registry

    rows = registry.list_runs(limit)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return
    table = _table("run", "task", "model", "status", "minutes", "registered", "test metrics")
    for row in rows:
        metrics = ", ".join(
            f"{k.removeprefix('test_')} {v:.3f}"
            for k, v in sorted(row["metrics"].items())
            if k.startswith("test_")
        )
        table.add_row(
            f"{row['name']}\n{row['run_id'][:8]}",
            row["task"],
            row["model"],
            row["status"],
            f"{row['duration_s'] / 60:.1f}",
            row["registered"],
            metrics,
        )
    out.print(table)


@models_app.command("promote")
@friendly
def models_promote(
    name: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[str, typer.Argument(help="version number")],
    alias: Annotated[str, typer.Option("--alias", help="e.g. production")] = "production",
) -> None:
    """Point an alias at a model version: registry:NAME@ALIAS then loads it."""
    from aiforge import registry

    moved = registry.promote(name, version, alias)
    was = f" (was version {moved['previous']})" if moved["previous"] else ""
    out.print(f"registry:{name}@{alias} -> version {moved['version']}{was}", highlight=False)


# ---- chat -------------------------------------------------------------------------------------------
@app.command()
@friendly
def chat(
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="a chat model: packaged:NAME, a .gguf file, a HF model dir"),
    ] = None,
    system: Annotated[str | None, typer.Option("--system", help="system message starting the chat")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="most tokens per answer")] = 512,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps")] = "auto",
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="generation parameter KEY=VALUE")
    ] = None,
) -> None:
    """Chat with a local model in the terminal: each line you type gets a streamed answer, with the
    conversation so far as context. /reset starts over; /exit or Ctrl-D ends."""
    from aiforge.tasks import load_pipeline

    params = {"max_new_tokens": max_tokens, **parse_params(param)}
    pipe: Any = load_pipeline("text-generation", model, device=device, **params)
    if why_not := getattr(pipe, "chat_limitation", lambda: None)():  # a base GGUF model
        raise AiforgeError(
            "AF-MODEL-003",
            f"{pipe.model_ref.describe()} cannot chat: {why_not}",
            'continue text with `aiforge run text-generation "..."`, or chat with '
            "--model packaged:smollm2-135m-instruct",
        )
    interactive = sys.stdin.isatty()
    if interactive:
        err.print(f"chatting with {pipe.model_ref.describe()}; /reset starts over, /exit ends")
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    start = len(history)
    while True:
        line = _read_line("you> " if interactive else "")
        if line is None or line.strip() == "/exit":
            break
        text = line.strip()
        if text == "/reset":
            del history[start:]
            err.print("(conversation cleared)")
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        try:
            answer = "".join(_echo(pipe.stream_chat(history)))
        except AiforgeError as exc:  # e.g. the conversation outgrew the context: say so, keep chatting
            history.pop()
            print_error(exc, also="; /reset starts over")
            continue
        history.append({"role": "assistant", "content": answer})


def _read_line(prompt: str) -> str | None:
    """One line from stdin (None at end of input), with a prompt on a terminal."""
    try:
        return input(prompt) if prompt else (sys.stdin.readline() or None)
    except EOFError:
        return None


def _echo(pieces: Any) -> Any:
    """Print streamed text as it comes (flushed, so a terminal shows each piece), ending the line."""
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
        yield piece
    sys.stdout.write("\n")
    sys.stdout.flush()


# ---- serve ------------------------------------------------------------------------------------------
@app.command()
@friendly
def serve(
    specs: Annotated[
        list[str] | None,
        typer.Argument(
            help="serve.yaml, or models: [NAME=]TASK[:MODEL] or [NAME=]MODEL (e.g. registry:x@production)"
        ),
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option("--port", help="0 picks a free port (default 8000)")] = None,
    max_batch_size: Annotated[
        int | None, typer.Option("--max-batch-size", min=1, help="items per batch")
    ] = None,
    max_wait_ms: Annotated[float | None, typer.Option("--max-wait-ms", min=0)] = None,
    max_queue: Annotated[int | None, typer.Option("--max-queue", min=1, help="beyond it: 429")] = None,
    timeout_s: Annotated[float | None, typer.Option("--timeout-s", help="beyond it: 504")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    api_key_file: Annotated[Path | None, typer.Option("--api-key-file", help="one key per line")] = None,
    no_demo: Annotated[bool, typer.Option("--no-demo", help="do not mount the demo page")] = False,
    backend: BackendOption = "local",
    replicas: Annotated[
        int | None, typer.Option("--replicas", min=1, help="Ray: fixed replica count")
    ] = None,
    min_replicas: Annotated[int | None, typer.Option("--min-replicas", min=0, help="Ray: autoscale")] = None,
    max_replicas: Annotated[int | None, typer.Option("--max-replicas", min=1, help="Ray: autoscale")] = None,
    ray_address: RayAddressOption = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Ray: deploy and return, leave it serving")
    ] = False,
    ingress: Annotated[
        str | None,
        typer.Option(
            "--ingress",
            help="Ray: direct (HAProxy -> replicas), gateway (Ray's proxy -> gateway -> replicas), "
            "or auto (direct where HAProxy is available; the default)",
        ),
    ] = None,
    settings_pairs: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="override a setting KEY=VALUE (YAML value): port=9000, models.max_batch_size=16, "
            "models.NAME.timeout_s=5, 'models.params.candidate_labels=[a, b]'",
        ),
    ] = None,
) -> None:
    """Serve models over HTTP: dynamic batching, OpenAI-compatible routes, /demo, /metrics, auth."""
    from aiforge.serve import is_config_file, load_settings, run_server, server_urls

    specs = list(specs or [])
    config = specs.pop(0) if specs and is_config_file(specs[0]) else None
    if config is None and not specs:
        raise AiforgeError(
            "AF-CONFIG-001", "nothing to serve", "aiforge serve TASK[:MODEL] ... or aiforge serve serve.yaml"
        )
    flags = {  # each flag is shorthand for its --set key; models.FIELD sets every served model
        "host": host,
        "port": port,
        "api_key_file": api_key_file,
        "demo": False if no_demo else None,
        "models.max_batch_size": max_batch_size,
        "models.max_wait_ms": max_wait_ms,
        "models.max_queue": max_queue,
        "models.timeout_s": timeout_s,
        "models.device": device,
    }
    settings = load_settings(config, specs, overrides=flags, sets=settings_pairs or [])
    ray_only = {
        "replicas": replicas,
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "ray_address": ray_address,
        "detach": detach,
        "ingress": ingress,
    }
    if check_backend(backend, **ray_only):
        from aiforge.scale.serve import Scaling
        from aiforge.scale.serve import run as run_on_ray

        if settings.port == 0:
            raise AiforgeError("AF-RAY-004", "--port 0 is not supported on Ray", "name a port: --port 8000")
        for label, url in server_urls(settings).items():
            err.print(f"{label}: {url}")
        scaling = Scaling(replicas, min_replicas, max_replicas, ingress=ingress or "auto")
        run_on_ray(settings, scaling, ray_address, detach)
        return
    for label, url in server_urls(settings).items():
        err.print(f"{label}: {url}")
    run_server(settings)


# ---- rag ------------------------------------------------------------------------------------------------
IndexOption = Annotated[str, typer.Option("--index", "-x", help="index name")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="RAG setting KEY=VALUE, value in YAML: top_k=8 (see RagSettings)"),
]
RagConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML file of RAG settings (under AIFORGE_RAG_* and --set)"),
]
GenerateOption = Annotated[
    bool,
    typer.Option(
        "--generate", help="an LLM writes the answer from numbered sources; each statement is checked"
    ),
]
GeneratorOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="the LLM for --generate: packaged name, .gguf, hub id or folder "
        "(default: the packaged SmolLM2 offline)",
    ),
]


@rag_app.command("ingest")
@friendly
def rag_ingest(
    paths: Annotated[
        list[Path], typer.Argument(help="files or folders: txt, md, html, pdf, docx, SQuAD json")
    ],
    index: IndexOption,
    settings_pairs: SetOption = None,
    rag_config: RagConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    backend: BackendOption = "local",
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Ray: embedding actors (default 2)")
    ] = None,
    ray_address: RayAddressOption = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="what answers call the source: a file's name, or a folder's prefix (default: the path "
            "relative to the folder)",
        ),
    ] = None,
) -> None:
    """Parse, chunk and embed documents; re-ingest embeds only what changed."""
    from aiforge.api import ingest, rag_settings

    if check_backend(backend, workers=workers, ray_address=ray_address):
        from aiforge.scale.ingest import ingest as ingest_on_ray

        settings = rag_settings(rag_config, settings_pairs or [])
        sources = [str(p) for p in paths]
        report = ingest_on_ray(
            sources, index, settings, workers=workers or 2, address=ray_address, name=name
        ).to_dict()
    else:
        report = ingest(paths, index=index, config=rag_config, sets=settings_pairs or [], name=name).to_dict()
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        summary = {k: v for k, v in report.items() if k != "failed"}
        out.print(" ".join(f"{k}={v}" for k, v in summary.items()))
        for failure in report.get("failed", []):
            err.print(f"[{failure['code']}] {failure['source']}: {failure['message']}", highlight=False)
    if report.get("failed"):
        raise typer.Exit(1)


@rag_app.command("ask")
@friendly
def rag_ask(
    question: Annotated[str, typer.Argument()],
    index: IndexOption,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1)] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="only chunks of sources matching this glob")
    ] = None,
    settings_pairs: SetOption = None,
    rag_config: RagConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    generate: GenerateOption = False,
    model: GeneratorOption = None,
) -> None:
    """Answer a question from an index, citing file, page and character offsets."""
    from aiforge.api import ask, ask_stream

    sets = settings_pairs or []
    where: dict[str, Any] = {
        "index": index,
        "config": rag_config,
        "sets": sets,
        "top_k": top_k,
        "source": source,
    }
    if (generate or model) and not as_json:  # the written answer appears as the model writes it
        body: dict[str, Any] = {}
        for event in ask_stream(question, model=model, **where):
            if event["event"] == "delta":
                out.print(event["text"], end="", highlight=False, markup=False)
            elif event["event"] == "answer":
                body = event
        out.print("" if body.get("statements") else body.get("answer", ""), highlight=False)
        print_checks(body)
        return
    answer = ask(question, generate=generate, model=model, **where).to_dict()
    if as_json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
        return
    out.print(answer["answer"], highlight=False)
    print_checks(answer)


def print_checks(answer: dict[str, Any]) -> None:
    """The citations of an answer (``Answer.to_dict()``); a written one's statements, each marked."""
    if answer.get("statements"):
        for statement in answer["statements"]:
            mark = "UNSUPPORTED"
            if statement["supported"]:  # the model's [n] may be wrong while another source supports it
                cited = statement["cites_its_source"] or not statement["markers"]
                mark = "supported" if cited else "supported, by another source than cited"
            out.print(f"- ({mark}) {statement['text']}", highlight=False, markup=False)
            for citation in statement["citations"]:
                print_citation(citation)
        return
    for citation in answer.get("citations", []):
        print_citation(citation)


def print_citation(c: dict[str, Any]) -> None:
    mark = "verified" if c["verified"] else "UNVERIFIED"
    where = f"{c['source']} p.{c['page']} chars {c['start']}-{c['end']}"
    out.print(
        f"  [{c['n']}] {where} ({mark}): {c['quote'][:160]}",
        highlight=False,
        markup=False,
    )


@rag_app.command("eval")
@friendly
def rag_eval(
    qa_file: Annotated[Path, typer.Argument(help="QA.jsonl or SQuAD/KorQuAD json")],
    index: IndexOption,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="first N questions")] = None,
    mode: Annotated[str, typer.Option("--mode", help="hybrid | bm25 | dense")] = "hybrid",
    answers: Annotated[bool, typer.Option("--answers/--no-answers", help="also score EM/F1")] = True,
    settings_pairs: SetOption = None,
    rag_config: RagConfigOption = None,
    generate: Annotated[
        bool, typer.Option("--generate", help="also score LLM-written answers beside the extracted ones")
    ] = False,
    model: GeneratorOption = None,
) -> None:
    """Retrieval recall@1/5/10 and MRR, answer EM and F1 (extracted, and written with --generate)."""
    from aiforge.api import rag_settings
    from aiforge.rag import evaluate

    settings = rag_settings(rag_config, settings_pairs or [], model=model)
    metrics = evaluate(
        str(qa_file), index, settings, answers=answers, limit=limit, mode=mode, generate=generate
    )
    typer.echo(json.dumps(metrics, indent=2, ensure_ascii=False))


@rag_app.command("list")
@friendly
def rag_list() -> None:
    """The embedded indexes and what each holds."""
    from aiforge.rag import index_info, list_indexes

    for name in list_indexes():
        typer.echo(json.dumps(index_info(name), ensure_ascii=False))


# ---- quickstart ---------------------------------------------------------------------------------------
@app.command()
@friendly
def quickstart(
    output_dir: Annotated[Path, typer.Option("--output-dir", help="where the trained model goes")] = Path(
        "runs/quickstart"
    ),
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="serve the model at the end")] = True,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
) -> None:
    """The main job: doctor, fine-tune Korean sentiment on the bundled sample, run it, answer a question
    from the bundled Korean guide with cited sources, serve it."""
    from aiforge.quickstart import quickstart as run_quickstart

    run_quickstart(out, output_dir, serve=serve, host=host, port=port)


# ---- export (issue 19): hand a model to others -------------------------------------------------------
export_app = typer.Typer(help="Export a model: a Hub repo with a model card, a Gradio Space, a container.")
app.add_typer(export_app, name="export")
ExportRef = Annotated[str, typer.Argument(help="registry:NAME@ALIAS, an MLflow run id, or a model folder")]
ExportOut = Annotated[Path, typer.Argument(help="the folder to write (new or empty)")]
ExportForce = Annotated[bool, typer.Option("--force", help="replace the folder's content")]


@export_app.command("hub")
@friendly
def export_hub_command(
    ref: ExportRef,
    out_dir: ExportOut,
    push: Annotated[str | None, typer.Option("--push", help="upload to this hub repo id")] = None,
    language: Annotated[str | None, typer.Option("--language", help="ISO code, e.g. ko")] = None,
    licence: Annotated[str | None, typer.Option("--license", help="default: the base model's")] = None,
    private: Annotated[bool, typer.Option("--private", help="create the hub repo private")] = False,
    force: ExportForce = False,
) -> None:
    """A Hugging Face model repo folder: weights, config, tokenizer and a model card with the metrics."""
    from aiforge.export.hub import export_hub
    from aiforge.export.hub import push as push_folder

    written = export_hub(ref, out_dir, repo_id=push, language=language, licence=licence, force=force)
    out.print(f"wrote {written['folder']}: {', '.join(written['files'])}", highlight=False)
    if push:
        out.print(f"pushed to {push_folder(out_dir, push, private)}", highlight=False)


@export_app.command("space")
@friendly
def export_space_command(
    ref: ExportRef,
    out_dir: ExportOut,
    hub_repo: Annotated[
        str | None, typer.Option("--hub-repo", help="the model's hub repo, for models:")
    ] = None,
    language: Annotated[str | None, typer.Option("--language", help="ISO code, e.g. ko")] = None,
    licence: Annotated[str | None, typer.Option("--license", help="default: the base model's")] = None,
    force: ExportForce = False,
) -> None:
    """A Gradio Space folder: README front matter, app.py without aiforge, pinned requirements, the model."""
    from aiforge.export.space import export_space

    written = export_space(ref, out_dir, hub_repo=hub_repo, language=language, licence=licence, force=force)
    out.print(f"wrote {written['folder']}: {', '.join(written['files'])}", highlight=False)


@export_app.command("docker")
@friendly
def export_docker_command(
    ref: ExportRef,
    out_dir: ExportOut,
    name: Annotated[str | None, typer.Option("--name", help="served name: /v1/models/NAME/predict")] = None,
    force: ExportForce = False,
) -> None:
    """A container build context: Dockerfile, serve.yaml, .dockerignore, pinned requirements, the model."""
    from aiforge.export.docker import export_docker

    written = export_docker(ref, out_dir, name=name, force=force)
    out.print(f"wrote {written['folder']}: {', '.join(written['files'])}", highlight=False)
    out.print(f"build: docker build -t {written['name']} {written['folder']}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
