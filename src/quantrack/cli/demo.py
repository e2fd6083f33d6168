"""``quantrack demo``: backtest the bundled sample data and record everything.

One backtrader run (an SMA crossover on symbol AAA) and one vectorbt sweep (a grid of
fast × slow moving-average windows over every bundled symbol, at least 100 runs) are
recorded in the workspace; the best runs are printed and an HTML report is written. The
sample data is synthetic (see :mod:`quantrack.sample_data`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from quantrack.cli._options import JsonOption, WorkspaceOption
from quantrack.cli._output import console, emit_json, experiment_json
from quantrack.cli._state import open_for, state_of
from quantrack.domain import ExperimentFilter, ExperimentStatus
from quantrack.workspace import Workspace

__all__ = ["FAST_WINDOWS", "SLOW_WINDOWS", "demo_command", "run_backtrader", "run_vectorbt"]

FAST_WINDOWS = (5, 10, 15, 20, 25)
SLOW_WINDOWS = (30, 40, 50, 60, 80, 100, 120, 150, 180, 200)
_BT_SYMBOL = "AAA"


def run_backtrader(ws: Workspace) -> str:
    """Backtest the SMA crossover on the sample symbol with backtrader; return the run id."""
    try:
        import backtrader as bt
    except ImportError as exc:
        from quantrack.domain import EngineNotInstalled

        raise EngineNotInstalled("backtrader", "backtrader") from exc
    from quantrack.cli._demo_strategy import SmaCross
    from quantrack.engines.backtrader import BacktraderAdapter
    from quantrack.sample_data import load_sample

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=load_sample(_BT_SYMBOL)), name=_BT_SYMBOL)
    cerebro.addstrategy(SmaCross, fast=10, slow=30)
    cerebro.broker.setcash(100_000.0)
    cerebro.broker.setcommission(commission=0.001)
    cerebro.addsizer(bt.sizers.PercentSizer, percents=95)
    BacktraderAdapter(ws).run(
        cerebro, name="demo sma-cross AAA", tags=("demo",), params={"symbol": _BT_SYMBOL}
    )
    [run] = ws.tracker.list_experiments(
        ExperimentFilter(name="demo sma-cross AAA", engine="backtrader", limit=1)
    )
    return run.id


def run_vectorbt(ws: Workspace) -> str:
    """Sweep fast × slow moving-average windows over every sample symbol with vectorbt;
    return the batch id.
    """
    try:
        import vectorbt as vbt
    except ImportError as exc:
        from quantrack.domain import EngineNotInstalled

        raise EngineNotInstalled("vectorbt", "vectorbt") from exc
    from quantrack.engines.vectorbt import VectorbtAdapter
    from quantrack.sample_data import load_sample_prices

    close = load_sample_prices("close")
    pairs = [(f, s) for f in FAST_WINDOWS for s in SLOW_WINDOWS]
    fast = vbt.MA.run(close, window=[f for f, _ in pairs], short_name="fast")
    slow = vbt.MA.run(close, window=[s for _, s in pairs], short_name="slow")
    portfolio = vbt.Portfolio.from_signals(
        close,
        fast.ma_crossed_above(slow),
        fast.ma_crossed_below(slow),
        fees=0.001,
        init_cash=100_000.0,
        freq="1D",
    )
    result: Any = VectorbtAdapter(ws).record(
        portfolio,
        name="demo ma-grid",
        strategy="ma-crossover",
        inputs={"close": close},
        tags=("demo",),
    )
    if result.batch_id is None:
        raise RuntimeError("the vectorbt sweep was not recorded as a batch")
    return str(result.batch_id)


def demo_command(
    ctx: typer.Context,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the HTML report.")
    ] = Path("quantrack-demo.html"),
    top: Annotated[int, typer.Option(min=1, help="How many best runs to print.")] = 5,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Backtest the bundled (synthetic) sample data with backtrader and a vectorbt grid
    sweep, record everything, print the best runs and write an HTML report.
    """
    from quantrack.cli.runs import print_ranked
    from quantrack.reports import collect_report_data, write_report

    ws = open_for(ctx, workspace, create=True)
    quiet = as_json or state_of(ctx).json
    say = console(stderr=True)
    if not quiet:
        say.print("backtrader: SMA crossover on AAA ...")
    bt_id = run_backtrader(ws)
    if not quiet:
        say.print(f"vectorbt: {len(FAST_WINDOWS) * len(SLOW_WINDOWS) * 4}-run grid sweep ...")
    batch_id = run_vectorbt(ws)
    best = ws.tracker.list_experiments(
        ExperimentFilter(
            batch_id=batch_id,
            status=frozenset({ExperimentStatus.COMPLETED}),
            order_by="sharpe",
            limit=top,
        )
    )
    bt_run = ws.tracker.get_experiment(bt_id)
    batch = ws.observer.get_batch(batch_id)
    data = collect_report_data(ws, [bt_run], [batch], metric="sharpe", top=top)
    path = write_report(data, output)
    if quiet:
        emit_json(
            {
                "backtrader_run": experiment_json(bt_run),
                "batch": batch.model_dump(mode="json"),
                "best": [experiment_json(e) for e in best],
                "report": str(path),
                "workspace": str(ws.path) if ws.path else None,
            }
        )
        return
    out = console()
    sharpe = bt_run.metrics.get("sharpe")
    # The id on a line of its own keeps every line inside an 80-column terminal.
    out.print(f"backtrader run {bt_run.id}")
    out.print(
        f"  final value {bt_run.metrics.get('final_value', float('nan')):,.0f}"
        + (f", sharpe {sharpe:.2f}" if sharpe is not None else "")
    )
    out.print(f"vectorbt batch {batch.id}: {batch.succeeded}/{batch.total} runs {batch.status}")
    out.print(f"best {len(best)} runs of the sweep by sharpe:")
    print_ranked(best, "sharpe")
    out.print(f"report: {path}")
    out.print(f"next: quantrack runs show {best[0].id if best else bt_run.id}")
    out.print(f"      quantrack report {batch.id} -o sweep.html")
