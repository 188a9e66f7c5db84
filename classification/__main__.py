"""``python -m classification train | import | info | evaluate`` (see docs/classification.md)."""

from classification.cli import main

if __name__ == "__main__":
    main()
