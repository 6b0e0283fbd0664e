"""`healthpsi policy`: what-if evaluation of colour policies on simulated runs' features and ground truth."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from coordinator.applicants import load_symptoms
from coordinator.features import compute_features
from coordinator.policy import DEFAULT_POLICY, Policy, PolicyError
from coordinator.risk import load_health
from simulation.evaluation import RunTruth, pareto_best, plot_tradeoff, policy_metrics, summarise
from simulation.reference import load_scenario, reference_matches

app = typer.Typer(
    help="Policies: compare colour rules on a run's features against the simulation's truth.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
RUN_FILES = ("scenario.json", "coordinator/features.parquet", "truth/infections.parquet")
SIMULATION_FILES = ("scenario.json", "truth/infections.parquet", "health/cases.parquet")
COLUMNS = (
    ("red", "red", "{:,.0f}"),
    ("yellow", "yellow", "{:,.0f}"),
    ("sensitivity", "sensitivity", "{:.1%}"),
    ("contact_sensitivity", "contacts' sens.", "{:.1%}"),
    ("specificity", "specificity", "{:.2%}"),
    ("quarantine_days_uninfected", "q-days uninfected", "{:,.0f}"),
    ("quarantine_days_infected", "q-days infected", "{:,.0f}"),
    ("infected_per_1000_days", "caught / 1,000 q-days", "{:.2f}"),
)
REASON_COLUMNS = (
    ("subjects", "subjects", "{:,.0f}"),
    ("infected", "infected", "{:,.0f}"),
    ("quarantine_days_uninfected", "q-days uninfected", "{:,.0f}"),
    ("quarantine_days_infected", "q-days infected", "{:,.0f}"),
    ("infected_per_1000_days", "caught / 1,000 q-days", "{:.2f}"),
)
RUN_OPTION = typer.Option(
    ..., "--run", help="RUN directory after `healthpsi run` (repeat for several seeds).", show_default=False
)
JSON_OPTION = typer.Option(False, "--json", help="Print the figures as JSON instead of tables.")
PLAINTEXT_OPTION = typer.Option(
    False,
    "--plaintext",
    help="Features from the plaintext oracle's matches, so a simulated run needs no private epoch (equal to "
    "a private run's: every run checks its matches equal the oracle's).",
)


def plaintext_features(run: Path) -> pd.DataFrame:
    """A simulated run's features computed as the coordinator's epoch does, from the plaintext oracle's
    matches of its epoch and the applicants' declared symptoms (writes RUN/reference/matches.parquet)."""
    health = load_health(run)
    symptoms = load_symptoms(run, load_scenario(run).as_of)
    return compute_features(reference_matches(run), health.cases, health.risk_regions, symptoms)


def load_runs(runs: list[Path], plaintext: bool = False) -> list[RunTruth]:
    """Each run's features (the private epoch's, or with `plaintext` the oracle's) and truth; BadParameter
    (--run) naming a missing or unreadable file."""
    loaded = []
    for run in runs:
        needed = SIMULATION_FILES if plaintext else RUN_FILES
        missing = [name for name in needed if not (run / name).is_file()]
        if missing:
            hint = "" if plaintext else " (run `healthpsi run`, or give --plaintext for a simulated run)"
            raise typer.BadParameter(f"{run}: missing {', '.join(missing)}{hint}", param_hint="--run")
        try:
            loaded.append(RunTruth.load(run, plaintext_features(run) if plaintext else None))
        except (OSError, ValueError, KeyError) as exc:  # the oracle's and load_health's errors too
            raise typer.BadParameter(f"{run}: {exc}", param_hint="--run") from None
    return loaded


def load_policy(path: Path | None) -> Policy:
    """A policy file (the default policy when None); BadParameter (--policy) when unusable."""
    try:
        return Policy.load(path)
    except PolicyError as exc:
        raise typer.BadParameter(str(exc), param_hint="--policy") from None


