"""Run nurture from a checkout: `python cli.py …` is the same as `nurture …`."""

from nurture.cli import main

if __name__ == "__main__":
    main()
