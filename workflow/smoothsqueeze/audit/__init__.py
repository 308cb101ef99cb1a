"""The audit stage: is a model's robustness real, or gradient masking?

`model_audit` attacks one model with AutoAttack, PGD with restarts, a step sweep and a large eps and
writes its record; `flags` turns a record into the sanity flags (claimed accuracy overstated, more
steps or a larger eps still failing, ...); `settings` resolves a study's audit budgets (torch-free,
read by the rules and the projection); `table` aggregates a study's records into its audit table.
"""
