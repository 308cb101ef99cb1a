# Helpers of the cost rules (workflow/rules/cost.smk): paths, job settings, study targets.
def cost_targets(study):
    return [f"{REPORTS}/{study}/tables/cost.csv", f"{REPORTS}/{study}/tables/cost.tex"]


def cost_model_args(wildcards, input):
    """`--model SETTINGS METRICS TRAIN_BENCH EVAL_BENCH` per model, as a list of words for `{params.models:q}`."""
    groups = zip(input.settings, input.metrics, input.train_bench, input.eval_bench)
    return [word for group in groups for word in ("--model", *group)]


STUDY_TARGETS.append(cost_targets)
