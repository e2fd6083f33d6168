"""The quantrack command line (built on the workspace)."""


def main() -> None:
    """Run the command line."""
