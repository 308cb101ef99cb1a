"""The analysis stage: the paper's Eq. 4 quantities (logit gap over gradient gap) per model.

`eq4` computes them and the activations for the figures; `settings` holds the stage's version and
batch size (torch-free, read by the rules).
"""
