"""``python -m data_processing convert --dicom DIR --labels CSV --outdir DATASET ...`` (see docs/dicom.md)."""

from data_processing.cli import main

if __name__ == "__main__":
    main()
