#!/usr/bin/env python
"""The end-to-end demo on phantom data the project makes itself, DICOM to ``report.html``:
``python demo.py --outdir runs/demo [--preset ci|full|gpu]``. A thin front over :mod:`showcase`
(stages, presets, report); see docs/demo.md.
"""

from showcase.cli import main

if __name__ == "__main__":
    main()
