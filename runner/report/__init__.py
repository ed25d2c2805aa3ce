"""qrun-report and the sweep summary: runs read back from MLflow (data), one column table built from
the metric catalog (columns), the summary text, the recommendation and the plots."""


def main(argv=None) -> int:
    """Kept for `qrun-report` scripts installed before the entry point moved to runner.report.cli:main."""
    from runner.report.cli import main as cli_main

    return cli_main(argv)
