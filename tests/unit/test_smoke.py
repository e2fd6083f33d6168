from quantrack import ExperimentDefinition, ExperimentStatus


def test_definition_hashes_params() -> None:
    """A definition derives its config hash from its params."""
    d = ExperimentDefinition(name="x", params={"a": 1})
    assert len(d.config_hash) == 64
    assert ExperimentStatus.PENDING == "pending"
