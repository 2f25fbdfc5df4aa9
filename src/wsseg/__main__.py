"""``python -m wsseg`` (also what ``torchrun -m wsseg`` starts)."""

from wsseg.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
