"""``dp`` plugin: differentially private training of the discriminator (DP-SGD), its privacy accountant
and the original SpineGAN mechanism as a labelled, non-private ablation.

The engine lives in :mod:`plugins.dp.tape` and :mod:`plugins.dp.per_example` (per-example clipped
gradients), :mod:`plugins.dp.mechanism` (the discriminator's private gradient), :mod:`plugins.dp.accounting`
(epsilon and noise calibration) and :mod:`plugins.dp.legacy` (the ablation); see ``docs/privacy.md``.
"""
