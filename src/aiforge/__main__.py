from aiforge.cli import main

main()
