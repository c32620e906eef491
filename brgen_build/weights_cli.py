"""`brgen weights list | check | fetch`: what each method's weights are, whether they are on disk and intact."""

from __future__ import annotations

import json
import sys

import click

from inpainters import weights as registry
from inpainters.fetch import fetch_component


def _selected_methods(methods: tuple[str, ...]) -> list[str]:
    known = list(registry.load_registry())
    for method in methods:
        if method not in known:
            raise click.BadParameter(f"{method!r} has no weights in {registry.registry_path()}; methods with weights: {', '.join(known)}", param_hint="METHOD")
    return list(methods) or known


@click.group(name="weights")
def weights_group() -> None:
    """List, check and fetch model weights (the registry is manifests/weights.yaml).

    Weights live in one folder: $BRGEN_WEIGHTS_DIR, default $HF_HOME/brgen (~/.cache/huggingface/brgen).
    Only `brgen weights fetch` downloads; every other command works offline.

    \b
    Example:
      brgen weights fetch lama && brgen weights check lama
    """


@weights_group.command(name="list")
@click.argument("methods", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per component instead of the table.")
def list_command(methods: tuple[str, ...], as_json: bool) -> None:
    """Show each method's weight components, whether they are present, and where.

    A component is looked for at its environment variable's path when that is set, else in the weights folder.

    \b
    Example:
      brgen weights list mat
    """
    root = registry.weights_dir()
    if not as_json:
        click.echo(f"weights folder: {root} (set BRGEN_WEIGHTS_DIR to change it)")
    for method in _selected_methods(methods):
        if not as_json:
            click.echo(method)
        for entry in registry.components(method).values():
            path, label = registry.locate(entry)
            missing = entry.missing_files(path)
            state = "present" if not missing else "missing"
            if as_json:
                click.echo(json.dumps({
                    "method": method, "component": entry.name, "state": state, "path": str(path), "found_by": label, "env": entry.env,
                    "missing": missing, "source": entry.where_from(), "licence": entry.licence, "origin": entry.origin,
                    "optional": entry.optional, "description": entry.description, "size": entry.size,
                }))
                continue
            optional = ", optional" if entry.optional else ""
            click.echo(f"  {entry.name:<14} {state:<8} {path}")
            click.echo(f"  {'':<14} {entry.description} ({entry.licence}{optional})")
            if missing:
                click.echo(f"  {'':<14} missing: {', '.join(missing)}; {registry.missing_advice(entry, label)}")


@weights_group.command(name="check")
@click.argument("methods", nargs=-1)
def check_command(methods: tuple[str, ...]) -> None:
    """Verify the hashes of the weights on disk against the registry and the recorded Hub hashes.

    Exits with 1 when a file differs, or when a component of a METHOD named on the command line is missing
    (optional components excepted). Large pipelines take a while to hash.

    \b
    Example:
      brgen weights check lama mat
    """
    failed = False
    for method in _selected_methods(methods):
        for entry in registry.components(method).values():
            path, _ = registry.locate(entry)
            result = registry.verify(entry, path)
            click.echo(f"{method}.{entry.name}: {result.status} ({path})")
            for line in result.details:
                click.echo(f"  {line}")
            if result.status == "mismatch" or (result.status == "missing" and methods and not entry.optional):
                failed = True
    if failed:
        sys.exit(1)


@weights_group.command(name="fetch")
@click.argument("method")
@click.option("--component", "names", multiple=True, help="Fetch only this component (repeatable). Default: every component that is not optional.")
@click.option("--no-progress", is_flag=True, help="Hide download progress bars.")
def fetch_command(method: str, names: tuple[str, ...], no_progress: bool) -> None:
    """Download a method's weights into the weights folder and verify their hashes.

    Files resume where an interrupted download stopped. Components without a direct download are listed with
    the page to get them from and the folder to put them in, and the command then exits with 1.

    \b
    Example:
      brgen weights fetch mat
    """
    _selected_methods((method,))
    entries = registry.components(method)
    unknown = [name for name in names if name not in entries]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)}: not a component of {method}; components: {', '.join(entries)}", param_hint="--component")
    selected = [entries[name] for name in names] if names else [entry for entry in entries.values() if not entry.optional]
    root = registry.weights_dir()
    manual = []
    for entry in selected:
        result = fetch_component(entry, root, progress=not no_progress)
        _warn_when_overridden(entry)
        if result.action == "manual":
            manual.append(result)
            continue
        click.echo(f"{method}.{entry.name}: {result.action} {result.path}")
    for result in manual:
        entry = result.component
        target = f"save it as {result.path}" if entry.single_file else f"put its files ({', '.join(entry.required)}) in {result.path}"
        click.echo(f"{method}.{entry.name}: no direct download. Get {entry.description} from {entry.manual} and {target}", err=True)
    if manual:
        sys.exit(1)


def _warn_when_overridden(entry: registry.Component) -> None:
    # Methods load the variable's path before the weights folder, so a fetch alone changes nothing for them.
    path, found_by = registry.locate(entry)
    if found_by != registry.WEIGHTS_FOLDER:
        click.echo(
            f"{entry.method}.{entry.name}: {found_by} is set to {path}, and methods load that path before the weights "
            f"folder; unset it to use the fetched file",
            err=True,
        )