def parse_range(text: str, option: str) -> list[int]:
    """`A..B` (inclusive), `A,B,C` or `A` as a list of integers ≥ 0; BadParameter naming `option`."""
    try:
        if ".." in text:
            low, high = (int(part) for part in text.split("..", 1))
            values = list(range(low, high + 1))
        else:
            values = [int(part) for part in text.split(",")]
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: expected A..B, A,B,C or A (integers)", param_hint=option
        ) from None
    if not values or min(values) < 0:
        raise typer.BadParameter(f"{text!r}: expected a non-empty range of integers ≥ 0", param_hint=option)
    return values


def evaluate_policy(label: str, policy: Policy, truths: list[RunTruth]) -> dict[str, Any]:
    """A policy's metrics on each run, and their median and range over the runs."""
    per_run = [
        {
            "run": str(t.run_dir),
            "issued_on": t.issued_on.isoformat(),
            **policy_metrics(t, policy.assess_frame(t.features, t.issued_on)),
        }
        for t in truths
    ]
    return {"policy": label, "version": policy.version, "runs": per_run, "summary": summarise(per_run)}


def _cell(summary: dict[str, Any] | None, fmt: str, runs: int) -> str:
    if summary is None:
        return "n/a"
    median = fmt.format(summary["median"])
    if runs == 1:
        return median
    return f"{median} ({fmt.format(summary['min'])}–{fmt.format(summary['max'])})"


def results_table(results: list[dict[str, Any]], title: str, pareto: list[bool] | None = None) -> Table:
    """One row per policy: colours, sensitivity, specificity, quarantine burden (median (range) over runs)."""
    table = Table(title=title)
    table.add_column("policy")
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    if pareto is not None:
        table.add_column("Pareto-best", justify="center")
    for i, result in enumerate(results):
        runs, summary = len(result["runs"]), result["summary"]
        cells = [_cell(summary.get(key), fmt, runs) for key, _, fmt in COLUMNS]
        mark = [] if pareto is None else ["★" if pareto[i] else ""]
        table.add_row(result["policy"], *cells, *mark)
    return table


def reasons_table(result: dict[str, Any]) -> Table:
    """One row per reason code of a policy (a subject with several reasons counts under each)."""
    table = Table(title=f"by reason — {result['policy']}")
    table.add_column("reason")
    for _, header, _ in REASON_COLUMNS:
        table.add_column(header, justify="right")
    runs = len(result["runs"])
    for reason, summary in (result["summary"].get("per_reason") or {}).items():
        table.add_row(reason, *(_cell(summary.get(key), fmt, runs) for key, _, fmt in REASON_COLUMNS))
    return table


@app.command("evaluate")
def evaluate(
    run: list[Path] = RUN_OPTION,
    policy: list[Path] = typer.Option(
        [], "--policy", help="Policy TOML file (repeat to compare; default: the default policy)."
    ),
    as_json: bool = JSON_OPTION,
    plaintext: bool = PLAINTEXT_OPTION,
) -> None:
    """Compare colour policies on runs' features against the simulation's ground truth.

    Reads RUN/coordinator/features.parquet and RUN/truth/infections.parquet (never the nodes again) and
    assesses every subject as the epoch does on the morning after the window. Per policy: codes by colour,
    sensitivity (infected people coded red or yellow), specificity (uninfected people left green),
    quarantine person-days imposed on uninfected and on infected people, infected people caught per 1,000
    quarantine person-days, and the same per reason code. Several --run: median (min–max).

    [bold]Example:[/bold]

    [cyan]healthpsi policy evaluate --run runs/demo[/cyan]

    [cyan]healthpsi policy evaluate --run runs/demo --policy coordinator/policies/2020.toml --json[/cyan]

    [cyan]healthpsi policy evaluate --run runs/demo --plaintext[/cyan]
    """
    truths = load_runs(run, plaintext)
    policies = [(str(p), load_policy(p)) for p in policy] or [(str(DEFAULT_POLICY), load_policy(None))]
    results = [evaluate_policy(label, p, truths) for label, p in policies]
    if as_json:
        print(json.dumps({"runs": [str(t.run_dir) for t in truths], "policies": results}, indent=2))
        return
    console = Console()
    console.print(results_table(results, f"policies on {len(truths)} run(s)"))
    for result in results:
        console.print(reasons_table(result))


