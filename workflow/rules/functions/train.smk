# Helpers of the train rules (workflow/rules/train.smk): paths, job settings, study targets.
def train_settings(wildcards):
    return as_json(sscfg.resolve_model(config, wildcards.study, wildcards.model))


def train_targets(study):
    return [checkpoint_file(study, m) for m in model_ids(study)]


STUDY_TARGETS.append(train_targets)
