"""Evidence that survives a second look: per-image results, intervals and paired comparisons.

Torch-free (numpy and scipy.stats only), so tables, the audit table and the claims ledger can
read records without importing torch.

- `per_image`: which attacked images a model got right, one bit per image, checksummed, kept
  inside every evaluation and audit record.
- `intervals`: Wilson intervals over the attacked images, paired comparisons of two models (or
  two attacks) on the same images (McNemar's exact test on the discordant pairs), a three-way
  decision against a threshold ("raised", "not raised", "within noise"), and summaries over seeds.
"""
