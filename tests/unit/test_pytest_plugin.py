"""The installed pytest plugin (entry point pytest11 → quantrack.testing) and its fixtures."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

pytest_plugins = ["pytester"]


def test_plugin_is_registered_as_an_entry_point() -> None:
    """The package declares quantrack.testing as a pytest11 plugin."""
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("quantrack") == "quantrack.testing"


def test_fixtures_hand_out_working_in_memory_adapters(pytester: pytest.Pytester) -> None:
    """A user's test gets working tracker, store and observer fixtures without any conftest."""
    pytester.makepyfile(
        test_user_app="""
        from quantrack import ExperimentDefinition, ExperimentStatus, ExperimentTracker
        from quantrack.domain import Batch
        from quantrack.domain.lifecycle import finish_batch, start_batch
        from quantrack.services.recording import track


        def my_app(tracker: ExperimentTracker) -> str:
            run = tracker.create_experiment(ExperimentDefinition(name="app"))
            tracker.update_status(run.id, ExperimentStatus.RUNNING)
            tracker.update_status(run.id, ExperimentStatus.COMPLETED)
            return run.id


        def test_tracker(experiment_tracker):
            run_id = my_app(experiment_tracker)
            assert experiment_tracker.get_experiment(run_id).status == "completed"


        def test_store_and_track(experiment_tracker, artifact_store):
            with track(experiment_tracker, artifact_store, ExperimentDefinition(name="t")) as run:
                ref = run.log_artifact(b"hello", kind="notes")
            assert artifact_store.get(ref.id) == b"hello"
            assert experiment_tracker.get_experiment(run.id).artifacts == (ref,)


        def test_observer(batch_observer):
            batch = start_batch(Batch(name="b", total=0))
            batch_observer.on_batch_started(batch)
            batch_observer.on_batch_finished(finish_batch(batch))
            assert batch_observer.get_batch(batch.id).status == "completed"


        def test_workspace_shares_the_fixtures(quantrack_workspace, experiment_tracker):
            with quantrack_workspace.track("cell", params={"lookback": 20}) as run:
                run.log_metric("hit_rate", 0.55)
            stored = experiment_tracker.get_experiment(run.id)
            assert stored.metrics == {"hit_rate": 0.55}
            assert quantrack_workspace.tracker is experiment_tracker


        def test_each_test_gets_a_fresh_tracker_1(experiment_tracker):
            my_app(experiment_tracker)
            assert len(experiment_tracker.list_experiments()) == 1


        def test_each_test_gets_a_fresh_tracker_2(experiment_tracker):
            my_app(experiment_tracker)
            assert len(experiment_tracker.list_experiments()) == 1
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=6)


def test_fixtures_are_listed(pytester: pytest.Pytester) -> None:
    """`pytest --fixtures` shows the plugin's fixtures with their docstrings."""
    pytester.makepyfile(test_empty="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(
        [
            "*experiment_tracker*",
            "*A fresh in-memory experiment tracker.*",
        ]
    )
    for name in ("artifact_store", "batch_observer", "quantrack_workspace"):
        assert name in result.stdout.str()