@app.command("sweep")
def sweep(
    run: list[Path] = RUN_OPTION,
    policy: Path | None = typer.Option(
        None, "--policy", help="Policy to vary (default: the default policy)."
    ),
    rule: list[str] = typer.Option(..., "--rule", help="Reason code of the rule(s) to vary (once or twice)."),
    min_: list[str] = typer.Option(
        [], "--min", help="Thresholds for each --rule, in --rule order: A..B, A,B,C or A."
    ),
    quarantine: list[str] = typer.Option(
        [], "--quarantine-days", help="Quarantine days for each --rule, in --rule order: A..B, A,B,C or A."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the trade-off curve here (PNG)."),
    as_json: bool = JSON_OPTION,
    plaintext: bool = PLAINTEXT_OPTION,
) -> None:
    """Evaluate a policy with one or two rules varied over a grid, and mark the Pareto-best variants.

    Each variant is the policy with its --rule's threshold (--min) and/or quarantine (--quarantine-days)
    set to one value of the grid (two --rule: every combination). Cost: quarantine person-days imposed on
    uninfected people; gain: sensitivity (medians over the runs). --out draws the ROC-like curve.

    [bold]Example:[/bold]

    [cyan]healthpsi policy sweep --run runs/demo --rule LONG_CELL_HOURS --min 2..8 --out sweep.png[/cyan]

    [cyan]healthpsi policy sweep --run runs/demo --rule LONG_CELL_HOURS --quarantine-days 9..14[/cyan]
    """
    if not 1 <= len(rule) <= 2:
        raise typer.BadParameter("give one or two rules", param_hint="--rule")
    grids: list[list[tuple[str, str, int]]] = []
    for option, field, texts in (
        ("--min", "min", min_),
        ("--quarantine-days", "quarantine_days", quarantine),
    ):
        if texts and len(texts) != len(rule):
            raise typer.BadParameter(f"give {option} once for each --rule ({len(rule)})", param_hint=option)
        grids += [[(r, field, v) for v in parse_range(t, option)] for r, t in zip(rule, texts, strict=False)]
    if not grids:
        raise typer.BadParameter("give --min and/or --quarantine-days to vary", param_hint="--min")
    if out is not None and out.suffix.lower() != ".png":
        raise typer.BadParameter(f"{out}: expected a .png file", param_hint="--out")
    base = load_policy(policy)
    variants = []
    try:
        for combo in itertools.product(*grids):
            varied, label = base, []
            for reason, field, value in combo:
                varied = varied.varied(reason, **{field: value})
                label.append(f"{reason}.{field}={value}")
            variants.append((" ".join(label), varied))
    except PolicyError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rule") from None
    truths = load_runs(run, plaintext)
    results = [evaluate_policy(label, p, truths) for label, p in variants]
    costs = [r["summary"]["quarantine_days_uninfected"]["median"] for r in results]
    gains = [(r["summary"]["sensitivity"] or {"median": 0.0})["median"] for r in results]
    best = pareto_best(costs, gains)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        title = f"{base.version}: {', '.join(rule)} varied, {len(truths)} run(s) (medians)"
        out.write_bytes(plot_tradeoff([r["policy"] for r in results], costs, gains, title))
    if as_json:
        for result, is_best in zip(results, best, strict=True):
            result["pareto_best"] = is_best
        print(json.dumps({"runs": [str(t.run_dir) for t in truths], "variants": results}, indent=2))
        return
    console = Console()
    console.print(results_table(results, f"{base.version} varied on {len(truths)} run(s)", best))
    if out is not None:
        console.print(f"Trade-off curve: [bold]{out}[/bold]")
