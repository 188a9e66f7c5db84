"""Train a (conditional) StyleGAN2-ADA: ``python train.py --outdir runs --data images.zip --cond=1 ...``.

A thin front over :mod:`stylegan2_ada.training` (options, loop, snapshots); see ``docs/training.md``.
Multi-GPU / multi-node: ``torchrun --nproc_per_node=N train.py --gpus=N ...``.
"""

from stylegan2_ada.training.cli import main

if __name__ == "__main__":
    main()
