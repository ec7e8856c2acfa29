"""`pulumi up --stack <env>`: the program lives in components/program.py (tests call it under mocks)."""

from components.program import main

main()
