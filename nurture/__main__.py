"""`python -m nurture …` is the same as `nurture …`."""

from nurture.cli import main

main()
