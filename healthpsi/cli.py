"""The `healthpsi` entry point: registers each command module."""

from __future__ import annotations

import typer

from healthpsi import (
    audit,
    bench,
    coordinator,
    cotravel,
    keys,
    node,
    operator,
    reference,
    run,
    serve,
    simulate,
    verify,
)
from healthpsi import policy as policy_commands
from runner import allocator

app = typer.Typer(
    help="healthpsi: privacy-preserving federated matching for epidemic health codes.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
)


@app.callback()
def _main() -> None:
    """healthpsi: privacy-preserving federated matching for epidemic health codes."""
    allocator.tune()


app.command("simulate")(simulate.simulate)
app.add_typer(keys.app, name="keys")
app.add_typer(node.app, name="node")
app.add_typer(coordinator.app, name="coordinator")
app.command("run")(run.run)
app.command("reference")(reference.reference)
app.command("verify")(verify.verify)
app.command("serve")(serve.serve)
app.add_typer(cotravel.app, name="cotravel")
app.add_typer(operator.app, name="operator")
app.add_typer(audit.app, name="audit")
app.add_typer(bench.app, name="bench")
app.add_typer(policy_commands.app, name="policy")

if __name__ == "__main__":
    app()
