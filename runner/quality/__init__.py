"""Quality measurement shared by the stages: the eval token stream, the baseline's reference, the scoring math,
the bootstrap over windows."""
