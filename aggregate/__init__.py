"""`python -m aggregate`: influences from a sweep store; `python -m aggregate.report`: the report.

Thin Hydra apps over datatransfer.influence and datatransfer.report (config: conf/aggregate.yaml)."""
