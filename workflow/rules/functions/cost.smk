# Helpers of the cost rules (workflow/rules/cost.smk): paths, job settings, study targets.
def cost_targets(study):
    return [f"{REPORTS}/{study}/tables/cost.csv", f"{REPORTS}/{study}/tables/cost.tex"]


def cost_model_args(wildcards, input):
    groups = zip(input.settings, input.metrics, input.train_bench, input.eval_bench)
    return " ".join("--model " + " ".join(group) for group in groups)


STUDY_TARGETS.append(cost_targets)
